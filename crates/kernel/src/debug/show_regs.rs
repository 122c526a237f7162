//! `show_regs`: Linux's x86_64 `__show_regs` layout, then the extension.
//!
//! ```text
//! CPU: 0 PID: 1 Comm: init
//! RIP: 0010:extregs_kernel::demo::run+0x1a4/0x5f0
//! Code: 48 89 ... <cc> 90 ...
//! RSP: 0018:0000010000017d48 EFLAGS: 00000046
//! RAX: ... RBX: ... RCX: ...
//! ...
//! CR2: ... CR3: ... CR4: ...
//! PKRS: 55555550 live: 55555554 task: 55555554 rights: 0:rw 1:rw 2:-- ... 15:--
//! GENERIC: exit_rcu: 0 lockdep_hardirqs_enabled: 0 vector: 0x08 extension at ... on the DF stack
//! ```
//!
//! A frame from user mode reads `RIP: 0033:0x7f8000000134` (raw: the
//! kernel's symbols don't apply) and `RSP: 002b:...`, its `Code:` bytes
//! read from user memory with `copy_from_user`.

use crate::arch::{memory, pks};
use crate::debug::symbols;
use extregs_regs::{EntryVector, ExtendedPtRegs, PtRegs, GENERIC_PTREGS_SIZE};
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::registers::model_specific::{FsBase, GsBase, KernelGsBase};
use x86_64::registers::segmentation::{Segment, DS, ES, FS, GS};
use x86_64::VirtAddr;

/// Bytes of code shown before RIP (Linux's `PROLOGUE_SIZE`).
const CODE_PROLOGUE_BYTES: u64 = 42;
/// Bytes shown in all (Linux's `OPCODE_BUFSIZE`).
const CODE_BYTES: u64 = 64;

/// Prints the running task (Linux's `CPU: 0 PID: 3 Comm: worker-2`
/// line), the frame and its extension. `PKRS:` tells apart the value the
/// frame saved (what the interrupted context ran with), the live one (the
/// handler's) and the task's own (what it runs with in task context).
///
/// # Safety
///
/// `regs` must be the `PtRegs` of an extended frame (built by an entry stub,
/// or a whole `ExtendedPtRegs`), as for `ExtendedPtRegs::from_regs_ref`.
pub unsafe fn show_regs(regs: &PtRegs) {
    let task = crate::sched::current();
    println!("CPU: {} PID: {} Comm: {}", crate::arch::percpu::this_cpu(), task.pid, task.name);
    show_instruction_and_gprs(regs);
    println!(
        "FS:  {:016x}({:04x}) GS:{:016x}({:04x}) knlGS:{:016x}",
        FsBase::read().as_u64(),
        FS::get_reg().0,
        GsBase::read().as_u64(),
        GS::get_reg().0,
        KernelGsBase::read().as_u64()
    );
    println!(
        "CS:  {:04x} DS: {:04x} ES: {:04x} CR0: {:016x}",
        regs.cs,
        DS::get_reg().0,
        ES::get_reg().0,
        Cr0::read_raw()
    );
    let (cr3_frame, cr3_flags) = Cr3::read_raw();
    println!(
        "CR2: {:016x} CR3: {:016x} CR4: {:016x}",
        Cr2::read_raw(),
        cr3_frame.start_address().as_u64() | u64::from(cr3_flags),
        Cr4::read_raw()
    );
    // SAFETY: per the function contract.
    let frame = unsafe { ExtendedPtRegs::from_regs_ref(regs) };
    show_extension(frame);
}

/// An interrupt frame met inside a call trace: the rows Linux prints for a
/// nested pt_regs (RIP with Code, RSP and EFLAGS, the GPRs), then that
/// frame's extension.
pub fn show_nested_regs(frame: &ExtendedPtRegs) {
    show_instruction_and_gprs(&frame.regs);
    show_extension(frame);
}

