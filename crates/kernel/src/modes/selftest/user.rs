//! Selftests of user mode: SYSCALL and its two exits, user faults, frames
//! from user mode at `task_pt_regs`, the GS base in both directions, and
//! the copy helpers.
//!
//! Each test spawns user tasks (the programs of `user::programs`), waits
//! for them as init and checks their exit statuses and what the kernel
//! counted meanwhile. Every entry from user mode also runs `check_frame`,
//! whose failures fail the whole run (frame_errors).

use super::{check, observed_or_fail, Context, Outcome, PF_PRESENT};
use crate::arch::{gdt, idt, uaccess};
use crate::debug::result;
use crate::entry::events::{self, expect_event, FrameEdit};
use crate::entry::hooks;
use crate::entry::{nmi, paranoid};
use crate::sched::{self, task};
use crate::user::{self, programs, programs::Program, TASK_SIZE_MAX};
use core::sync::atomic::{AtomicU64, Ordering};
use extregs_regs::{selectors, PtRegs, X86_EFLAGS_TF};

/// Shell statuses of killed tasks (128 + Linux's signal number).
const KILLED_BY_SIGILL: i32 = 128 + 4;
const KILLED_BY_SIGTRAP: i32 = 128 + 5;
const KILLED_BY_SIGSEGV: i32 = 128 + 11;
/// `-ENOSYS` and `-EFAULT` as the programs exit with them.
const ENOSYS: i32 = 38;
const EFAULT: i32 = 14;

use crate::arch::idt::NMI_VECTOR;

/// Runs `program` as a user task to its end; its exit status (None when it
/// could not be spawned).
fn run_user(program: Program, arg0: u64, arg1: u64) -> Option<i32> {
    let handle = user::spawn(format_args!("st-{}", program.name), program, arg0, arg1).ok()?;
    Some(sched::wait(handle))
}

/// The frame errors so far.
fn frame_errors() -> u64 {
    result::frame_counts().1
}

/// A SYSCALL keeps every GPR but RCX and R11 (which hold the return RIP and
/// RFLAGS, checked too), RAX holds the result, and the return was SYSRET.
pub fn syscall_preserves_gprs(_: &Context) -> Outcome {
    let before = user::counts();
    let errors = frame_errors();
    let status = run_user(programs::GPR_CHECK, 0, 0);
    let after = user::counts();
    check!(status == Some(0), "gpr-check exited with {status:?} (a bitmask of wrong registers)");
    check!(after.sysret_exits > before.sysret_exits, "the getpid did not return with SYSRET");
    check!(frame_errors() == errors, "a frame failed the entry checks");
    Outcome::Pass
}

/// Both exits run: SYSRET when Linux's conditions hold; IRET with TF in
/// the returned flags (the first user instruction then single-steps); IRET
/// for a RIP at TASK_SIZE_MAX (canonical, but SYSRET is refused there);
/// IRET for a non-canonical RIP (never SYSRET, whose #GP an Intel CPU
/// raises in ring 0 on the user's stack: CVE-2012-0217). Real CPUs fault
/// on that IRETQ in ring 0 and the kernel makes it the task's fault
/// (`bad_iret`); QEMU's TCG takes the IRETQ and faults on the fetch in user
/// mode: either way the task, and only it, dies. The `bad_iret` path
/// itself runs for a bad SS, which TCG's IRETQ does check.
pub fn syscall_sysret_and_iret_paths(_: &Context) -> Outcome {
    let exit0 = user::user_address_of(programs::EXIT0);
    let cases: [(&str, u64, u64, i32, bool); 4] = [
        ("exit0", exit0, 0, 0, true),
        ("exit0 with TF", exit0, X86_EFLAGS_TF, 0, false),
        ("TASK_SIZE_MAX", TASK_SIZE_MAX, 0, KILLED_BY_SIGSEGV, false),
        ("non-canonical", 1 << 47, 0, KILLED_BY_SIGSEGV, false),
    ];
    for (name, target, flags, expected, by_sysret) in cases {
        let before = user::counts();
        let status = run_user(programs::SET_RETURN, target, flags);
        let after = user::counts();
        check!(status == Some(expected), "{name}: set-return exited with {status:?}");
        // The set_return syscall is the only one that returns (exit
        // doesn't), so it alone moves the SYSRET count.
        let sysrets = after.sysret_exits - before.sysret_exits;
        check!(sysrets == u64::from(by_sysret), "{name}: {sysrets} SYSRET exits");
        if flags & X86_EFLAGS_TF != 0 {
            check!(
                after.user_single_steps > before.user_single_steps,
                "{name}: the returned TF raised no single step"
            );
        }
    }
    let before = user::counts();
    let status = run_user(programs::SET_SS, u64::from(selectors::USER32_CS), 0);
    let after = user::counts();
    check!(status == Some(KILLED_BY_SIGSEGV), "bad SS: set-ss exited with {status:?}");
    check!(after.sysret_exits == before.sysret_exits, "bad SS: returned with SYSRET");
    check!(after.bad_irets == before.bad_irets + 1, "bad SS: no #GP on the IRETQ in ring 0");
    Outcome::Pass
}

