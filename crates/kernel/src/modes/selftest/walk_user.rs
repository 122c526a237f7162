//! The breakpoint walks of the ways in from user mode that SYSCALL does
//! not take: the IST entries (#DB, NMI) from user mode, which move their
//! frame from the IST stack to `task_pt_regs` (`IST_FRAME_TO_TASK_STACK`)
//! and then run as an ordinary user entry; an exception's way in
//! through the common tail (its SWAPGS and the fence behind it); and the
//! `bad_iret` fixup of a faulting IRET to user mode. The walk
//! itself, and what its handler checks at each instruction, is
//! [`super::walk`]'s.

use super::walk::{absorbed, absorbing, entry_at_every_address, WalkEntry};
use super::{check, Context, Outcome};
use crate::arch::idt::{self, Gate, BREAKPOINT_VECTOR, DEBUG_VECTOR};
use crate::arch::{gdt, percpu};
use crate::debug::result;
use crate::debug::symbols::function_range;
use crate::sched;
use crate::user;
use crate::user::programs::{self, Program, IST_WALK_DEBUG_VECTOR, IST_WALK_NMI_VECTOR};
use extregs_regs::NMI_VECTOR;

/// A real NMI entry at every instruction of a #DB from user mode, and a
/// real #DB entry at every instruction of an NMI from user mode, up to the
/// jump into the common path (which the other walks cover); and a real
/// NMI entry, then a real #DB entry, at every instruction of an int3 from
/// user mode through the common tail, and of the common tail's `bad_iret`
/// fixup ([`bad_iret_walk`]). User tasks pinned to the walking CPU drive
/// them:
/// `walk-int` runs `int $0xf0` or `int $0xf1` from ring 3 through
/// user gates that the walk routes to the #DB and the NMI stub on their
/// IST stacks, or an int3. The walk's hook takes the #DB, the NMI
/// or the int3 over once its Rust entry runs, so the task goes on, and
/// must exit 0 (`walk-int` checks every GPR after its int, and its
/// user GS base); every entry from user mode checks its frame at
/// `task_pt_regs` (frame_errors). At each instruction the handler checks
/// the kernel's GS base: the window between the IST entry and its SWAPGS,
/// where the user's GS base is live in kernel mode, is the point. An NMI
/// can't land in the NMI's own way in (NMIs are blocked there), so that one
/// is walked with the #DB only; and a #DB in the #DB's own way in, before
/// its IST shift, would land on the same IST frame, the one thing that
/// entry assumes can't happen, so that one is walked with the NMI only.
pub fn nmi_at_every_instruction_of_the_ist_entries_from_user(_: &Context) -> Outcome {
    let (common, _) = extregs_entry_asm::common_paths();
    let ranges = (
        function_range(idt::stub_address(DEBUG_VECTOR)),
        function_range(idt::stub_address(NMI_VECTOR)),
        function_range(common),
    );
    let (Some(debug_stub), Some(nmi_stub), Some(common_tail)) = ranges else {
        return Outcome::Skip("no symbol table for the entry stubs");
    };
    let errors = result::frame_counts().1;
    let this_cpu = percpu::this_cpu();
    // One task a step; `absorbing` counts the events it took over.
    let run_task = |program: Program, rdi: u64| {
        let before = absorbed();
        let spawned = user::spawn_on(format_args!("st-walk-ist"), program, rdi, 0, 1 << this_cpu);
        let Ok(handle) = spawned else {
            return Err("the task could not be spawned");
        };
        match (sched::wait(handle), absorbed() - before) {
            (0, 1) => Ok(()),
            (0, _) => Err("the task's event did not reach its handler once"),
            _ => Err("the task did not exit 0"),
        }
    };
    let user_gate =
        |vector: u8, stub: u64, ist: u16| Gate { vector, stub, ist: Some(ist), user: true };
    let debug_from_user = absorbing(DEBUG_VECTOR, || {
        entry_at_every_address(
            "#DB from user mode",
            WalkEntry::Nmi,
            core::slice::from_ref(&debug_stub),
            1,
            Some(user_gate(IST_WALK_DEBUG_VECTOR, debug_stub.start, gdt::DEBUG_IST_INDEX)),
            |_| run_task(programs::WALK_INT, 0),
        )
    });
    let nmi_from_user = absorbing(NMI_VECTOR, || {
        entry_at_every_address(
            "NMI from user mode",
            WalkEntry::Debug,
            core::slice::from_ref(&nmi_stub),
            1,
            Some(user_gate(IST_WALK_NMI_VECTOR, nmi_stub.start, gdt::NMI_IST_INDEX)),
            |_| run_task(programs::WALK_INT, 1),
        )
    });
    let (Ok(debug_from_user), Ok(nmi_from_user)) = (debug_from_user, nmi_from_user) else {
        return Outcome::Fail;
    };
    // The int3 and bad-IRET walks, with each entry: (int3, bad IRET).
    let mut counts = [(0, 0); 2];
    for (entry, count) in [WalkEntry::Nmi, WalkEntry::Debug].into_iter().zip(&mut counts) {
        // Other entries from user mode pass the common tail too (a page
        // fault on the task's stack, say), hence more than one hit.
        let int3_from_user = absorbing(BREAKPOINT_VECTOR, || {
            entry_at_every_address(
                "int3 from user mode, common tail",
                entry,
                core::slice::from_ref(&common_tail),
                4,
                None,
                |_| run_task(programs::WALK_INT, 2),
            )
        });
        let (Ok(int3_from_user), Ok(bad_iret)) =
            (int3_from_user, bad_iret_walk(entry, &common_tail))
        else {
            return Outcome::Fail;
        };
        *count = (int3_from_user, bad_iret);
    }
    check!(counts[0] == counts[1], "the NMI and the #DB walks counted {counts:?}");
    let (int3_from_user, bad_iret) = counts[0];
    check!(
        result::frame_counts().1 == errors,
        "a user frame failed the entry checks during the walk"
    );
    // Every instruction, exactly: the #DB's way in from user mode is 48
    // (push -1, the CS test and its jnz, IST_FRAME_TO_TASK_STACK's 12:
    // SWAPGS, lfence, the scratch store, the RSP moves, six pushes, the
    // scratch load; PUSH_AND_CLEAR_REGS' 31, the vector, the jmp), the
    // NMI's 48 too (the CS test and jnz, push -1, then the same), and the
    // common tail's from user mode 16 (the CS test and jnz, SWAPGS, lfence,
    // ASM_CLAC's testb and jz, cld, CALL_EXTREGS_ENTRY's 7, the CS test and
    // the jnz to the IRET exit), plus the CLAC itself with SMAP.
    check!(debug_from_user == 48, "{debug_from_user} instructions of the #DB from user mode");
    check!(nmi_from_user == 48, "{nmi_from_user} instructions of the NMI from user mode");
    let tail = 16 + u64::from(crate::arch::uaccess::smap_enabled());
    check!(int3_from_user == tail, "{int3_from_user} instructions of the common tail from user");
    // The bad IRET's way: the CS test and jnz, the IRETQ-RIP check's lea,
    // cmp and jne (5), the fixup branch's SWAPGS, lfence, ASM_CLAC's testb
    // and jz, cld, the vector kept, the call with its stack alignment, the
    // new RSP, the vector back, the jmp (12), the user path's lfence,
    // ASM_CLAC's testb and jz, cld and CALL_EXTREGS_ENTRY up to its call
    // (10): 27, plus the two CLACs with SMAP. The task dies in the exit
    // work, so nothing after the call runs.
    let smap = u64::from(crate::arch::uaccess::smap_enabled());
    check!(bad_iret == 27 + 2 * smap, "{bad_iret} instructions of the bad IRET's common tail");
    Outcome::Pass
}

