//! The invariants every frame the fuzzer raised must hold: one small
//! named check each, run in the order of [`INVARIANTS`] on every frame
//! (the first that fails is reported, under its name, and ends the run).

use super::*;
use extregs_regs::GenericExtRegs;

/// What the checks see of one frame.
pub(super) struct Frame<'a> {
    /// The lane whose program raised the frame.
    lane: &'a OwnLane,
    regs: &'a PtRegs,
    vector: u8,
    depth: usize,
    level: &'a Level,
    /// The second run of an NMI level, which sees the state its first run
    /// left (mutations applied).
    repeat: bool,
    /// Level `depth` runs in ring 3.
    user_level: bool,
    regs_address: u64,
    extension_address: u64,
    saved_pkrs: u32,
    generic: GenericExtRegs,
    /// Where the level's event is, and where its handler resumes.
    site: u64,
    resume: u64,
}

impl Frame<'_> {
    fn violation(&self, invariant: &str, detail: core::fmt::Arguments<'_>) -> ! {
        violation(self.regs, self.depth, invariant, detail)
    }
}

/// One invariant: its name (in the violation report and the campaign's
/// JSON) and its check, which reports a violation itself.
pub(super) struct Invariant {
    pub(super) name: &'static str,
    check: fn(&Frame<'_>, &'static str),
}

/// Every invariant, in the order they are checked.
pub(super) const INVARIANTS: [Invariant; 19] = [
    Invariant { name: "vector", check: vector },
    Invariant { name: "extension_offset", check: extension_offset },
    Invariant { name: "gprs", check: gprs },
    Invariant { name: "ip", check: ip },
    Invariant { name: "cs", check: selectors },
    Invariant { name: "user_frame", check: user_frame },
    Invariant { name: "flags", check: user_interrupts_enabled },
    Invariant { name: "orig_ax", check: orig_ax },
    Invariant { name: "flags", check: kernel_interrupt_flag },
    Invariant { name: "saved_pkrs", check: saved_pkrs },
    Invariant { name: "live_pkrs", check: live_pkrs },
    Invariant { name: "exit_rcu", check: exit_rcu },
    Invariant { name: "lockdep_saved", check: lockdep_saved },
    Invariant { name: "lockdep_in_handler", check: lockdep_in_handler },
    Invariant { name: "nmi_frame", check: nmi_frame },
    Invariant { name: "nmi_not_latched", check: nmi_not_latched },
    Invariant { name: "stack", check: stack },
    Invariant { name: "preempt_nesting", check: preempt_nesting },
    Invariant { name: "nesting", check: nesting },
];

/// What the digest records for an asynchronous event's landing point.
const ASYNC_LANDED: u64 = u64::MAX;

