//! `execve` for the one program `mode=exec` runs: the ELF from fw_cfg
//! (`opt/extregs/program`) loaded into a fresh address space, Linux's
//! initial stack, and the first return to user mode.
//!
//! The initial stack (Linux's `create_elf_tables`), from [`mm::STACK_TOP`]
//! down:
//!
//! ```text
//!   | 0 (8 bytes)                  |  <- STACK_TOP
//!   | argv strings, "x86_64",      |
//!   | AT_RANDOM's 16 bytes         |
//!   +------------------------------+  16-byte aligned below
//!   | AT_NULL 0 | auxv pairs ...   |
//!   | 0 (envp end)                 |
//!   | 0 (argv end) | argv[argc-1]  |
//!   | ... argv[0]                  |
//!   | argc                         |  <- RSP at entry (16-byte aligned)
//! ```
//!
//! The process starts with every GPR 0 but RSP, RFLAGS 0x202, the reset
//! x87/SSE state, and FS/GS bases 0, as Linux's `start_thread`.

use super::mm::{self, AddressSpace, PAGE, PROT_EXEC, PROT_READ, PROT_WRITE};
use super::signal::SignalState;
use super::{install_current, Process};
use crate::arch::uaccess::{copy_to_user, TASK_SIZE_MAX};
use crate::sched::{self, task::TaskName};
use extregs_elf::{LoadPlan, PF_R, PF_W, PF_X};
use extregs_regs::{selectors, PtRegs, NO_ERROR_CODE, X86_EFLAGS_FIXED, X86_EFLAGS_IF};
use spin::Once;

/// The most argument bytes (all strings with their NULs).
pub const ARGV_MAX: usize = 4096;
/// The most arguments.
const ARGC_MAX: usize = 64;

/// What the runner handed over: the file, its plan, and the arguments.
pub struct Program {
    pub file: &'static [u8],
    pub plan: LoadPlan,
    /// `argv`, NUL-separated (argv[0] first).
    pub argv: [u8; ARGV_MAX],
    pub argv_len: usize,
    pub name: TaskName,
}

static PROGRAM: Once<Program> = Once::new();

/// Records the program the exec mode runs; once.
pub fn set_program(program: Program) -> &'static Program {
    PROGRAM.call_once(|| program)
}

/// The arguments, one string each.
fn arguments(program: &Program) -> impl Iterator<Item = &[u8]> {
    program.argv[..program.argv_len]
        .split(|&byte| byte == 0)
        .filter(|argument| !argument.is_empty())
}

/// Auxiliary vector keys.
const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;
const AT_MINSIGSTKSZ: u64 = 51;

/// Runs the recorded program as a process and waits for it: its exit
/// status (Linux's wait status as a shell shows it), its pid and the CPUs
/// it ran on (bit `k`: CPU `k`). With APs online it runs on them, not on
/// CPU 0, where init only waits: `extregs exec --smp 2` takes every entry
/// of the process on an AP. Its memory is freed by the wait (the reaper
/// `linux::init` installs). It owes no TLB shootdown when it moves: only
/// the CPU running it holds entries of its lower half (docs/smp.md).
pub fn run_program() -> Result<(i32, u32, u32), sched::SpawnError> {
    let program = PROGRAM.get().expect("the exec mode recorded its program");
    super::init();
    let online = crate::arch::smp::online_mask();
    let aps = online & !1;
    let handle = sched::spawn_with_affinity(
        format_args!("{}", program.name.as_str()),
        process_start,
        0,
        if aps != 0 { aps } else { online },
    )?;
    let (status, ran_on) = sched::wait_and_cpus(handle);
    Ok((status, handle.pid(), ran_on))
}

/// The task body of the process: builds its address space, enters user
/// mode. On a failure before user mode the task ends with status 127
/// (the shell's "could not execute") after one line saying why.
pub fn process_start(_: usize) {
    let program = PROGRAM.get().expect("the exec mode recorded its program");
    let Some(mm) = AddressSpace::new() else {
        fail("no memory for the page tables");
    };
    let mut process = Process { mm, signals: SignalState::new(), name: program.name, text: 0..0 };
    if let Err(why) = load(program, &mut process) {
        process.mm.destroy();
        fail(why);
    }
    x86_64::instructions::interrupts::without_interrupts(|| install_current(process));
    let stack_pointer = match build_stack(program) {
        Ok(pointer) => pointer,
        Err(why) => fail(why),
    };
    crate::user::enter_user_mode(PtRegs {
        ip: program.plan.entry,
        cs: u64::from(selectors::USER_CS),
        flags: X86_EFLAGS_IF | X86_EFLAGS_FIXED,
        sp: stack_pointer,
        ss: u64::from(selectors::USER_DS),
        orig_ax: NO_ERROR_CODE,
        ..PtRegs::default()
    })
}

