#!/usr/bin/env bash
# Proof by mutation: the selftests must be able to fail.
#
# Each mutant breaks the entry path on purpose (one sed on a copy of the
# tree), builds it, boots `mode=selftest` under QEMU, and requires the named
# KTAP test to report `not ok` (or to end in an oops, when the broken frame
# takes the kernel down) and the run to exit 1. A mutant that the selftests
# do not catch fails this script.
#
# Usage: scripts/mutants.sh            (all mutants)
#        scripts/mutants.sh NAME...    (only these)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A target directory of its own, so mutant images never replace the real ones.
export CARGO_TARGET_DIR="$root/target/mutants"

# name | file | sed expression | KTAP test that must fail
mutants=(
  "pop-regs-skips-r9|crates/entry-asm/src/calling.S|s/^\tmovq\tPTREGS_R9(%rsp), %r9$/\t\/* mutant: r9 not restored *\//|gprs_round_trip"
  "pkrs-not-restored-on-exit|crates/kernel/src/arch/pks.rs|s/^    unsafe { update_pkrs(arch.pks) };$/    let _ = arch;/|pkrs_saved_live_restored"
  "pkrs-cache-bypassed-on-exit|crates/kernel/src/arch/pks.rs|s/^    unsafe { update_pkrs(arch.pks) };$/    unsafe { write_pkrs(arch.pks) };/|pkrs_cache_skips_wrmsr"
  "pkrs-not-saved-on-entry|crates/entry/src/lib.rs|0,/^    P::arch_enter(&mut frame.arch);$/s//    let _ = \&frame.arch;/|pkrs_saved_live_restored"
  "handler-edit-of-bx-dropped|crates/kernel/src/entry/events.rs|s/^            frame.regs.bx = bx;$//|gpr_edit_through_ptregs"
  "error-code-vector-without-error-code|crates/entry-asm/src/entry_64.S|s/^IDTENTRY 13, general_protection,  *1$/IDTENTRY 13, general_protection, 0/|general_protection_frame"
  "exit-rcu-not-recorded|crates/entry/src/lib.rs|0,/^        generic.exit_rcu = 1;$/s//        generic.exit_rcu = 0;/|exit_rcu_round_trip"
  "irq-stubs-all-push-one-vector|crates/entry-asm/src/entry_64.S|s/^1:\tpushq\t\$extregs_next_vector$/1:\tpushq\t\$0x40/|irq_stubs_report_their_vectors"
  "irq-exit-keeps-rcu-watching|crates/entry/src/lib.rs|0,/^        P::rcu_irq_exit();$/s//        \/\/ mutant: rcu_irq_exit skipped/|idle_irq_records_exit_rcu"
  "nmi-exit-forgets-lockdep|crates/entry/src/lib.rs|s/^    P::lockdep_set_hardirqs_enabled(frame.generic.lockdep_hardirqs_enabled != 0);$//|nmi_lockdep_round_trip"
  "nested-nmi-treated-as-outermost|crates/entry-asm/src/entry_64.S|s/^\tjne\t.Lnmi_nested$/\t\/* mutant: no nesting check *\//|nmi_int3_self_nmi_nested"
  "debug-not-on-ist|crates/kernel/src/arch/idt.rs|s/idt.debug.set_handler_addr(stub(1)).set_stack_index(DEBUG_IST_INDEX);/idt.debug.set_handler_addr(stub(1));/|debug_single_step_on_ist"
  # The races of the hardening review, each put back as it was:
  # the PKRS cache stored before the WRMSR, with nothing telling an entry.
  "pkrs-cache-stored-before-wrmsr|crates/kernel/src/arch/pks.rs|/^pub unsafe fn write_pkrs/,/^}/{s/^    PKRS_WRITES_IN_PROGRESS.this().fetch_add(1, Ordering::Relaxed);$/    PKRS_CACHE.this().store(value, Ordering::Relaxed);/; s/^    PKRS_WRITES_IN_PROGRESS.this().fetch_sub(1, Ordering::Relaxed);$//}|pkrs_write_window_every_instruction"
  "paranoid-exit-keeps-changed-cr2|crates/kernel/src/entry/paranoid.rs|s/^            core::arch::asm!(\"mov cr2, {}\".*$/            core::hint::black_box(state.cr2)/|cr2_survives_paranoid_page_fault"
  "paranoid-entry-keeps-dr7-armed|crates/kernel/src/entry/paranoid.rs|0,/^        unsafe { write_dr7(DR7_RESET) };$/s//        let _ = DR7_RESET;/|breakpoints_masked_in_paranoid_handlers"
  "breakpoints-allowed-on-entry|crates/kernel/src/entry/paranoid.rs|s/^    if let Some(why) = breakpoint_refused(address) {$/    if let Some(why) = None::<\&str> {/|breakpoints_refused_where_entries_run"
  "debug-ist-not-shifted|crates/kernel/src/entry/paranoid.rs|s/^        unsafe { gdt::shift_debug_ist(\(.*\)) };$/        let _ = \1;/|debug_recursion_shifts_the_ist"
  "paranoid-print-waits-for-console|crates/kernel/src/arch/serial.rs|/^        if CONSOLE_OWNER.load(Ordering::SeqCst) == me {$/{n;s/return Err(());/\/\/ mutant: waits for its own CPU/}|console_from_paranoid_handler"
  "pks-edit-accepted-inside-a-write|crates/kernel/src/arch/pks.rs|s/^    if interrupted_a_pkrs_write(regs) {$/    if false {/|pkrs_write_window_every_instruction"
  "ist-guard-pages-left-mapped|crates/kernel/src/main.rs|s/^    gdt::protect_ist_stacks();$//|ist_stacks_have_guard_pages"
  "switch-forgets-pkrs|crates/kernel/src/sched/switch.rs|s/^        unsafe { pks::update_pkrs(next_task.switched_out_pkrs.load(Ordering::Relaxed)) };$/        let _ = next_task;/|pkrs_per_task_after_switch"
  "switch-forgets-r15|crates/entry-asm/src/switch_64.S|/INACTIVE_TASK_FRAME_R15/d|nmi_during_context_switch"
  "preemption-with-preempt-count-held|crates/entry/src/lib.rs|s/^    if P::preempt_count() == 0 \&\& P::need_resched() {$/    if P::need_resched() {/|preempt_disable_holds_off_preemption"
  "task-sp-saved-after-switch|crates/entry-asm/src/switch_64.S|/^\tmovq\t%rsp, THREAD_SP(%rdi)$/d; s/^\tmovq\tTHREAD_SP(%rsi), %rsp$/&\n\tmovq\t%rsp, THREAD_SP(%rdi)/|preemption_on_irq_exit"
  # User mode: SWAPGS, RSP0, the SYSRET check, CLAC.
  "sysret-exit-without-swapgs|crates/entry-asm/src/entry_64.S|/^\tmovq\tIRET_FRAME_SP(%rsp), %rsp$/{n;d}|nmi_at_every_instruction_of_the_user_paths"
  "rsp0-not-switched|crates/kernel/src/sched/switch.rs|s/^    unsafe { crate::arch::gdt::set_kernel_stack_top(next_task.stack_top.load(Ordering::Relaxed)) };$/    let _ = next_task;/|syscall_preserves_gprs"
  "sysret-to-non-canonical-rcx|crates/kernel/src/user/syscall.rs|/^        && regs.ip < TASK_SIZE_MAX$/d|syscall_sysret_and_iret_paths"
  "entry-keeps-user-access|crates/entry-asm/src/entry_64.S|/^\tclac$/d|smap_stops_kernel_access_to_user_memory"
  "nmi-in-user-nmi-not-latched|crates/kernel/src/entry/nmi.rs|s/^    USER_NMI_STATE.this().store(USER_NMI_LATCHED, Ordering::SeqCst);\$/    return false;/|user_frames_sit_at_task_pt_regs"
  # The breakpoint walks (walk.rs): what only an entry at one instruction
  # of the user paths or of the context switch can tell. (SWAPGS moved one
  # instruction later on the SYSRET exit is past SYSRETQ, where it never
  # runs: sysret-exit-without-swapgs above, which the user-path walk, the
  # first user-mode test, catches.)
  "paranoid-gs-inverted-at-sysretq|crates/entry-asm/src/entry_64.S|s/^\tje\t.Lparanoid_gs_kernel_\\\\@$/&\n\tleaq\textregs_syscall_sysretq(%rip), %rcx\n\tcmpq\t%rcx, PTREGS_IP(%rsp)\n\tje\t.Lparanoid_gs_kernel_\\\\@/|nmi_at_every_instruction_of_the_user_paths"
  "rsp0-written-after-the-stack-switch|crates/kernel/src/sched/switch.rs|s/^    unsafe { crate::arch::gdt::set_kernel_stack_top(next_task.stack_top.load(Ordering::Relaxed)) };$/    let _ = next_task;/; s/^pub(super) fn finish_task_switch() {$/&\n    unsafe { crate::arch::gdt::set_kernel_stack_top(TASKS[CURRENT.this().load(Ordering::Relaxed)].stack_top.load(Ordering::Relaxed)) };/|nmi_at_every_instruction_of_the_context_switch"
  # Call traces: the vector an <IRQ> section is told by.
  "entry-vector-not-recorded|crates/entry-asm/src/calling.S|0,/^\tRECORD_ENTRY_VECTOR$/{//d}|general_protection_frame"
  "syscall-vector-not-recorded|crates/entry-asm/src/calling.S|/^\tmovw\t\$ENTRY_SYSCALL, EXTREGS_GENERIC_VECTOR(%rsp)$/d|syscall_preserves_gprs"
  # SMP: the per-CPU entry state, each made shared again.
  "nmi-nesting-state-global|crates/entry-asm/src/entry_64.S|s/NMI_TOP_NMI_STATE-NMI_TOP_[A-Z_]*(%rsp)/extregs_mutant_nmi_state(%rip)/; \$a .data\nextregs_mutant_nmi_state: .byte 0\n.text|nmi_on_one_cpu_runs_while_another_is_in_nmi"
  "user-nmi-latch-shared-across-cpus|crates/kernel/src/entry/nmi.rs|s/USER_NMI_STATE.this()/USER_NMI_STATE.of(0)/g|user_nmi_latch_is_per_cpu"
  "nested-send-leaves-icr-high|crates/kernel/src/arch/apic.rs|/^            write(reg::ICR_HIGH, interrupted_high);$/d|icr_high_survives_a_nested_send"
  "shorthand-send-writes-icr-high|crates/kernel/src/arch/apic.rs|/if low & ICR_SHORTHAND_MASK != 0 => {$/a\            write(reg::ICR_HIGH, destination << 24);|icr_high_survives_a_nested_send"
  "pkrs-cache-shared-across-cpus|crates/kernel/src/arch/pks.rs|s/PKRS_CACHE.this()/PKRS_CACHE.of(0)/g|pkrs_cache_and_bracket_are_per_cpu"
  "ap-without-its-own-tss|crates/kernel/src/arch/gdt.rs|s/^    TSS\[this_cpu()\].0.get()$/    TSS[0].0.get()/|each_cpu_has_its_own_entry_state"
  "paranoid-gs-reads-boot-cpu-area|crates/entry-asm/src/entry_64.S|s/^\tmovq\tIST_BLOCK_PER_CPU(%rax), %rax$/\tleaq\textregs_per_cpu(%rip), %rax/|each_cpu_has_its_own_entry_state"
  # The Linux personality: signal frames, sigreturn, the FPU, the exit work.
  "sigreturn-accepts-kernel-cs|crates/kernel/src/linux/signal.rs|/^pub fn sigreturn/,/^}/s/^    regs.cs = u64::from(selectors::USER_CS);$/    regs.cs = u64::from(context.cs);/|sigreturn_forces_user_selectors"
  "signal-frame-8-bytes-off|crates/kernel/src/linux/signal.rs|s/ \& !15).wrapping_sub(8);$/ \& !15).wrapping_sub(0);/|signal_delivered_and_returned_at_task_pt_regs"
  "fpu-state-not-switched|crates/kernel/src/sched/user_state.rs|s/^        fpu::save(unsafe { \&mut \*FPU_STATES\[prev\].0.get() });$/        let _ = prev;/|fpu_state_is_per_task"
  "pending-signals-not-checked-on-exit|crates/kernel/src/sched/preempt.rs|s/^        signal_pending: current_task().signal_pending.load(Ordering::Relaxed),$/        signal_pending: false,/|signal_delivered_and_returned_at_task_pt_regs"
  "syscall-frame-8-bytes-off|crates/entry-asm/src/entry_64.S|/^\tmovq\t%rsp, %gs:PERCPU_USER_RSP_SCRATCH$/{n;s/$/\n\tsubq\t\$8, %rsp/}|syscall_preserves_gprs"
  # SMP scheduling: Linux's on_cpu rule and per-task PKRS across CPUs.
  "prev-queued-before-its-rsp-is-saved|crates/kernel/src/sched/switch.rs|s/^                prev_task.set_state(TaskState::Runnable);$/&\n                if !prev_is_idle { queue.push(prev); }/; s/^            queue.push(from);$/            \/\/ mutant: queued by schedule instead/|nobody_runs_a_half_switched_task"
  "migrated-task-keeps-the-cpus-pkrs|crates/kernel/src/sched/switch.rs|s/^        unsafe { pks::update_pkrs(next_task.switched_out_pkrs.load(Ordering::Relaxed)) };$/        if came_from as usize == cpu { unsafe { pks::update_pkrs(next_task.switched_out_pkrs.load(Ordering::Relaxed)) } }/|migration_keeps_pkrs_and_gprs"
  "io-ports-not-switched|crates/kernel/src/sched/switch.rs|s/^    crate::arch::gdt::load_user_ports(next_task.user_ports.load(Ordering::Relaxed));$/    let _ = next_task.user_ports.load(Ordering::Relaxed);/|io_bitmap_is_per_task"
)

