#!/usr/bin/env bash
# Proof by mutation for the fuzzer: build the kernel once with
# EXTREGS_FAULT_INJECTION=1 (which compiles in the named faults, all off),
# then for each fault run a short fuzz seed with `--inject NAME` and require
# the fuzzer to report a violation of the right invariant, with the failure
# exit, within the time budget.
#
# Usage: scripts/fuzz-faults.sh            (all faults)
#        scripts/fuzz-faults.sh NAME...    (only these)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# A target directory of its own, so the fault-injection images never
# replace the real ones.
export CARGO_TARGET_DIR="$root/target/faults"
budget_seconds=30

# fault | invariants that name it (any of them, |-separated in the regex)
faults=(
  "skip-gpr-restore|gprs_after_return"
  "skip-pkrs-restore|pkrs_after_return"
  "extension-offset|extension_offset"
  "nmi-exit-forgets-lockdep|lockdep_saved|lockdep_after_return"
  "nmi-reuses-ist-frame|nmi_not_latched"
)

echo "fuzz-faults: building the fault-injection kernel"
(cd "$root" && EXTREGS_FAULT_INJECTION=1 cargo build --quiet)

selected=("$@")
failures=0
count=0
for entry in "${faults[@]}"; do
  name=${entry%%|*}
  invariants=${entry#*|}
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " =~ " $name " ]]; then
    continue
  fi
  count=$((count + 1))
  start=$(date +%s)
  set +e
  output=$("$CARGO_TARGET_DIR/debug/extregs" fuzz --seed 1 --iterations 500 --inject "$name" \
    --timeout "$budget_seconds" 2>&1)
  status=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  result=$(grep '^RESULT ' <<<"$output" | tail -n 1)
  # The violation's RESULT names the invariant, and gives the seed's time
  # so far with its frames (a campaign counts both).
  if [ "$status" -eq 1 ] && grep -Eq "\"invariant\":\"($invariants)\"" <<<"$result" \
    && grep -Eq '"microseconds":[1-9][0-9]*' <<<"$result"; then
    echo "fuzz-faults: $name: caught in ${elapsed} s: $(grep -m1 'VIOLATION' <<<"$output")"
    grep -m1 'fuzz: path:' <<<"$output" | sed 's/^/    /'
  else
    echo "fuzz-faults: $name: NOT caught as ($invariants) (exit $status, ${elapsed} s)" >&2
    tail -n 20 <<<"$output" >&2
    failures=$((failures + 1))
  fi
done
# Not the fuzzer alone: a frame that fails the entry checks fails *any*
# mode. The demo with the accessor skewed must report ok:false with the
# failed frames counted in its RESULT.
if [ ${#selected[@]} -eq 0 ]; then
  count=$((count + 1))
  set +e
  output=$("$CARGO_TARGET_DIR/debug/extregs" run --cmdline "mode=demo inject=extension-offset" \
    --timeout "$budget_seconds" 2>&1)
  status=$?
  set -e
  result=$(grep '^RESULT ' <<<"$output" | tail -n 1)
  if [ "$status" -eq 1 ] && grep -q '"ok":false' <<<"$result" \
      && grep -Eq '"frame_errors":[1-9]' <<<"$result"; then
    echo "fuzz-faults: demo with extension-offset: failed as it must: $result"
  else
    echo "fuzz-faults: demo with extension-offset: NOT failed (exit $status): $result" >&2
    tail -n 20 <<<"$output" >&2
    failures=$((failures + 1))
  fi
fi
# The shootdown fault is not the fuzzer's: with it, a second CPU keeps
# reading through stale TLB entries, and the SMP selftests must say so.
if [ ${#selected[@]} -eq 0 ]; then
  count=$((count + 1))
  set +e
  output=$("$CARGO_TARGET_DIR/debug/extregs" run --smp 2 \
    --cmdline "mode=selftest inject=skip-tlb-shootdown" --timeout 120 2>&1)
  status=$?
  set -e
  if [ "$status" -eq 1 ] && grep -q '^not ok [0-9]* tlb_shootdown_after_unmap$' <<<"$output" \
      && grep -q '^not ok [0-9]* tlb_shootdown_after_pkey_retag$' <<<"$output"; then
    echo "fuzz-faults: selftest with skip-tlb-shootdown: both shootdown tests failed as they must"
    grep -A0 -B1 '^not ok [0-9]* tlb_shootdown' <<<"$output" | sed 's/^/    /'
  else
    echo "fuzz-faults: selftest with skip-tlb-shootdown: NOT caught (exit $status)" >&2
    grep -E '^(not )?ok [0-9]* tlb_|^# ' <<<"$output" | tail -n 10 >&2
    failures=$((failures + 1))
  fi
fi
echo "fuzz-faults: $((count - failures)) caught, $failures missed"
[ "$failures" -eq 0 ]
