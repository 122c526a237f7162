//! Raising a level (from the kernel, or from ring 3 through a user task),
//! the fuzzer's event hook, which handles every event a level raised, and
//! the partner task that a `preempt` level switches to.

use super::*;

/// The GPRs level `index` must see after return.
pub(super) fn expected_gprs_after(lane: &OwnLane, index: usize, level: &Level) -> PtRegs {
    let mut expected = lane.frame_gprs(index, level);
    if lane.is_user_level(index) && level.kind == Kind::Syscall {
        // The syscall's return value.
        expected.ax = 0;
    }
    if let Mutation::R12(value) = level.mutation {
        expected.r12 = value;
    }
    if level.kind == Kind::PksResolved {
        // The retried load succeeded.
        expected.ax = FUZZ_PAGE_FILL;
    }
    expected
}

/// The PKRS the interrupted level must run with after return.
pub(super) fn expected_pkrs_after(level: &Level) -> u32 {
    if !pks::enabled() {
        return 0;
    }
    let mut pkrs = level.pkrs;
    if let Mutation::SavedPkrs { pkey, rights } = level.mutation {
        pkrs = pks::with_key_rights(pkrs, pkey, rights);
    }
    if level.kind == Kind::PksResolved {
        pkrs = pks::with_key_rights(pkrs, FUZZ_PKEY, KeyRights::ReadWrite);
    }
    pkrs
}

/// Raises level `index` from the current context and checks the return.
pub(super) fn raise(index: usize) {
    let lane = &lane();
    if lane.is_user_level(index) {
        raise_from_user_mode();
        return;
    }
    let mut level = lane.level(index);
    let (entry, _, _) = trampoline(level.kind);
    lane.event_number.fetch_add(1, Ordering::Relaxed);
    lane::nmi_another_cpu(lane);
    let partner_runs_before = lane.partner_runs.load(Ordering::SeqCst);
    match level.kind {
        Kind::Timer | Kind::Preempt | Kind::Migrate => {
            apic::start_timer(apic::TimerMode::OneShot, 1)
        }
        Kind::SelfIpi => apic::send_self_ipi(SELF_IPI_VECTOR),
        Kind::SelfNmi => {
            // At this CPU (after the cross-CPU NMI above: its send puts
            // ICR high back as it found it).
            let _ = apic::prepare_self_nmi_store();
            aim_self_nmi(&mut level.gprs);
        }
        _ => {}
    }
    extregs_fuzz_spins.store(ASYNC_SPINS, Ordering::SeqCst);
    if level.kind == Kind::SelfNmi {
        lane.own_nmi_ip.store(0, Ordering::SeqCst);
    }
    lane.handled.fetch_and(!(1 << index), Ordering::SeqCst);
    lane.repeated.fetch_and(!(1 << index), Ordering::SeqCst);
    let model_before = irqflags::lockdep_hardirqs_enabled();
    if level.lockdep_model {
        irqflags::local_irq_enable_model_only();
    } else {
        irqflags::local_irq_disable_model_only();
    }
    if pks::enabled() {
        // SAFETY: PKS is on and the generated value keeps key 0 read/write.
        unsafe { pks::write_pkrs(level.pkrs) };
    }
    let mut output = PtRegs::default();
    let cpu_before = crate::arch::percpu::this_cpu();
    // SAFETY: the trampoline reads `input` and writes `output` (both valid
    // PtRegs), keeps every callee-saved register, and raises exactly one
    // event that the fuzz hook handles (and resumes past, where needed).
    unsafe { entry(&level.gprs, &mut output) };
    let cpu_after = crate::arch::percpu::this_cpu();
    let live_pkrs = if pks::enabled() { pks::read_pkrs() } else { 0 };
    let model_after = irqflags::lockdep_hardirqs_enabled();
    if pks::enabled() {
        // SAFETY: PKS is on; the default keeps key 0 read/write.
        unsafe { pks::update_pkrs(PKRS_DEFAULT) };
    }
    if model_before {
        irqflags::local_irq_enable_model_only();
    } else {
        irqflags::local_irq_disable_model_only();
    }
    if lane.handled.load(Ordering::SeqCst) & (1 << index) == 0 {
        apic::print_interrupt_state();
        violation_after(
            index,
            &output,
            "event_delivered",
            format_args!("the {} event never reached its handler", level.kind.name()),
        );
    }
    if level.kind == Kind::Preempt
        && lane.partner_runs.load(Ordering::SeqCst) == partner_runs_before
    {
        violation_after(
            index,
            &output,
            "preempted",
            format_args!("the preempt event's exit never switched to the partner task"),
        );
    }
    if level.kind == Kind::Migrate && crate::arch::smp::cpus_online() > 1 {
        if cpu_after == cpu_before {
            violation_after(
                index,
                &output,
                "migrated",
                format_args!("the migrate event's exit left the task on CPU {cpu_before}"),
            );
        }
        lane.migrations.fetch_add(1, Ordering::Relaxed);
    }
    let expected = expected_gprs_after(lane, index, &level);
    for ((name, want), (_, got)) in expected.gprs().iter().zip(output.gprs().iter()) {
        if want != got {
            violation_after(
                index,
                &output,
                "gprs_after_return",
                format_args!("{name} came back {got:#018x}, expected {want:#018x}"),
            );
        }
    }
    let pkrs_expected = expected_pkrs_after(&level);
    if live_pkrs != pkrs_expected {
        violation_after(
            index,
            &output,
            "pkrs_after_return",
            format_args!("PKRS {live_pkrs:08x} after return, expected {pkrs_expected:08x}"),
        );
    }
    if model_after != level.lockdep_model {
        violation_after(
            index,
            &output,
            "lockdep_after_return",
            format_args!(
                "hardirqs-enabled model {model_after} after return, was {}",
                level.lockdep_model
            ),
        );
    }
    if level.kind == Kind::SelfNmi
        && (index + 1..lane.program_len()).any(|i| lane.level(i).send_latched_nmi)
        && lane.repeated.load(Ordering::SeqCst) & (1 << index) == 0
    {
        violation_after(
            index,
            &output,
            "nmi_latched_and_repeated",
            format_args!("an NMI sent inside this NMI was never handled by a repeat"),
        );
    }
}