/// A user task's ud2, its load from a kernel address and its int3 kill it
/// and only it: another user task running meanwhile finishes its syscalls.
pub fn user_faults_kill_only_the_faulting_task(_: &Context) -> Outcome {
    let kernel_address = &KERNEL_SECRET as *const AtomicU64 as u64;
    let before = sched::counts();
    let spawned = [
        user::spawn(format_args!("st-survivor"), programs::SYSCALL_LOOP, 2000, 0),
        user::spawn(format_args!("st-ud"), programs::UD2, 0, 0),
        user::spawn(format_args!("st-load"), programs::LOAD, kernel_address, 0),
        user::spawn(format_args!("st-int3"), programs::INT3, 0, 0),
    ];
    let expected = [0, KILLED_BY_SIGILL, KILLED_BY_SIGSEGV, KILLED_BY_SIGTRAP];
    let mut ok = true;
    for (spawned, expected) in spawned.into_iter().zip(expected) {
        let Ok(handle) = spawned else {
            return Outcome::Fail;
        };
        let status = sched::wait(handle);
        if status != expected {
            println!("# pid {}: status {status}, expected {expected}", handle.pid());
            ok = false;
        }
    }
    check!(ok, "a task ended otherwise than expected");
    let kills = sched::counts().user_kills - before.user_kills;
    check!(kills == 3, "{kills} tasks killed");
    Outcome::Pass
}

/// What the load test tries to read from user mode.
static KERNEL_SECRET: AtomicU64 = AtomicU64::new(0x5ec7_e7ca_fe00_0001);

/// Runs of the hook for the NMI from user mode (see below): the first, and
/// the repeat for the NMI latched inside it.
static USER_NMI_STEPS: AtomicU64 = AtomicU64::new(0);
/// The PtRegs address each of those two runs saw.
static USER_NMI_FRAMES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// NMIs from kernel mode that reached the hook (the nested one must not:
/// it is latched before its generic entry).
static NESTED_NMIS_HANDLED: AtomicU64 = AtomicU64::new(0);

/// The NMI handler for [`user_frames_sit_at_task_pt_regs`]: a "NMI" from
/// user mode is the single step of the user task, taken through the NMI
/// stub; it clears TF so the task runs on. The first run also sends a real
/// self-NMI, which arrives right there from kernel mode (the gate trick
/// does not block NMIs, as an exception's IRETQ inside a real one would
/// not): the entry must latch it and run this handler again on the same
/// frame (Linux's `exc_nmi` restart).
fn user_nmi_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector != NMI_VECTOR {
        return false;
    }
    if !regs.user_mode() {
        NESTED_NMIS_HANDLED.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    let run = USER_NMI_STEPS.fetch_add(1, Ordering::Relaxed) as usize;
    if let Some(frame) = USER_NMI_FRAMES.get(run) {
        frame.store(regs as *mut PtRegs as u64, Ordering::Relaxed);
    }
    if run == 0 {
        crate::arch::apic::send_self_nmi();
    }
    regs.flags &= !X86_EFLAGS_TF;
    true
}