/// Every check on one frame, after counting it and folding it into the
/// digest. `repeat`: the second run of an NMI level.
pub(super) fn validate(
    lane: &OwnLane,
    regs: &mut PtRegs,
    vector: u8,
    depth: usize,
    level: &Level,
    repeat: bool,
) {
    lane.frames.fetch_add(1, Ordering::Relaxed);
    let user_level = lane.is_user_level(depth);
    if user_level {
        lane.user_kind_counts[level.kind as usize].fetch_add(1, Ordering::Relaxed);
    } else {
        lane.kind_counts[level.kind as usize].fetch_add(1, Ordering::Relaxed);
    }
    let context = match depth {
        0 if user_level => 1,
        0 => 0,
        _ => 2 + lane.label(depth - 1),
    };
    lane.depth_counts[lane.label(depth)][depth].fetch_add(1, Ordering::Relaxed);
    lane.context_counts[lane.label(depth)][context].fetch_add(1, Ordering::Relaxed);
    let (site, resume) = lane.sites(depth, level.kind);
    let regs_address = regs as *mut PtRegs as u64;
    lane.fold_digest(lane.iteration.load(Ordering::Relaxed));
    lane.fold_digest(depth as u64);
    lane.fold_digest(u64::from(user_level));
    lane.fold_digest(u64::from(vector));
    lane.fold_digest(regs.orig_ax);
    // Where a synchronous event's frame says it happened is the seed's
    // doing; where an asynchronous one landed in its wait loop is the
    // clock's (on N CPUs, even under icount, what the other CPUs run moves
    // it), so for those the digest records only that it landed in the loop
    // (the `ip` invariant below checks that).
    lane.fold_digest(if level.kind.is_async() { ASYNC_LANDED } else { regs.ip.wrapping_sub(site) });
    // SAFETY: `regs` is an entry-stub frame (the hooks get nothing else).
    let extended = unsafe { ExtendedPtRegs::from_regs(regs) };
    let extension_address = extended as *mut ExtendedPtRegs as u64;
    let (saved_pkrs, generic) = (extended.arch.pks, extended.generic);
    let frame = Frame {
        lane,
        regs,
        vector,
        depth,
        level,
        repeat,
        user_level,
        regs_address,
        extension_address,
        saved_pkrs,
        generic,
        site,
        resume,
    };
    for invariant in &INVARIANTS {
        (invariant.check)(&frame, invariant.name);
    }
}

/// The vector is the one the level raised.
fn vector(frame: &Frame<'_>, name: &'static str) {
    let kind = frame.level.kind;
    if frame.vector != kind.vector() {
        frame.violation(
            name,
            format_args!(
                "vector {}, the level raised {} (vector {})",
                frame.vector,
                kind.name(),
                kind.vector()
            ),
        );
    }
}

/// The extension is exactly `GENERIC_PTREGS_SIZE` below `PtRegs`.
fn extension_offset(frame: &Frame<'_>, name: &'static str) {
    if frame.regs_address.wrapping_sub(frame.extension_address) != GENERIC_PTREGS_SIZE as u64 {
        frame.violation(
            name,
            format_args!(
                "extension at {:#x}, PtRegs at {:#x}",
                frame.extension_address, frame.regs_address
            ),
        );
    }
}

/// Every GPR in the frame is what the level loaded (on a repeat: what
/// its first run left).
fn gprs(frame: &Frame<'_>, name: &'static str) {
    let expected = if frame.repeat {
        expected_gprs_after(frame.lane, frame.depth, frame.level)
    } else {
        frame.lane.frame_gprs(frame.depth, frame.level)
    };
    for ((register, want), (_, got)) in expected.gprs().iter().zip(frame.regs.gprs().iter()) {
        if want != got {
            frame.violation(
                name,
                format_args!(
                    "{register} is {got:#018x} in the frame, the level loaded {want:#018x}"
                ),
            );
        }
    }
}

/// `ip` is the event's address (a fault), the one after it (a trap), or
/// inside the wait loop (an asynchronous event).
fn ip(frame: &Frame<'_>, name: &'static str) {
    let (kind, ip, site, resume) = (frame.level.kind, frame.regs.ip, frame.site, frame.resume);
    let ip_ok = if kind.is_async() {
        (site..=resume).contains(&ip)
    } else if kind.is_trap() {
        ip == resume
    } else {
        ip == site
    };
    if !ip_ok {
        frame
            .violation(name, format_args!("ip {ip:#x}; event at {site:#x}, resume at {resume:#x}"));
    }
}

/// CS (and for ring 3, SS) are Linux's selectors for the mode the level
/// ran in.
fn selectors(frame: &Frame<'_>, name: &'static str) {
    let regs = frame.regs;
    if frame.user_level {
        if regs.cs != u64::from(gdt::USER_CS.0) || regs.ss != u64::from(gdt::USER_DS.0) {
            frame.violation(name, format_args!("cs {:#x} ss {:#x}", regs.cs, regs.ss));
        }
    } else if regs.cs != u64::from(gdt::KERNEL_CS.0) {
        frame.violation(name, format_args!("cs {:#x}", regs.cs));
    }
}