/// Spawns one of the kernel's own user programs as a Linux process (the
/// selftests' and the fuzzer's way to run signal round trips with the
/// Linux ABI): its own address space with the kernel's user text mapped
/// where the kernel maps it (read-only, executable, the frames still the
/// kernel image's), a fresh stack, and `shared_page`, a writable user page
/// of the kernel's own table (a fuzz lane's), if not 0, mapped at
/// `user::USER_FUZZ_PAGE`, where the fuzzer's signal program looks;
/// `%rdi`, `%rsi` = `args`. It runs on the CPUs of `allowed_cpus`. `wait`
/// frees its address space.
pub fn spawn_kernel_program(
    program: crate::user::programs::Program,
    args: [u64; 2],
    shared_page: u64,
    allowed_cpus: u32,
) -> Result<sched::TaskHandle, sched::SpawnError> {
    super::init();
    sched::spawn_with_user_args(
        format_args!("linux-{}", program.name),
        kernel_program_start,
        crate::user::user_address_of(program) as usize,
        [args[0], args[1], shared_page],
        allowed_cpus,
    )
}

fn kernel_program_start(user_rip: usize) {
    let Some(mm) = AddressSpace::new() else {
        fail("no memory for the page tables");
    };
    let name = sched::current().name;
    let mut process = Process { mm, signals: SignalState::new(), name, text: 0..0 };
    let text = crate::user::programs::text_range();
    let user_text = crate::user::user_address_of_kernel_text(text.start);
    for kernel_page in (text.start..text.end).step_by(PAGE as usize) {
        let frame = crate::arch::memory::translate(x86_64::VirtAddr::new(kernel_page))
            .map(x86_64::structures::paging::PhysFrame::containing_address)
            .expect("the kernel image's user text is mapped");
        let address = user_text + (kernel_page - text.start);
        if process.mm.map_borrowed(address, frame, PROT_READ | PROT_EXEC).is_err() {
            process.mm.destroy();
            fail("no memory for the program's text");
        }
    }
    process.text = user_text..user_text + (text.end - text.start);
    let [arg0, arg1, shared] = sched::current_user_args();
    if shared != 0 {
        let frame = crate::arch::memory::translate(x86_64::VirtAddr::new(shared))
            .map(x86_64::structures::paging::PhysFrame::containing_address)
            .expect("the shared user page is mapped in the kernel's table");
        let at = crate::user::USER_FUZZ_PAGE;
        if process.mm.map_borrowed(at, frame, PROT_READ | PROT_WRITE).is_err() {
            process.mm.destroy();
            fail("no memory for the shared page");
        }
    }
    let stack = mm::STACK_TOP - mm::STACK_PAGES * PAGE..mm::STACK_TOP;
    if process.mm.map(stack.start, stack.end, PROT_READ | PROT_WRITE).is_err() {
        process.mm.destroy();
        fail("no memory for the stack");
    }
    // No heap here: brk starts right after the text.
    process.mm.brk_start = process.text.end;
    process.mm.brk = process.text.end;
    x86_64::instructions::interrupts::without_interrupts(|| install_current(process));
    crate::user::enter_user_mode(PtRegs {
        ip: user_rip as u64,
        cs: u64::from(selectors::USER_CS),
        flags: X86_EFLAGS_IF | X86_EFLAGS_FIXED,
        sp: mm::STACK_TOP,
        ss: u64::from(selectors::USER_DS),
        orig_ax: NO_ERROR_CODE,
        di: arg0,
        si: arg1,
        ..PtRegs::default()
    })
}

fn fail(why: &str) -> ! {
    println!("extregs: exec: {why}");
    sched::exit_current_with_status(127)
}