/// Frames from user mode lie exactly at task_pt_regs: a SYSCALL's (its
/// own copy says so, with the hand-built CPU words), a #DB's (TF set by the
/// task itself: the IST frame moves to the task stack), an NMI's (the same
/// step with the #DB gate on the NMI stub: the real NMI entry from ring 3),
/// an int3's and timer IRQs'. check_frame checks each; none may fail.
pub fn user_frames_sit_at_task_pt_regs(_: &Context) -> Outcome {
    let errors = frame_errors();
    let before = user::counts();
    let Ok(handle) = user::spawn(format_args!("st-get-regs"), programs::GET_REGS, 0, 0) else {
        return Outcome::Fail;
    };
    let status = sched::wait(handle);
    check!(status == 0, "get-regs exited with {status}");
    let (frame, copy) = user::syscall::last_get_regs();
    let expected_frame = task::task_pt_regs(handle.slot()) as u64;
    check!(frame == expected_frame, "SYSCALL frame at {frame:#x}, not {expected_frame:#x}");
    check!(
        copy.cs == u64::from(selectors::USER_CS) && copy.ss == u64::from(selectors::USER_DS),
        "cs {:#x} ss {:#x}",
        copy.cs,
        copy.ss
    );
    check!(copy.orig_ax == user::syscall::numbers::SYS_GET_REGS, "orig_ax {:#x}", copy.orig_ax);
    check!(copy.cx == copy.ip && copy.r11 == copy.flags, "rcx/r11 are not the user RIP/RFLAGS");
    check!(
        [copy.r12, copy.r13, copy.r14, copy.r15]
            == [
                0x1212_1212_1212_1212,
                0x1313_1313_1313_1313,
                0x1414_1414_1414_1414,
                0x1515_1515_1515_1515
            ],
        "r12-r15 are not the task's"
    );
    // #DB from user mode: the task sets TF itself.
    let status = run_user(programs::SINGLE_STEP, 0, 0);
    check!(status == Some(0), "single-step exited with {status:?}");
    let after_db = user::counts();
    check!(after_db.user_single_steps > before.user_single_steps, "no #DB from user mode");
    // The NMI entry from user mode, deterministically, and a real NMI
    // latched inside its handler.
    USER_NMI_STEPS.store(0, Ordering::Relaxed);
    NESTED_NMIS_HANDLED.store(0, Ordering::Relaxed);
    for frame in &USER_NMI_FRAMES {
        frame.store(0, Ordering::Relaxed);
    }
    let latched_before = nmi::user_nmis_latched();
    let mut nmi_frame = 0;
    let status = hooks::with_event_hook(user_nmi_hook, || {
        idt::with_debug_gate(idt::stub_address(NMI_VECTOR), Some(gdt::NMI_IST_INDEX), || {
            let handle = user::spawn(format_args!("st-nmi"), programs::SINGLE_STEP, 0, 0).ok()?;
            nmi_frame = task::task_pt_regs(handle.slot()) as u64;
            Some(sched::wait(handle))
        })
    });
    paranoid::reset_debug_status();
    check!(status == Some(0), "single-step under the NMI gate exited with {status:?}");
    let steps = USER_NMI_STEPS.load(Ordering::Relaxed);
    check!(steps == 2, "the user NMI's handler ran {steps} times (once, then the repeat)");
    let frames = USER_NMI_FRAMES.each_ref().map(|frame| frame.load(Ordering::Relaxed));
    check!(frames == [nmi_frame; 2], "user NMI frames {frames:x?}, task_pt_regs {nmi_frame:#x}");
    let nested = NESTED_NMIS_HANDLED.load(Ordering::Relaxed);
    check!(nested == 0, "{nested} NMIs nested in the user NMI ran their own handler");
    let latched = nmi::user_nmis_latched() - latched_before;
    check!(latched == 1, "{latched} NMIs latched inside the user NMI (one expected)");
    check!(user::counts().user_nmis > after_db.user_nmis, "the NMI was not counted as a user one");
    // int3 from user mode (killed), timer IRQs in user mode.
    check!(run_user(programs::INT3, 0, 0) == Some(KILLED_BY_SIGTRAP), "int3 did not kill");
    sched::start_tick();
    let spinners = [
        user::spawn(format_args!("st-spin"), programs::SPIN, 3000, 0),
        user::spawn(format_args!("st-spin"), programs::SPIN, 3000, 0),
    ];
    let mut statuses = [None; 2];
    for (status, spawned) in statuses.iter_mut().zip(spinners) {
        *status = spawned.ok().map(sched::wait);
    }
    sched::stop_tick();
    check!(statuses == [Some(0), Some(0)], "spinners exited with {statuses:?}");
    let after = user::counts();
    check!(after.user_irqs > after_db.user_irqs, "no timer IRQ from user mode");
    check!(frame_errors() == errors, "a user frame failed the entry checks");
    Outcome::Pass
}