/// Status of a task killed by SIGSEGV.
const KILLED_BY_SIGSEGV: i32 = 128 + 11;

/// `entry` at every instruction of the common tail that a #GP on the IRET
/// exit to user mode takes (Linux's `bad_iret`): the `set-ss`
/// task asks to return with a 32-bit code selector as SS, its IRETQ faults
/// in ring 0 after the exit's SWAPGS, and the common tail swaps GS back,
/// calls the fixup that rebuilds the frame as the user's at
/// `task_pt_regs`, and goes on as from user mode, where the task is killed
/// with SIGSEGV. At every step the task must be killed so, after exactly
/// one bad IRET.
fn bad_iret_walk(entry: WalkEntry, common_tail: &core::ops::Range<u64>) -> Result<u64, ()> {
    let this_cpu = percpu::this_cpu();
    let user32_cs = u64::from(extregs_regs::selectors::USER32_CS);
    // A line per killed task would be one per byte walked.
    user::set_show_unhandled_signals(false);
    let walk = entry_at_every_address(
        "#GP on the IRET to user mode, common tail",
        entry,
        core::slice::from_ref(common_tail),
        4,
        None,
        |_| {
            let before = user::counts().bad_irets;
            let spawned = user::spawn_on(
                format_args!("st-walk-iret"),
                programs::SET_SS,
                user32_cs,
                0,
                1 << this_cpu,
            );
            let Ok(handle) = spawned else {
                return Err("the task could not be spawned");
            };
            match (sched::wait(handle), user::counts().bad_irets - before) {
                (KILLED_BY_SIGSEGV, 1) => Ok(()),
                (KILLED_BY_SIGSEGV, _) => Err("not exactly one IRET faulted"),
                _ => Err("set-ss was not killed by SIGSEGV"),
            }
        },
    );
    user::set_show_unhandled_signals(true);
    walk
}
