# extregs: the two commands a user needs.
#
#   make run    boot the kernel (demo mode) under QEMU with PKS on
#   make test   lint, host unit tests, QEMU tests (a short fuzz campaign
#               among them), Linux's x86 selftests on the kernel, and both
#               proofs by mutation
#
# Both install what is missing first: the pinned nightly (rust-toolchain.toml)
# and QEMU + OVMF + binutils + gdb (Debian packages); `make test` also
# musl-tools, linux-libc-dev and linux-source-6.1. Nothing else needs to be
# set up by hand.

SHELL := /bin/bash
CARGO ?= cargo
TOOLCHAIN := $(shell sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
RUN_ARGS ?=
# CPUs `make run` boots (QEMU's -smp): every AP comes online (docs/smp.md).
SMP ?= 2

.PHONY: run test setup toolchain qemu linux-deps host-tests miri qemu-tests mutants fuzz-faults lint linux-selftests

run: setup
	$(CARGO) run --quiet -- run --smp $(SMP) $(RUN_ARGS)

test: setup lint host-tests miri qemu-tests linux-selftests mutants fuzz-faults

setup: toolchain qemu

# The toolchain file names the channel, components and target; install them
# when any is missing (RUSTUP_AUTO_INSTALL may be off).
toolchain:
	@command -v rustup >/dev/null || { echo "make: rustup is required to install $(TOOLCHAIN)" >&2; exit 2; }
	@if rustup run $(TOOLCHAIN) rustc --version >/dev/null 2>&1 \
	    && rustup component list --installed --toolchain $(TOOLCHAIN) | grep -q '^rust-src' \
	    && rustup component list --installed --toolchain $(TOOLCHAIN) | grep -q '^llvm-tools' \
	    && rustup component list --installed --toolchain $(TOOLCHAIN) | grep -q '^clippy' \
	    && rustup component list --installed --toolchain $(TOOLCHAIN) | grep -q '^rustfmt' \
	    && rustup component list --installed --toolchain $(TOOLCHAIN) | grep -q '^miri' \
	    && rustup target list --installed --toolchain $(TOOLCHAIN) | grep -q '^x86_64-unknown-none'; then \
	    echo "make: toolchain $(TOOLCHAIN) present"; \
	else \
	    rustup toolchain install $(TOOLCHAIN) --profile minimal \
	        --component rust-src --component llvm-tools --component rustfmt --component clippy \
	        --component miri \
	        --target x86_64-unknown-none; \
	fi

# QEMU and OVMF (for --firmware uefi) from Debian's packages, binutils'
# addr2line and gdb (QEMU tests decode a call trace with the one and walk a
# backtrace through the entry stubs with the other).
qemu:
	@if command -v qemu-system-x86_64 >/dev/null && [ -f /usr/share/ovmf/OVMF.fd ] \
	    && command -v addr2line >/dev/null && command -v gdb >/dev/null; then \
	    echo "make: $$(qemu-system-x86_64 --version | head -n1), OVMF, addr2line and gdb present"; \
	else \
	    SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends qemu-system-x86 ovmf binutils gdb; \
	fi

# Formatting and clippy, warnings as errors, on the host crates and on the
# kernel for its own target; an `unsafe` block without a `// SAFETY:`
# comment is an error too.
CLIPPY_DENY := -D warnings -D clippy::undocumented_unsafe_blocks
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --quiet --all-targets -- $(CLIPPY_DENY)
	$(CARGO) clippy --quiet -p extregs-kernel -p extregs-entry-asm --target x86_64-unknown-none -- $(CLIPPY_DENY)

# The host unit tests, and the kernel's layering (tests/layers.rs reads the
# kernel's sources; it boots nothing).
host-tests:
	$(CARGO) test --lib --bins --test layers

# Miri over the unsafe host code. The container_of step in
# ExtendedPtRegs::from_regs leaves the referent of the `&mut PtRegs` it is
# given, which Stacked Borrows (Miri's default) reports as UB and Tree
# Borrows allows (see its # Safety section): regs and entry run under Tree
# Borrows, the command-line parser under the default model. proptest needs
# the host's clock and a small case count under Miri.
MIRI_PROPTEST := PROPTEST_CASES=16
miri:
	MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-disable-isolation" $(MIRI_PROPTEST) \
	    $(CARGO) miri test -p extregs-regs -p extregs-entry
	MIRIFLAGS="-Zmiri-disable-isolation" $(MIRI_PROPTEST) $(CARGO) miri test -p extregs-cmdline

# What the Linux-ABI tests build with: musl-gcc (musl-tools), the kernel's
# UAPI headers (linux-libc-dev) and Linux's sources for its selftests
# (linux-source-6.1), from Debian's packages when missing.
linux-deps:
	scripts/linux-selftests.sh --deps-only

qemu-tests: linux-deps
	$(CARGO) test --test qemu

# Linux's own x86 entry selftests, unmodified, built with musl at test
# time and run under `extregs exec` (see scripts/linux-selftests.sh).
linux-selftests: linux-deps
	scripts/linux-selftests.sh

# Proof by mutation: break the entry path on purpose and require the
# selftests to catch it (see scripts/mutants.sh).
mutants:
	scripts/mutants.sh

# Proof by mutation for the fuzzer: a fault-injection build, one short seed
# per named fault, each must be reported (see scripts/fuzz-faults.sh).
fuzz-faults:
	scripts/fuzz-faults.sh