/// The GS base is right in both directions: two user tasks read their own
/// PID through %gs before and after each syscall and yield (each switch
/// carries the user GS base), and every entry checks the kernel's GS base
/// (check_frame). Init's own user GS base is back afterwards.
pub fn gs_base_right_after_every_return(_: &Context) -> Outcome {
    let errors = frame_errors();
    let spawned = [
        user::spawn(format_args!("st-gs-1"), programs::GS_CHECK, 500, 0),
        user::spawn(format_args!("st-gs-2"), programs::GS_CHECK, 500, 0),
    ];
    let mut statuses = [None; 2];
    for (status, spawned) in statuses.iter_mut().zip(spawned) {
        *status = spawned.ok().map(sched::wait);
    }
    check!(statuses == [Some(0), Some(0)], "gs-check exited with {statuses:?} (4: wrong GS)");
    let kernel_gs = x86_64::registers::model_specific::GsBase::read().as_u64();
    let user_gs = x86_64::registers::model_specific::KernelGsBase::read().as_u64();
    check!(kernel_gs == gdt::kernel_gs_base(), "kernel GS base {kernel_gs:#x}");
    check!(user_gs == 0, "init's user GS base is {user_gs:#x}, not 0");
    let (rsp0, per_cpu_top) = (gdt::kernel_stack_top(), extregs_entry_asm::top_of_stack());
    check!(rsp0 == per_cpu_top, "TSS.RSP0 {rsp0:#x} but the per-CPU stack top {per_cpu_top:#x}");
    check!(frame_errors() == errors, "an entry found the wrong GS base");
    Outcome::Pass
}

/// `copy_from_user` refuses a kernel pointer, an unmapped user pointer and
/// one that straddles the end of user space with -EFAULT (never a kernel
/// fault); an unknown syscall number is -ENOSYS.
pub fn syscall_pointers_and_numbers_refused(_: &Context) -> Outcome {
    let kernel = &KERNEL_SECRET as *const AtomicU64 as u64;
    let unmapped = user::USER_SPACE_BASE + 0x3000_0000;
    let straddling = TASK_SIZE_MAX - 8;
    for (name, pointer) in [("kernel", kernel), ("unmapped", unmapped), ("straddling", straddling)]
    {
        let status = run_user(programs::WRITE, pointer, 16);
        check!(status == Some(EFAULT), "{name} pointer: write exited with {status:?}");
    }
    let status = run_user(programs::WRITE, user::USER_TOP_PAGE, 0);
    check!(status == Some(0), "an empty write at the top page exited with {status:?}");
    let status = run_user(programs::RAW_SYSCALL, 9999, 0);
    check!(status == Some(ENOSYS), "syscall 9999 exited with {status:?}");
    Outcome::Pass
}

/// PKS vs user mode: user mode runs with the default PKRS (the extension of
/// its SYSCALL frame says so), which denies every key but 0, and still
/// reads a *user* page tagged with key 1: PKRS never applies to user pages
/// (PKU is off, so the key is inert for user accesses too).
pub fn pkrs_never_applies_to_user_mode(context: &Context) -> Outcome {
    let Some(page) = context.user_pkey_page else {
        return Outcome::Skip("no PKS");
    };
    let status = run_user(programs::LOAD, page.address.as_u64(), 0);
    let expected = ((super::PKEY_PAGE_FILL >> 8) & 0xff) as i32;
    check!(
        status == Some(expected),
        "a user load from a key-{} user page exited with {status:?}, expected {expected}",
        page.pkey
    );
    let status = run_user(programs::RAW_SYSCALL, user::syscall::numbers::SYS_GET_USER_PKRS, 0);
    // The program exits with -RAX (its low byte).
    let expected = (u64::from(crate::arch::pks::PKRS_DEFAULT).wrapping_neg() & 0xff) as i32;
    check!(
        status == Some(expected),
        "the PKRS user mode ran with gave status {status:?}, the default gives {expected}"
    );
    Outcome::Pass
}

/// RFLAGS.AC: with SMAP, kernel access to user pages allowed.
const X86_EFLAGS_AC: u64 = 1 << 18;