/// Raises the ring-3 outermost level: a user task runs the kind's user
/// trampoline with the level's GPRs (written to the fuzzer's user page),
/// which raises the event from user mode and, after the return, stores its
/// GPRs back there and exits; then checks them like any level's.
pub(super) fn raise_from_user_mode() {
    let lane = &lane();
    let level = lane.level(0);
    let trampoline = user_trampoline(level.kind);
    lane.event_number.fetch_add(1, Ordering::Relaxed);
    lane.handled.fetch_and(!1, Ordering::SeqCst);
    lane::nmi_another_cpu(lane);
    let page = lane.user_page.load(Ordering::Relaxed);
    let output_address = page + USER_OUTPUT_OFFSET;
    user::write_user_ptregs(page, &level.gprs);
    let pic_nmi = level.kind == Kind::SelfNmi;
    // The 8259's NMI reaches CPU 0 alone: this lane takes it (and CPU 0)
    // for the level.
    let _pic_claim = pic_nmi.then(|| lane::Claim::pic_nmi(lane));
    if pic_nmi {
        // The NMI the user task's `out` sets off (the port is opened to
        // that task alone, below).
        if let Err(why) = without_interrupts(apic::arm_pic_nmi) {
            let microseconds = seed_microseconds(lane, tsc_now());
            oops::begin_dying();
            report_and_die("user_nmi_source", 0, format_args!("{why}"), microseconds);
        }
        PIC_NMI_ARMED.store(true, Ordering::SeqCst);
    }
    // A level that ends in a signal runs as a Linux process: its handler,
    // not the fuzzer's hook, resumes it, through rt_sigreturn.
    let signal_level = lane.is_user_signal_level(0);
    let _signal_claim = signal_level.then(|| lane::Claim::signal_level(lane));
    let signals_before = linux::counters::SIGNALS_DELIVERED.load(Ordering::SeqCst);
    let sigreturns_before = linux::counters::SIGRETURNS.load(Ordering::SeqCst);
    // The user task runs on this CPU alone, which this task keeps (with
    // interrupts off) until it waits: so it is bound to the lane before it
    // first runs.
    let spawned = if signal_level {
        user::write_fuzz_page_word(page, user::FUZZ_SIGNAL_RESUME_OFFSET, trampoline.resume);
        user::write_fuzz_page_word(
            page,
            user::FUZZ_SIGNAL_START_OFFSET,
            user::user_address_of(trampoline.program),
        );
        // The process sees the lane's page at USER_FUZZ_PAGE.
        linux::exec::spawn_kernel_program(
            user::programs::FUZZ_SIGNAL,
            [user::USER_FUZZ_PAGE, user::USER_FUZZ_PAGE + USER_OUTPUT_OFFSET],
            page,
            lane::this_cpu_mask(),
        )
    } else {
        user::spawn_on(
            format_args!("fuzz-user"),
            trampoline.program,
            page,
            output_address,
            lane::this_cpu_mask(),
        )
    };
    let Ok(handle) = spawned else {
        let microseconds = seed_microseconds(lane, tsc_now());
        oops::begin_dying();
        report_and_die("user_task", 0, format_args!("could not spawn the user task"), microseconds);
    };
    lane::bind(handle, lane);
    if pic_nmi {
        // The task's own I/O bitmap (it runs only once this task waits).
        sched::set_user_port_access(handle, apic::PIC_MASTER_DATA, true);
    }
    let status = sched::wait(handle);
    if pic_nmi {
        PIC_NMI_ARMED.store(false, Ordering::SeqCst);
        without_interrupts(apic::disarm_pic_nmi);
    }
    let output = user::read_user_ptregs(output_address).unwrap_or_default();
    if status != 0 {
        violation_after(
            0,
            &output,
            "user_task",
            format_args!("the ring-3 level's task ended with status {status}"),
        );
    }
    if lane.handled.load(Ordering::SeqCst) & 1 == 0 {
        violation_after(
            0,
            &output,
            "event_delivered",
            format_args!("the user {} event never reached its handler", level.kind.name()),
        );
    }
    if level.kind == Kind::SelfNmi
        && (1..lane.program_len()).any(|i| lane.level(i).send_latched_nmi)
        && lane.repeated.load(Ordering::SeqCst) & 1 == 0
    {
        violation_after(
            0,
            &output,
            "nmi_latched_and_repeated",
            format_args!("an NMI sent inside the NMI from ring 3 was never handled by a repeat"),
        );
    }
    if signal_level {
        check_signal_round_trip(handle.slot(), &output, signals_before, sigreturns_before);
    }
    let expected = expected_gprs_after(lane, 0, &level);
    for ((name, want), (_, got)) in expected.gprs().iter().zip(output.gprs().iter()) {
        if want != got {
            violation_after(
                0,
                &output,
                "gprs_after_return",
                format_args!("{name} came back {got:#018x} to user mode, expected {want:#018x}"),
            );
        }
    }
}