selected=("$@")
failures=0
for entry in "${mutants[@]}"; do
  IFS='|' read -r name file expression expected <<<"$entry"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " =~ " $name " ]]; then
    continue
  fi
  tree="$work/tree"
  rm -rf "$tree"
  mkdir -p "$tree"
  (cd "$root" && git ls-files -z | xargs -0 cp --parents -t "$tree")
  sed -i "$expression" "$tree/$file"
  if cmp -s "$root/$file" "$tree/$file"; then
    echo "mutant $name: the mutation no longer applies to $file (update scripts/mutants.sh)" >&2
    failures=$((failures + 1))
    continue
  fi
  echo "mutant $name: building"
  (cd "$tree" && cargo build --quiet)
  set +e
  # Two CPUs, so the per-CPU selftests run instead of skipping.
  output=$("$CARGO_TARGET_DIR/debug/extregs" run --smp 2 --cmdline mode=selftest --timeout 60 2>&1)
  status=$?
  set -e
  # The named test must report `not ok`; a later test may then hang on the
  # same breakage (exit 124), which is still a failure of the run.
  if { [ "$status" -eq 1 ] || [ "$status" -eq 124 ]; } \
      && grep -Eq "^not ok [0-9]+ $expected\$" <<<"$output"; then
    echo "mutant $name: caught by $expected (exit $status)"
    grep -E '^(not ok|# )' <<<"$output" | sed 's/^/    /'
  elif [ "$status" -eq 1 ] && ! grep -Eq "^ok [0-9]+ $expected( |\$)" <<<"$output" \
      && grep -Eq "^extregs: (oops: unhandled|BUG: |panic: )" <<<"$output"; then
    # The broken frame took the kernel down during the test (an oops, a
    # BUG, or a panic of a check such as the scheduler's stack checks): also caught.
    echo "mutant $name: caught: $expected ended in an oops (exit $status)"
    grep -E '^(extregs: (oops|BUG|panic)|RIP:)' <<<"$output" | sed 's/^/    /'
  elif [ "$status" -eq 1 ] && ! grep -Eq "^ok [0-9]+ $expected( |\$)" <<<"$output" \
      && ! grep -q '^RESULT ' <<<"$output"; then
    # The broken entry took the whole machine down (e.g. garbage restored
    # into PKRS): no RESULT, and the named test never passed.
    echo "mutant $name: caught: the kernel crashed before $expected passed (exit $status)"
    grep -E '^extregs: (QEMU|oops)' <<<"$output" | sed 's/^/    /' || true
  elif [ "$status" -eq 124 ] && ! grep -Eq "^(not )?ok [0-9]+ $expected( |\$)" <<<"$output" \
      && ! grep -q '^RESULT ' <<<"$output"; then
    # The named test hung (e.g. a deadlock): the timeout ended the run.
    echo "mutant $name: caught: $expected hung until the timeout (exit $status)"
    grep -E '^(not )?ok [0-9]+ ' <<<"$output" | tail -n 1 | sed 's/^/    last report: /'
  else
    echo "mutant $name: NOT caught (exit $status; expected 'not ok … $expected')" >&2
    tail -n 30 <<<"$output" >&2
    failures=$((failures + 1))
  fi
done

total=${#mutants[@]}
[ ${#selected[@]} -gt 0 ] && total=${#selected[@]}
echo "mutants: $((total - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