/// Maps the segments (file bytes, then zeros), the brk start and the
/// stack.
fn load(program: &Program, process: &mut Process) -> Result<(), &'static str> {
    for segment in program.plan.segments() {
        let mut prot = 0;
        if segment.flags & PF_R != 0 {
            prot |= PROT_READ;
        }
        if segment.flags & PF_W != 0 {
            prot |= PROT_WRITE;
        }
        if segment.flags & PF_X != 0 {
            prot |= PROT_EXEC;
            process.text = segment.address..segment.address + segment.memory_size;
        }
        let pages = segment.page_range();
        // Populated even when PROT_NONE, so the file bytes have a place.
        process
            .mm
            .map(pages.start, pages.end, prot | PROT_READ)
            .map_err(|_| "no memory for a segment")?;
        if prot & PROT_READ == 0 {
            let _ = process.mm.mprotect(pages.start, pages.end - pages.start, prot);
        }
        let bytes = &program.file[segment.file_offset as usize..][..segment.file_size as usize];
        process.mm.write_bytes(segment.address, bytes);
    }
    let end = program.plan.end_of_image();
    process.mm.brk_start = end;
    process.mm.brk = end;
    process
        .mm
        .map(mm::STACK_TOP - mm::STACK_PAGES * PAGE, mm::STACK_TOP, PROT_READ | PROT_WRITE)
        .map_err(|_| "no memory for the stack")?;
    Ok(())
}

/// Pushes bytes downwards from a cursor, through `copy_to_user` (the
/// process's page table is live).
struct StackWriter {
    cursor: u64,
}

impl StackWriter {
    fn push_bytes(&mut self, bytes: &[u8]) -> Result<u64, &'static str> {
        self.cursor -= bytes.len() as u64;
        copy_to_user(self.cursor, bytes).map_err(|_| "the initial stack overflowed")?;
        Ok(self.cursor)
    }

    fn push_string(&mut self, string: &[u8]) -> Result<u64, &'static str> {
        self.cursor -= 1;
        copy_to_user(self.cursor, &[0]).map_err(|_| "the initial stack overflowed")?;
        self.push_bytes(string)
    }
}

/// Writes argc, argv, envp and auxv (`create_elf_tables`); returns RSP.
fn build_stack(program: &Program) -> Result<u64, &'static str> {
    let mut writer = StackWriter { cursor: mm::STACK_TOP };
    writer.push_bytes(&[0; 8])?;
    let mut argv = [0u64; ARGC_MAX];
    let mut argc = 0;
    let arguments: [&[u8]; ARGC_MAX] = {
        let mut all: [&[u8]; ARGC_MAX] = [&[]; ARGC_MAX];
        for (slot, argument) in all.iter_mut().zip(arguments(program)) {
            *slot = argument;
            argc += 1;
        }
        all
    };
    for index in (0..argc).rev() {
        argv[index] = writer.push_string(arguments[index])?;
    }
    let platform = writer.push_string(b"x86_64")?;
    let mut random = [0u8; 16];
    super::syscall::fill_random(&mut random);
    let random_address = writer.push_bytes(&random)?;
    // AT_HWCAP is CPUID.1:EDX on x86 (Linux's `ELF_HWCAP`).
    let hwcap = u64::from(core::arch::x86_64::__cpuid(1).edx);
    let plan = &program.plan;
    let auxv = [
        (AT_PHDR, plan.program_headers),
        (AT_PHENT, 56),
        (AT_PHNUM, u64::from(plan.program_header_count)),
        (AT_PAGESZ, PAGE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, plan.entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_PLATFORM, platform),
        (AT_HWCAP, hwcap),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_address),
        (AT_HWCAP2, 0),
        (AT_EXECFN, if argc > 0 { argv[0] } else { 0 }),
        (AT_MINSIGSTKSZ, extregs_regs::linux_signal::MIN_SIGNAL_STACK),
        (AT_NULL, 0),
    ];
    // argc, argv + NULL, envp NULL, auxv pairs.
    let words = 1 + (argc + 1) + 1 + 2 * auxv.len();
    let stack_pointer = (writer.cursor - 8 * words as u64) & !15;
    let mut table = [0u8; 8 * (1 + ARGC_MAX + 1 + 1 + 2 * 20)];
    let mut at = 0;
    let mut put = |value: u64| {
        table[at..at + 8].copy_from_slice(&value.to_le_bytes());
        at += 8;
    };
    put(argc as u64);
    for address in &argv[..argc] {
        put(*address);
    }
    put(0);
    put(0);
    for (key, value) in auxv {
        put(key);
        put(value);
    }
    debug_assert!(stack_pointer < TASK_SIZE_MAX);
    copy_to_user(stack_pointer, &table[..8 * words]).map_err(|_| "the initial stack overflowed")?;
    Ok(stack_pointer)
}