/// The signal a ring-3 level ended in was delivered once and returned from
/// once, both on the frame at the task's `task_pt_regs` (every frame on the
/// way went through the entry checks as well).
fn check_signal_round_trip(
    slot: usize,
    output: &PtRegs,
    signals_before: u64,
    sigreturns_before: u64,
) {
    let delivered = linux::counters::SIGNALS_DELIVERED.load(Ordering::SeqCst) - signals_before;
    let returned = linux::counters::SIGRETURNS.load(Ordering::SeqCst) - sigreturns_before;
    if delivered != 1 || returned != 1 {
        violation_after(
            0,
            output,
            "signal_round_trip",
            format_args!(
                "{delivered} signals delivered and {returned} sigreturns, expected 1 and 1"
            ),
        );
    }
    let task_pt_regs = sched::task::task_pt_regs(slot) as u64;
    for (what, frame) in [
        ("delivery", linux::signal::LAST_DELIVERY_FRAME.load(Ordering::SeqCst)),
        ("rt_sigreturn", linux::signal::LAST_SIGRETURN_FRAME.load(Ordering::SeqCst)),
    ] {
        if frame != task_pt_regs {
            violation_after(
                0,
                output,
                "signal_round_trip",
                format_args!("the {what} ran on {frame:#x}, not task_pt_regs {task_pt_regs:#x}"),
            );
        }
    }
    USER_SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Ring-3 levels that ended in a signal and came back through
/// `rt_sigreturn` (RESULT's `user_signals`).
pub(super) static USER_SIGNALS: AtomicU64 = AtomicU64::new(0);

/// Where in the fuzzer's user page the trampoline stores its GPRs.
pub(super) const USER_OUTPUT_OFFSET: u64 = 512;

/// The ring-3 NMI level's 8259 NMI is armed and not yet acknowledged
/// (every NMI meanwhile asks the 8259 whether it was that one).
pub(super) static PIC_NMI_ARMED: AtomicBool = AtomicBool::new(false);

/// Does level `index` run below an NMI taken in kernel mode (on the NMI
/// stack)? An NMI from ring 3 runs its handler on the task stack.
pub(super) fn nmi_ancestor(lane: &OwnLane, index: usize) -> bool {
    (0..index).any(|i| lane.level(i).kind == Kind::SelfNmi && !lane.is_user_level(i))
}

/// The event hook (everything but #PF): claims the event of the current
/// level while fuzzing.
pub(super) fn event_hook(regs: &mut PtRegs, vector: u8) -> bool {
    // Only a task of a lane with a program running raises fuzz events.
    let Some(lane) = lane::current_lane().filter(|lane| lane.active.load(Ordering::SeqCst)) else {
        return false;
    };
    // A lane's task switches only at its own switch points (a `preempt` or
    // `migrate` exit, a wait, a claim, between iterations), never in the
    // middle of a level: another task on this CPU would take the event the
    // level armed. So an interrupt that is not a level's own never lets its
    // exit switch: a reschedule asked of this CPU (a reschedule IPI, or the
    // flag a `kick` set while this CPU looked idle) waits for the lane's
    // next iteration, where it yields.
    match vector {
        // The foreign timer is no level's event: the IRQ dispatcher counts
        // it (and records its interrupt point); check_frame has validated
        // it.
        apic::FOREIGN_TIMER_VECTOR => {
            sched::forget_reschedule_request();
            return false;
        }
        // Answered here, as the IRQ dispatcher would.
        crate::arch::tlb::TLB_SHOOTDOWN_VECTOR => {
            crate::arch::tlb::handle_shootdown_ipi();
            apic::eoi();
            sched::forget_reschedule_request();
            return true;
        }
        apic::RESCHEDULE_VECTOR => {
            apic::eoi();
            sched::forget_reschedule_request();
            return true;
        }
        _ => {}
    }
    handle(&lane, regs, vector);
    let frame = regs as *mut PtRegs as u64;
    lane.leave_to_signal.compare_exchange(frame, 0, Ordering::SeqCst, Ordering::SeqCst).is_err()
}

/// The fuzz page's PKS fault handler.
pub(super) fn pks_fault(regs: &mut PtRegs, fault: PksFault) -> bool {
    let Some(lane) = lane::current_lane().filter(|lane| lane.active.load(Ordering::SeqCst)) else {
        return false;
    };
    if fault.address != FUZZ_PAGE_ADDRESS {
        return false;
    }
    handle(&lane, regs, 14);
    true
}

/// Is this NMI one the program did not raise? Foreign NMIs (QMP
/// `inject-nmi`, a storm, another CPU's lane) that come in while an
/// iteration runs are checked for latching like every NMI (first thing in
/// [`handle`]), validated by the entry checks that need no program
/// (`check::check_frame`: extension offset, CS/SS, live PKRS, IST
/// placement and the NMI frame on the copy), counted
/// (`Lane::foreign_nmis`), and otherwise left alone: they never enter the
/// digest. Those between iterations go to the kernel's NMI handler and are
/// counted from `nmi::count`. `from_pic`: the 8259 had the
/// armed IRQ 0 pending when this NMI came (see [`PIC_NMI_ARMED`]).
pub(super) fn is_foreign_nmi(lane: &OwnLane, regs: &PtRegs, depth: usize, from_pic: bool) -> bool {
    if depth >= lane.program_len() {
        return true;
    }
    let level = lane.level(depth);
    if level.kind != Kind::SelfNmi {
        return true;
    }
    if lane.handled.load(Ordering::SeqCst) & (1 << depth) != 0 {
        // After the level's NMI ran: the program's own only as the one
        // repeat a deeper level asked for, on the same interrupted context.
        let expects_repeat =
            (depth + 1..lane.program_len()).any(|i| lane.level(i).send_latched_nmi);
        let repeated = lane.repeated.load(Ordering::SeqCst) & (1 << depth) != 0;
        return !(expects_repeat && !repeated && regs.ip == lane.own_nmi_ip.load(Ordering::SeqCst));
    }
    // Before it: in ring 3 the 8259 says whether it raised this one. If it
    // did, it is the program's wherever it landed ([`validate`] then checks
    // ip and cs, so an entry that garbled them is reported as such).
    if lane.is_user_level(depth) {
        return !from_pic;
    }
    // In the kernel the program's own lands right after the trampoline's
    // ICR store (`site`), in its wait loop; one at `site` itself came
    // before the store sent anything.
    let (site, resume) = lane.sites(depth, level.kind);
    !(site < regs.ip && regs.ip <= resume)
}

pub(super) fn handle(lane: &OwnLane, regs: &mut PtRegs, vector: u8) {
    let depth = lane.depth.load(Ordering::SeqCst);
    // Before anything else can touch the 8259 (a console byte moves an IRQ
    // line): acknowledge the armed ring-3 NMI, or in QEMU's 8259 model every
    // update would raise another.
    let from_pic = vector == 2
        && lane::owns_pic_nmi(lane)
        && PIC_NMI_ARMED.load(Ordering::SeqCst)
        && apic::acknowledge_pic_nmi()
        && PIC_NMI_ARMED.swap(false, Ordering::SeqCst);
    // First, for every NMI, the program's or not: one that interrupted
    // NMI-stack code must have been latched by the entry, never handled.
    if vector == 2 && gdt::ist_stack_of(regs.sp) == Some(gdt::NMI_IST_INDEX) {
        // The entry handled an NMI that hit NMI-stack code instead of
        // latching it: this frame now overlays the outer NMI's.
        violation(
            regs,
            depth,
            "nmi_not_latched",
            format_args!(
                "an NMI interrupted code on the NMI stack (sp {:#x}) and was handled, not latched",
                regs.sp
            ),
        );
    }
    // A repeat of an NMI from user mode for an NMI latched in its handler:
    // that one landed in the kernel, here.
    let latched_ip = if vector == 2 && regs.user_mode() { nmi::take_latched_ip() } else { None };
    if vector == 2 && is_foreign_nmi(lane, regs, depth, from_pic) {
        lane.foreign_nmis.fetch_add(1, Ordering::Relaxed);
        if regs.user_mode() && latched_ip.is_none() {
            lane.foreign_user_nmis.fetch_add(1, Ordering::Relaxed);
        }
        coverage::record(latched_ip.unwrap_or(regs.ip));
        return;
    }
    // A latched NMI's repeat: the NMI level already ran (its handler is
    // done, so DEPTH is back at it) and the entry runs it again.
    if vector == 2
        && depth < lane.program_len()
        && lane.handled.load(Ordering::SeqCst) & (1 << depth) != 0
    {
        let level = lane.level(depth);
        if level.kind != Kind::SelfNmi {
            violation(regs, depth, "event_kind", format_args!("a second NMI at a non-NMI level"));
        }
        validate(lane, regs, vector, depth, &level, true);
        lane.repeated.fetch_or(1 << depth, Ordering::SeqCst);
        lane.latched_nmis.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if depth >= lane.program_len() {
        violation(
            regs,
            depth,
            "event_kind",
            format_args!("vector {vector} beyond the program ({} levels)", lane.program_len()),
        );
    }
    let level = lane.level(depth);
    validate(lane, regs, vector, depth, &level, false);
    lane.frame_address[depth].store(regs as *mut PtRegs as u64, Ordering::SeqCst);
    if level.kind.is_maskable_irq() {
        // Ack early (as Linux's sysvec handlers do), so nested IRQs of any
        // priority can come in while this handler raises the next level.
        apic::eoi();
        // Only a `preempt` or `migrate` exit switches (see `event_hook`).
        sched::forget_reschedule_request();
    }
    lane.depth.store(depth + 1, Ordering::SeqCst);
    lane.max_depth_reached.fetch_max(depth + 1, Ordering::Relaxed);
    if level.kind == Kind::Preempt {
        // The rest of the program runs in the partner task, after this
        // IRQ's exit has switched to it, with this frame and its
        // extension left on the interrupted task's stack.
        lane.partner_start.store(depth + 1, Ordering::SeqCst);
        match lane.partner.get() {
            Some(partner) => sched::unpark_and_resched(*partner),
            None => violation(regs, depth, "preempted", format_args!("no partner task")),
        }
    } else if depth + 1 < lane.program_len() {
        raise(depth + 1);
    }
    if level.kind == Kind::Migrate {
        // The levels below ran; this IRQ's exit now moves the interrupted
        // task, with this frame and its extension on its stack, to the
        // next CPU, where it resumes and checks what came back.
        migrate_at_exit();
    }
    // This level's edits of its own frame. (The trampolines never write
    // PKRS, so an edit is never refused; if one were, the level's PKRS
    // check after return would report it.)
    let mut edits_applied = true;
    match level.mutation {
        Mutation::None => {}
        Mutation::R12(value) => regs.r12 = value,
        Mutation::SavedPkrs { pkey, rights } => {
            // SAFETY: `regs` is this event's entry frame.
            edits_applied &= unsafe { pks::pks_update_saved(regs, pkey, rights) }
        }
    }
    let (_, resume) = lane.sites(depth, level.kind);
    match level.kind {
        Kind::PksResolved => {
            // SAFETY: `regs` is this event's entry frame; granting the fuzz
            // key makes the retried load succeed.
            edits_applied &= unsafe { pks::pks_update_saved(regs, FUZZ_PKEY, KeyRights::ReadWrite) }
        }
        // The signal-ending level: its signal handler resumes it.
        _ if lane.is_user_signal_level(depth) && regs.user_mode() => {
            lane.leave_to_signal.store(regs as *mut PtRegs as u64, Ordering::SeqCst);
        }
        kind if kind.is_trap() => {}
        // Faults and the wait loops continue after the event.
        _ => regs.ip = resume,
    }
    if !edits_applied {
        violation(
            regs,
            depth,
            "pkrs_edit_refused",
            format_args!("pks_update_saved refused an edit"),
        );
    }
    if level.send_latched_nmi {
        // NMIs are blocked until the outer NMI's IRET... or this handler's:
        // the NMI arrives right after it returns, still inside the outer NMI.
        apic::send_self_nmi();
    }
    if vector == 2 {
        // What a latched repeat will find in the frame (after this
        // handler's edits: ip moved to `resume`).
        lane.own_nmi_ip.store(regs.ip, Ordering::SeqCst);
    }
    lane.depth.store(depth, Ordering::SeqCst);
    lane.handled.fetch_or(1 << depth, Ordering::SeqCst);
}

/// A `migrate` level's handler: the interrupted task may run only on the
/// next online CPU from here on (until its lane's next iteration sends it
/// home), and this IRQ's exit switches away from it. On one CPU, the same
/// CPU: the exit reschedules and the task stays.
fn migrate_at_exit() {
    let this = crate::arch::percpu::this_cpu();
    let online = crate::arch::smp::online_mask();
    let after = online & !((2u32 << this) - 1);
    let next = if after != 0 { after.trailing_zeros() } else { online.trailing_zeros() };
    lane().away.store(true, Ordering::Relaxed);
    sched::move_current_at_exit(1 << next);
}

/// A lane's partner task (`lane_index`): parked until a `preempt` event's
/// handler unparks it; then (switched to by that IRQ's exit, on the same
/// CPU, its home) raises the rest of the program, parks again, and the
/// preempted task resumes.
pub(super) fn partner(lane_index: usize) {
    lane::bind_current(lane_index);
    let lane = &lane();
    loop {
        sched::park();
        if lane.partner_stop.load(Ordering::SeqCst) {
            return;
        }
        // As in the mode's own context: events are raised with IF clear.
        irqflags::local_irq_disable();
        let start = lane.partner_start.load(Ordering::SeqCst);
        if start < lane.program_len() {
            lane.depth.store(start, Ordering::SeqCst);
            raise(start);
            lane.depth.store(start - 1, Ordering::SeqCst);
        }
        lane.partner_runs.fetch_add(1, Ordering::SeqCst);
    }
}