/// RIP (symbolised) and Code, RSP and EFLAGS, the GPRs.
fn show_instruction_and_gprs(regs: &PtRegs) {
    // A user RIP is printed raw, as Linux's %pS does for user addresses
    // (`RIP: 0033:0x7f8000000134`); the kernel's symbols never apply.
    match symbols::lookup(regs.ip).filter(|_| !regs.user_mode()) {
        Some(symbol) => println!("RIP: {:04x}:{}", regs.cs, symbol),
        None if regs.user_mode() => println!("RIP: {:04x}:{:#x}", regs.cs, regs.ip),
        None => println!("RIP: {:04x}:{:#018x}", regs.cs, regs.ip),
    }
    if regs.user_mode() {
        show_user_code(regs.ip);
    } else {
        show_code(regs.ip);
    }
    if regs.has_error_code() {
        println!(
            "RSP: {:04x}:{:016x} EFLAGS: {:08x} ORIG_RAX: {:016x}",
            regs.ss, regs.sp, regs.flags, regs.orig_ax
        );
    } else {
        println!("RSP: {:04x}:{:016x} EFLAGS: {:08x}", regs.ss, regs.sp, regs.flags);
    }
    println!("RAX: {:016x} RBX: {:016x} RCX: {:016x}", regs.ax, regs.bx, regs.cx);
    println!("RDX: {:016x} RSI: {:016x} RDI: {:016x}", regs.dx, regs.si, regs.di);
    println!("RBP: {:016x} R08: {:016x} R09: {:016x}", regs.bp, regs.r8, regs.r9);
    println!("R10: {:016x} R11: {:016x} R12: {:016x}", regs.r10, regs.r11, regs.r12);
    println!("R13: {:016x} R14: {:016x} R15: {:016x}", regs.r13, regs.r14, regs.r15);
}

fn show_code(ip: u64) {
    let start = ip.wrapping_sub(CODE_PROLOGUE_BYTES);
    let end = start.wrapping_add(CODE_BYTES - 1);
    let readable =
        [start, end].iter().all(|&address| VirtAddr::try_new(address).is_ok_and(memory::is_mapped));
    if !readable {
        println!("Code: Unable to access opcode bytes at {:#x}.", start);
        return;
    }
    print!("Code:");
    for address in start..=end {
        // SAFETY: both ends of the range are mapped and it spans at most two
        // pages; code pages use pkey 0, which every PKRS the kernel runs
        // handlers with allows.
        let byte = unsafe { core::ptr::read_volatile(address as *const u8) };
        if address == ip {
            print!(" <{byte:02x}>");
        } else {
            print!(" {byte:02x}");
        }
    }
    println!();
}

/// The `Code:` line of a user frame, read with `copy_from_user` (Linux's
/// `copy_from_user_nmi`): never a kernel fault, whatever the RIP.
pub fn show_user_code(ip: u64) {
    let start = ip.wrapping_sub(CODE_PROLOGUE_BYTES);
    let mut bytes = [0u8; CODE_BYTES as usize];
    if crate::arch::uaccess::copy_from_user(&mut bytes, start).is_err() {
        println!("Code: Unable to access opcode bytes at {:#x}.", start);
        return;
    }
    print!("Code:");
    for (offset, byte) in bytes.iter().enumerate() {
        if offset as u64 == CODE_PROLOGUE_BYTES {
            print!(" <{byte:02x}>");
        } else {
            print!(" {byte:02x}");
        }
    }
    println!();
}

fn show_extension(frame: &ExtendedPtRegs) {
    if pks::enabled() {
        print!(
            "PKRS: {:08x} live: {:08x} task: {:08x} rights:",
            frame.arch.pks,
            pks::read_pkrs(),
            crate::sched::current_pkrs()
        );
        for pkey in 0..16 {
            print!(" {}:{}", pkey, pks::key_rights(frame.arch.pks, pkey).short());
        }
        println!();
    } else {
        println!("PKRS: none (this CPU has no PKS)");
    }
    println!(
        "GENERIC: exit_rcu: {} lockdep_hardirqs_enabled: {} vector: {} extension at {:016x} (PtRegs - {}) on the {} stack",
        frame.generic.exit_rcu,
        frame.generic.lockdep_hardirqs_enabled,
        EntryVectorName(frame.generic.entry_vector()),
        frame as *const ExtendedPtRegs as u64,
        GENERIC_PTREGS_SIZE,
        crate::arch::gdt::ist_stack_of(frame as *const ExtendedPtRegs as u64)
            .map_or("task", crate::arch::gdt::ist_stack_name)
    );
}

/// How the GENERIC line names [`GenericExtRegs::vector`]: `0xec` (an IDT
/// vector, as Linux prints vectors), `syscall`, or `unrecorded` (a value no
/// entry stub writes: a frame other code built, or a corrupt one). A hard
/// interrupt's frame whose handler is done still prints its vector.
///
/// [`GenericExtRegs::vector`]: extregs_regs::GenericExtRegs::vector
struct EntryVectorName(EntryVector);

impl core::fmt::Display for EntryVectorName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            EntryVector::Idt(vector) => write!(f, "{vector:#04x}"),
            EntryVector::Syscall => f.write_str("syscall"),
            EntryVector::Unknown => f.write_str("unrecorded"),
        }
    }
}