/// #PF error-code bit: an instruction fetch.
const PF_INSTRUCTION: u64 = 1 << 4;

/// SMAP: a kernel load from a user page outside the copy helpers' STAC
/// window is a #PF (present, supervisor, read); an exception inside the
/// window runs its handler with AC clear and returns into the window; and
/// `copy_from_user` reads the program text.
pub fn smap_stops_kernel_access_to_user_memory(_: &Context) -> Outcome {
    if !uaccess::smap_enabled() {
        return Outcome::Skip("no SMAP on this CPU");
    }
    let address = user::user_address_of(programs::EXIT0);
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "movq ({address}), %rcx", address = in(reg) address, out("rcx") _);
    let observed = observed_or_fail!();
    check!(observed.vector == 14, "vector {}", observed.vector);
    check!(observed.cr2 == address, "CR2 {:#x}, not {address:#x}", observed.cr2);
    check!(
        observed.regs.orig_ax == PF_PRESENT,
        "error code {:#x}: not a supervisor read of a present page",
        observed.regs.orig_ax
    );
    // An exception inside the STAC window: its handler runs with AC clear
    // (the entry's CLAC), and IRETQ gives the window back its AC.
    events::arm(FrameEdit::None);
    let back_in_window = uaccess::with_user_access(|| {
        expect_event!(setup: [], event: "int3");
        x86_64::registers::rflags::read()
            .contains(x86_64::registers::rflags::RFlags::ALIGNMENT_CHECK)
    });
    let observed = observed_or_fail!();
    check!(observed.regs.flags & X86_EFLAGS_AC != 0, "the int3 did not interrupt AC=1 code");
    check!(!observed.handler_ac, "the handler ran with AC set (no CLAC on entry)");
    check!(back_in_window, "AC was not restored by the IRETQ");
    let mut first = [0u8; 2];
    check!(uaccess::copy_from_user(&mut first, address).is_ok(), "copy_from_user refused");
    // `xor %edi, %edi` (31 ff) starts the exit0 program.
    check!(first == [0x31, 0xff], "user text reads {first:02x?}");
    Outcome::Pass
}

/// SMEP: the kernel jumping into a user page faults on the fetch (#PF with
/// the instruction bit, RIP and CR2 the user address).
pub fn smep_stops_kernel_execution_of_user_pages(_: &Context) -> Outcome {
    if !crate::arch::cpu::detect().smep {
        return Outcome::Skip("no SMEP on this CPU");
    }
    let target = user::user_address_of(programs::EXIT0);
    events::arm(FrameEdit::None);
    expect_event!(setup: [], event: "jmp *{target}", target = in(reg) target);
    let observed = observed_or_fail!();
    check!(observed.vector == 14, "vector {}", observed.vector);
    check!(observed.regs.ip == target && observed.cr2 == target, "RIP {:#x}", observed.regs.ip);
    check!(
        observed.regs.orig_ax == PF_PRESENT | PF_INSTRUCTION,
        "error code {:#x}: not a supervisor fetch from a present page",
        observed.regs.orig_ax
    );
    check!(observed.regs.cs == u64::from(selectors::KERNEL_CS), "not a kernel frame");
    Outcome::Pass
}

/// What [`nested_frames_hook`] recorded: the IRQ's and the NMI's PtRegs
/// addresses, the RSP each interrupted, and whether each extension held the
/// default PKRS (the kernel code they interrupted ran with it).
static NEST_IRQ_FRAME: AtomicU64 = AtomicU64::new(0);
static NEST_IRQ_INTERRUPTED_SP: AtomicU64 = AtomicU64::new(0);
static NEST_NMI_FRAME: AtomicU64 = AtomicU64::new(0);
static NEST_NMI_INTERRUPTED_SP: AtomicU64 = AtomicU64::new(0);
static NEST_BAD_EXTENSIONS: AtomicU64 = AtomicU64::new(0);