/// A ring-3 level's frame is exactly at `task_pt_regs` of the user task.
fn user_frame(frame: &Frame<'_>, name: &'static str) {
    if !frame.user_level {
        return;
    }
    let expected_frame = sched::task::task_pt_regs(sched::current_slot()) as u64;
    if frame.regs_address != expected_frame {
        frame.violation(
            name,
            format_args!(
                "PtRegs at {:#x}, task_pt_regs is {expected_frame:#x}",
                frame.regs_address
            ),
        );
    }
}

/// User mode always runs with IF set.
fn user_interrupts_enabled(frame: &Frame<'_>, name: &'static str) {
    if frame.user_level && !frame.regs.interrupts_enabled() {
        frame.violation(name, format_args!("IF clear in a user frame"));
    }
}

/// `orig_ax` is the event's error code (or -1, or the syscall number).
fn orig_ax(frame: &Frame<'_>, name: &'static str) {
    let want = frame.level.kind.error_code();
    if frame.regs.orig_ax != want {
        frame
            .violation(name, format_args!("orig_ax {:#x}, expected {want:#x}", frame.regs.orig_ax));
    }
}

/// In the kernel, IF was set exactly where a maskable IRQ could land (an
/// NMI may land anywhere).
fn kernel_interrupt_flag(frame: &Frame<'_>, name: &'static str) {
    let kind = frame.level.kind;
    if !frame.user_level
        && kind.is_maskable_irq() != frame.regs.interrupts_enabled()
        && kind != Kind::SelfNmi
    {
        frame.violation(
            name,
            format_args!("IF {} in the interrupted flags", frame.regs.interrupts_enabled()),
        );
    }
}

/// The extension saved the PKRS the interrupted level ran with (on a
/// repeat: with its first run's edits).
fn saved_pkrs(frame: &Frame<'_>, name: &'static str) {
    if !pks::enabled() {
        return;
    }
    let want = if frame.repeat { expected_pkrs_after(frame.level) } else { frame.level.pkrs };
    if frame.saved_pkrs != want {
        frame.violation(
            name,
            format_args!(
                "saved PKRS {:08x}, the interrupted level ran with {want:08x}",
                frame.saved_pkrs
            ),
        );
    }
}

/// The handler runs with the default PKRS.
fn live_pkrs(frame: &Frame<'_>, name: &'static str) {
    if !pks::enabled() {
        return;
    }
    let live = pks::read_pkrs();
    if live != PKRS_DEFAULT {
        frame.violation(
            name,
            format_args!("live PKRS {live:08x} in the handler, default {PKRS_DEFAULT:08x}"),
        );
    }
}

/// `exit_rcu` is set only where the entry had to make RCU watch. RCU
/// watches everywhere the fuzzer runs but in user mode (it never idles),
/// so only an NMI from ring 3 must make RCU watch and say so; the other
/// ring-3 events enter through enter_from_user_mode, which needs no
/// exit_rcu.
fn exit_rcu(frame: &Frame<'_>, name: &'static str) {
    let want_exit_rcu = u8::from(frame.user_level && frame.level.kind == Kind::SelfNmi);
    if frame.generic.exit_rcu != want_exit_rcu {
        frame.violation(
            name,
            format_args!("exit_rcu {}, expected {want_exit_rcu}", frame.generic.exit_rcu),
        );
    }
}

/// An NMI saved the lockdep model's hardirqs flag as the level left it.
fn lockdep_saved(frame: &Frame<'_>, name: &'static str) {
    let saved = frame.generic.lockdep_hardirqs_enabled;
    if frame.level.kind == Kind::SelfNmi && saved != u8::from(frame.level.lockdep_model) {
        frame.violation(
            name,
            format_args!(
                "NMI saved hardirqs-enabled {saved}, the model said {}",
                frame.level.lockdep_model
            ),
        );
    }
}

