#!/usr/bin/env bash
# Linux's own x86 entry selftests (tools/testing/selftests/x86), unmodified,
# on extregs: `make linux-selftests`.
#
# The sources are GPL-2.0, so none is in this repository: they come from
# Debian's linux-source-6.1 package at test time (installed with apt when
# missing, with musl-tools and linux-libc-dev), and only the selftest files
# are extracted. Each 64-bit program is built statically with musl, as the
# selftests' Makefile builds it (its flags, plus -static), and run under
# `extregs exec`. One line per program, then "N passed, N failed".
#
# A program passes when it exits 0 and prints no "[FAIL]". The REQUIRED
# ones must pass, on -cpu max, again under an NMI storm, and again on two
# CPUs (the process then runs on the AP, CPU 0 keeping init); the others are
# run and reported with the line that explains the outcome
# (docs/linux-abi.md says why each fails).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIRED=(check_initial_reg_state syscall_nt sysret_rip sigtrap_loop syscall_arg_fault)
# The other 64-bit programs of the Makefile (TARGETS_C_BOTHBITS,
# TARGETS_C_64BIT_ONLY, TARGETS_C_32BIT_NEEDED).
OTHERS=(single_step_syscall sigaltstack sysret_ss_attrs test_mremap_vdso sigreturn iopl ioperm
        test_vsyscall mov_ss_trap fsgsbase_restore fsgsbase syscall_numbering
        corrupt_xstate_header amx ldt_gdt ptrace_syscall)
TIMEOUT=${LINUX_SELFTESTS_TIMEOUT:-300}
WORK=target/linux-selftests
TARBALL=/usr/src/linux-source-6.1.tar.xz

need_packages=()
command -v musl-gcc >/dev/null || need_packages+=(musl-tools)
[ -f "$TARBALL" ] || need_packages+=(linux-source-6.1)
[ -f /usr/include/linux/types.h ] || need_packages+=(linux-libc-dev)
command -v xz >/dev/null || need_packages+=(xz-utils)
if [ ${#need_packages[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "linux-selftests: installing ${need_packages[*]}"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need_packages[@]}"
fi

if [ "${1:-}" = "--deps-only" ]; then
    echo "linux-selftests: musl-gcc, linux-libc-dev and linux-source-6.1 present"
    exit 0
fi

# Extract only the selftests (and the two headers they include from
# outside their folder), once per tarball.
tarball_id=$(stat -c '%s-%Y' "$TARBALL")
if [ "$(cat "$WORK/src.id" 2>/dev/null)" != "$tarball_id" ]; then
    rm -rf "$WORK/src"
    mkdir -p "$WORK/src"
    tar -xJf "$TARBALL" -C "$WORK/src" --strip-components=1 --wildcards \
        '*/tools/testing/selftests/x86/*' '*/tools/testing/selftests/kselftest.h' \
        '*/arch/x86/include/asm/desc_defs.h'
    echo "$tarball_id" > "$WORK/src.id"
fi
SRC="$WORK/src/tools/testing/selftests/x86"

# The kernel UAPI headers alone (not glibc's), for musl.
mkdir -p "$WORK/include" "$WORK/bin"
ln -sfn /usr/include/linux "$WORK/include/linux"
ln -sfn /usr/include/x86_64-linux-gnu/asm "$WORK/include/asm"
ln -sfn /usr/include/asm-generic "$WORK/include/asm-generic"

cargo build --quiet
EXTREGS=target/debug/extregs

build() {
    local name=$1 extra=() sources=("$SRC/$1.c")
    case $name in
        check_initial_reg_state) extra=(-Wl,-ereal_start) ;;
        sysret_ss_attrs) sources+=("$SRC/thunks.S") ;;
    esac
    echo "linux-selftests: sha256 $(sha256sum "${sources[@]}" | awk '{printf "%s %s  ", $1, $2}')"
    musl-gcc -static -m64 -O2 -g -std=gnu99 -pthread -Wall -no-pie -DCAN_BUILD_64 \
        -isystem "$WORK/include" -o "$WORK/bin/${name}_64" "${sources[@]}" "$SRC/helpers.h" \
        -lrt -ldl "${extra[@]}" > "$WORK/bin/$name.build.log" 2>&1
}

passed=0
failed=0
required_failed=()
report=()

# run NAME [extra exec flags...]: one line, and the tallies.
run() {
    local name=$1 label=$1
    shift
    [ $# -gt 0 ] && label="$name ($*)"
    local out="$WORK/bin/$name.out" status=0
    if [ ! -x "$WORK/bin/${name}_64" ]; then
        echo "FAIL $label: did not build ($(grep -m1 -i error "$WORK/bin/$name.build.log" || true))"
        failed=$((failed + 1))
        return 1
    fi
    "$EXTREGS" exec --quiet --timeout "$TIMEOUT" "$@" "$WORK/bin/${name}_64" > "$out" 2>&1 || status=$?
    if [ "$status" -eq 0 ] && ! grep -q '\[FAIL\]' "$out"; then
        echo "ok   $label ($(grep -c '\[OK\]' "$out" || true) OK, $(grep -c '\[SKIP\]' "$out" || true) SKIP)"
        passed=$((passed + 1))
        return 0
    fi
    local why
    # The first [FAIL], else the last line that says something (Linux's
    # fatal-signal line rather than the code bytes after it).
    why=$(grep -m1 '\[FAIL\]' "$out" || grep -v -e '^$' -e '^Code: ' "$out" | tail -n1 || true)
    echo "FAIL $label: exit $status: ${why:0:160}"
    failed=$((failed + 1))
    return 1
}

for name in "${REQUIRED[@]}" "${OTHERS[@]}"; do
    build "$name" || true
done
for name in "${REQUIRED[@]}"; do
    run "$name" || required_failed+=("$name")
    run "$name" --nmi-storm || required_failed+=("$name under --nmi-storm")
    run "$name" --smp 2 || required_failed+=("$name on --smp 2")
done
for name in "${OTHERS[@]}"; do
    run "$name" || true
done
echo "linux-selftests: $passed passed, $failed failed"
if [ ${#required_failed[@]} -gt 0 ]; then
    echo "linux-selftests: required programs failed: ${required_failed[*]}" >&2
    exit 1
fi