/// Counts an extension whose saved PKRS is not the default (the code every
/// level interrupted ran with it).
fn note_extension(regs: &mut PtRegs) {
    // SAFETY: event hooks are only offered entry frames.
    let saved = unsafe { extregs_regs::ExtendedPtRegs::from_regs(regs) }.arch.pks;
    if crate::arch::pks::enabled() && saved != crate::arch::pks::PKRS_DEFAULT {
        NEST_BAD_EXTENSIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The self-IPI that interrupted the `self_ipi` syscall sends a self-NMI
/// from its handler; both frames are recorded. Never claims (the IRQ's
/// handler must still EOI).
fn nested_frames_hook(regs: &mut PtRegs, vector: u8) -> bool {
    if vector == crate::arch::apic::SELF_IPI_VECTOR
        && !regs.user_mode()
        && NEST_IRQ_FRAME.load(Ordering::Relaxed) == 0
    {
        NEST_IRQ_FRAME.store(regs as *mut PtRegs as u64, Ordering::Relaxed);
        NEST_IRQ_INTERRUPTED_SP.store(regs.sp, Ordering::Relaxed);
        note_extension(regs);
        crate::arch::apic::send_self_nmi();
    } else if vector == NMI_VECTOR
        && NEST_IRQ_FRAME.load(Ordering::Relaxed) != 0
        && NEST_NMI_FRAME.load(Ordering::Relaxed) == 0
    {
        NEST_NMI_FRAME.store(regs as *mut PtRegs as u64, Ordering::Relaxed);
        NEST_NMI_INTERRUPTED_SP.store(regs.sp, Ordering::Relaxed);
        note_extension(regs);
    }
    false
}

/// A syscall inside which an IRQ and then an NMI nest: the SYSCALL frame at
/// task_pt_regs, the IRQ's frame below it on the same task stack (on the
/// syscall's own stack frames), the NMI's on the NMI stack, interrupting the
/// IRQ handler below the IRQ frame; each with its extension right below
/// (check_frame) and the saved PKRS of what it interrupted.
pub fn syscall_irq_nmi_nest_each_with_its_extension(_: &Context) -> Outcome {
    for frame in [&NEST_IRQ_FRAME, &NEST_IRQ_INTERRUPTED_SP, &NEST_NMI_FRAME] {
        frame.store(0, Ordering::Relaxed);
    }
    NEST_NMI_INTERRUPTED_SP.store(0, Ordering::Relaxed);
    NEST_BAD_EXTENSIONS.store(0, Ordering::Relaxed);
    let errors = frame_errors();
    let Ok(handle) = user::spawn(
        format_args!("st-nest"),
        programs::RAW_SYSCALL,
        user::syscall::numbers::SYS_SELF_IPI,
        0,
    ) else {
        return Outcome::Fail;
    };
    let status = hooks::with_event_hook(nested_frames_hook, || sched::wait(handle));
    check!(status == 0, "the self_ipi syscall exited with {status} (110: the IRQ never came)");
    let stack = task::stack_range(handle.slot());
    let syscall_frame = task::task_pt_regs(handle.slot()) as u64;
    let irq_frame = NEST_IRQ_FRAME.load(Ordering::Relaxed);
    let irq_sp = NEST_IRQ_INTERRUPTED_SP.load(Ordering::Relaxed);
    let nmi_frame = NEST_NMI_FRAME.load(Ordering::Relaxed);
    let nmi_sp = NEST_NMI_INTERRUPTED_SP.load(Ordering::Relaxed);
    println!(
        "# SYSCALL frame {syscall_frame:#x} (task_pt_regs), IRQ frame {irq_frame:#x}, NMI frame {nmi_frame:#x}"
    );
    check!(irq_frame != 0 && nmi_frame != 0, "the IRQ or the NMI was not seen nested");
    check!(
        stack.contains(&irq_frame) && irq_sp < syscall_frame && irq_frame < irq_sp,
        "the IRQ frame is not below the syscall's on the task stack"
    );
    check!(
        gdt::ist_stack_of(nmi_frame) == Some(gdt::NMI_IST_INDEX),
        "the NMI frame is not on the NMI stack"
    );
    check!(
        stack.contains(&nmi_sp) && nmi_sp < irq_frame,
        "the NMI did not interrupt the IRQ handler below the IRQ frame (RSP {nmi_sp:#x})"
    );
    let bad = NEST_BAD_EXTENSIONS.load(Ordering::Relaxed);
    check!(bad == 0, "{bad} extensions did not save the default PKRS");
    check!(frame_errors() == errors, "a nested frame failed the entry checks");
    Outcome::Pass
}