/// Inside a handler, lockdep believes hardirqs are off.
fn lockdep_in_handler(frame: &Frame<'_>, name: &'static str) {
    if irqflags::lockdep_hardirqs_enabled() {
        frame.violation(name, format_args!("hardirqs 'enabled' inside a handler"));
    }
}

/// Is this a kernel-mode NMI's frame (on the copied frame at the NMI
/// stack top)? The nesting checks below apply to everything else.
fn is_kernel_nmi(frame: &Frame<'_>) -> bool {
    frame.level.kind == Kind::SelfNmi && !frame.user_level
}

/// A kernel-mode NMI's `PtRegs` ends exactly at the copied frame at the
/// NMI stack top.
fn nmi_frame(frame: &Frame<'_>, name: &'static str) {
    let expected = nmi::outermost_regs_address();
    if is_kernel_nmi(frame) && frame.regs_address != expected {
        frame.violation(
            name,
            format_args!("NMI PtRegs at {:#x}, expected {expected:#x}", frame.regs_address),
        );
    }
}

/// No NMI interrupted code on the NMI stack: a nested one must be latched.
fn nmi_not_latched(frame: &Frame<'_>, name: &'static str) {
    if is_kernel_nmi(frame) && gdt::ist_stack_of(frame.regs.sp) == Some(gdt::NMI_IST_INDEX) {
        frame.violation(name, format_args!("an NMI interrupted code on the NMI stack"));
    }
}

/// Any other frame is on the NMI stack if a kernel-mode NMI is an
/// ancestor, on the kernel stack otherwise (a ring-3 level's frame, NMI or
/// not, at task_pt_regs).
fn stack(frame: &Frame<'_>, name: &'static str) {
    if is_kernel_nmi(frame) {
        return;
    }
    let stack = gdt::ist_stack_of(frame.regs_address);
    let expected_stack =
        if nmi_ancestor(frame.lane, frame.depth) { Some(gdt::NMI_IST_INDEX) } else { None };
    if stack != expected_stack {
        frame.violation(
            name,
            format_args!(
                "frame at {:#x} on stack {stack:?}, expected {expected_stack:?}",
                frame.regs_address
            ),
        );
    }
}

/// Was level `depth - 1` a `preempt` level?
fn parent_preempted(lane: &OwnLane, depth: usize) -> bool {
    depth > 0 && lane.level(depth - 1).kind == Kind::Preempt
}

/// The first event the partner raised after a `preempt` level is on the
/// partner's own stack, while the preempted parent frame waits on the
/// other.
fn preempt_nesting(frame: &Frame<'_>, name: &'static str) {
    if is_kernel_nmi(frame) || !parent_preempted(frame.lane, frame.depth) {
        return;
    }
    let parent = frame.lane.frame_address[frame.depth - 1].load(Ordering::SeqCst);
    let partner = frame.lane.partner.get().map_or(0, |partner| partner.pid());
    if sched::current_pid() != partner || sched::on_current_stack(parent) {
        frame.violation(
            name,
            format_args!(
                "frame at {:#x} in PID {}, the preempted parent's at {parent:#x}",
                frame.regs_address,
                sched::current_pid()
            ),
        );
    }
}

/// Any other nested frame lies below its parent's frame and extension.
fn nesting(frame: &Frame<'_>, name: &'static str) {
    if is_kernel_nmi(frame) || frame.depth == 0 || parent_preempted(frame.lane, frame.depth) {
        return;
    }
    let parent = frame.lane.frame_address[frame.depth - 1].load(Ordering::SeqCst);
    if frame.regs_address + core::mem::size_of::<PtRegs>() as u64
        > parent - GENERIC_PTREGS_SIZE as u64
    {
        frame.violation(
            name,
            format_args!(
                "frame at {:#x} not below its parent's at {parent:#x}",
                frame.regs_address
            ),
        );
    }
}
