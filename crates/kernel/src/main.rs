//! The extregs kernel.
//!
//! Boots through `bootloader_api`, installs a GDT/TSS (with Linux's four IST
//! stacks) and an IDT whose every gate, exceptions and external interrupts
//! alike, enters through the `extregs-entry-asm` stubs (which build
//! `PtRegs` plus the extension below it), masks the PIC and enables the
//! local APIC, turns on PKS when the CPU has it, reads its command line from
//! fw_cfg, makes the boot flow task 1 (`init`) of the scheduler, and runs
//! one mode: `demo` (default), `selftest`, `oops`, `idle`, `fuzz`, `bench`,
//! `tasks`, `user`, `backtrace` or `exec` (a static Linux program). Every mode ends with one `RESULT {json}` line and
//! leaves QEMU through `isa-debug-exit`.
//!
//! # Layers
//!
//! Each folder is a layer, and a module uses only its own layer and the
//! layers below it (a host test, `tests/layers.rs`, reads every `crate::`
//! path and fails on an upward one). Paths always name the folder
//! (`crate::arch::apic`): nothing is re-exported flat. A lower layer that
//! needs an answer from a higher one receives it as a parameter or
//! through a hook slot (`arch::hook_slot`) the higher one fills.
//!
//! ```text
//!   layer      what it holds                                   uses
//!   ---------  ----------------------------------------------  ------------
//!   modes      one module per mode=, the selftests, the fuzzer  everything
//!   dispatch   extregs_exception_entry: enter, check, handle,   all below
//!              exit, for every IDT vector
//!   linux      the Linux personality: exec, address spaces,    all below
//!              signals, Linux's syscall table
//!   user       ring-3 tasks, SYSCALL, user faults, the         all below
//!              personality hooks
//!   entry      the generic entry's platform, the frame         debug, sched,
//!              checker, hooks, IRQs, NMIs, paranoid state      arch
//!   debug      show_regs, oops, call traces, symbols,          sched, arch
//!              coverage, the RESULT line
//!   sched      tasks, preemption, the idle loop                arch
//!   arch       GDT/TSS/IDT, APIC, ACPI, paging, PKS, IRQ      nothing
//!              flags and the RCU/lockdep models, uaccess, serial
//! ```
//!
//! `main.rs` (this file) stands above them all: it boots and picks the mode.

#![no_std]
#![no_main]
// The benchmark's comparison point: Rust's x86-interrupt handlers.
#![feature(abi_x86_interrupt)]

#[macro_use]
mod arch;
mod debug;
mod dispatch;
mod entry;
mod linux;
mod modes;
mod sched;
mod user;

use arch::{acpi, apic, cpu, fwcfg, gdt, idt, memory, pks, serial, uaccess};
use debug::{result, symbols};
use entry::fault;
use modes::{bench, demo, fuzz, idle, oops, selftest, tasks};

use arch::exit::{exit_qemu, ExitCode};
use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};
use extregs_cmdline::Mode;

/// Physical memory mapped (for page tables and the pkey page), and a larger
/// stack than the default for the selftests' nested frames. Everything the
/// bootloader places (kernel image, stack, boot info, physical map) goes in
/// the upper half: the lower half is user space, and a Linux process gets a
/// lower half of its own (`linux::mm`) that shares only the upper one.
/// The kernel image goes at a fixed address, the start of that half (where
/// the dynamic choice put it too): the root build script applies the
/// kernel's packed relative relocations for it at build time (docs/boot.md).
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.kernel_base = Mapping::FixedAddress(memory::KERNEL_HALF_START);
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.dynamic_range_start = Some(memory::KERNEL_HALF_START);
    config.kernel_stack_size = 128 * 1024;
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

/// The pkey the test page is tagged with.
const TEST_PKEY: u8 = 1;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    // GS first: every per-CPU item (the console's paranoid test among them)
    // is found through it.
    gdt::init_gs(0);
    serial::init();
    println!("extregs: extended pt_regs kernel, booting");
    let mut cmdline_buffer = [0u8; fwcfg::CMDLINE_MAX];
    let text = match fwcfg::read_cmdline(&mut cmdline_buffer) {
        Ok(text) => text,
        Err(why) => reject_cmdline(format_args!("{why}")),
    };
    let cmdline = match extregs_cmdline::parse(text) {
        Ok(cmdline) => cmdline,
        Err(why) => reject_cmdline(format_args!("{why}")),
    };
    result::set_mode(cmdline.mode);

    gdt::init();
    gdt::init_syscall();
    idt::init();
    let physical_memory_offset = boot_info
        .physical_memory_offset
        .into_option()
        .expect("the bootloader config asks for the physical memory mapping");
    memory::init(physical_memory_offset, &boot_info.memory_regions);
    gdt::protect_ist_stacks();
    let kernel_elf = memory::physical_to_virtual(x86_64::PhysAddr::new(boot_info.kernel_addr));
    // The kernel ELF the bootloader loaded at `kernel_addr` (physical), in
    // frames it reports as its own (never handed out); only the kernel's
    // writable segments, mapped onto some of those frames, write there.
    // SAFETY: `kernel_len` bytes, mapped for good through the physical-memory
    // mapping; the writes above are what `symbols::init` allows for.
    unsafe {
        symbols::init(
            kernel_elf.as_ptr(),
            boot_info.kernel_len as usize,
            boot_info.kernel_image_offset,
        );
    }

    let madt = acpi::print_cpus(boot_info.rsdp_addr.into_option());
    let features = cpu::detect();
    cpu::print_summary(&features);
    uaccess::enable_smep_smap(&features);
    arch::fpu::init_cpu();
    apic::init(features.x2apic);
    println!(
        "extregs: apic: {} mode, id {}, timer {} ticks/ms (bus/16, PIT-calibrated); PIC masked",
        apic::current_mode().name(),
        apic::id(),
        apic::timer_ticks_per_ms()
    );
    pks::init(features.pks, symbols::function_range(pks::write_pkrs as *const () as u64));
    let pkey_page = if pks::enabled() {
        let page = memory::map_pkey_page(TEST_PKEY, selftest::PKEY_PAGE_FILL);
        println!(
            "extregs: pks: on, PKRS {:08x}; pkey-{} test page at {:#x}",
            pks::read_pkrs(),
            page.pkey,
            page.address.as_u64()
        );
        Some(page)
    } else {
        println!("extregs: pks: not supported by this CPU; PKRS is not saved (pks=false)");
        None
    };
    sched::init();
    if let Some(madt) = &madt {
        let hooks = arch::smp::ApHooks {
            idle_stack: sched::ap::ap_idle_stack,
            become_idle_task: sched::ap::become_ap_idle_task,
            idle: sched::ap::ap_idle_loop,
        };
        arch::smp::bring_up(madt, features, hooks);
    }
    user::init();
    println!("extregs: mode={}", cmdline.mode.name());
    // `inject=` in the other modes (the fuzzer switches its fault on itself,
    // with its own message): e.g. `mode=demo inject=extension-offset`
    // shows that a bad frame fails the mode.
    if let (Some(injected), false) = (cmdline.fuzz.inject, cmdline.mode == Mode::Fuzz) {
        if let Err(why) = fault::activate(injected) {
            reject_cmdline(format_args!("inject={}: {why}", fault::name(injected)));
        }
        println!("extregs: injecting fault {}", fault::name(injected));
    }

    let ok = match cmdline.mode {
        Mode::Demo => demo::run(pkey_page),
        Mode::Selftest => {
            let user_pkey_page = pkey_page
                .map(|page| memory::map_user_pkey_page(page.pkey, selftest::PKEY_PAGE_FILL));
            selftest::run(&selftest::Context { pkey_page, user_pkey_page })
        }
        Mode::Idle => idle::run(cmdline.seconds),
        Mode::Tasks => tasks::run(cmdline.tasks, cmdline.seconds),
        Mode::User => modes::user::run(),
        Mode::Fuzz => fuzz::run(cmdline.fuzz),
        Mode::Bench => bench::run(cmdline.bench_iterations),
        Mode::Backtrace => modes::backtrace::run(),
        Mode::Exec => modes::exec::run(),
        Mode::Oops => {
            let cause = cmdline.oops_cause.expect("the parser requires cause= with mode=oops");
            oops::die_on_cpu(cmdline.oops_cpu, cause, pkey_page)
        }
    };
    exit_qemu(if ok { ExitCode::Success } else { ExitCode::Failure })
}

/// A bad command line: one `extregs: error:` line and the failure exit,
/// before anything else runs (the contract is in `docs/design.md`).
fn reject_cmdline(why: core::fmt::Arguments<'_>) -> ! {
    println!("extregs: error: {why}");
    exit_qemu(ExitCode::Failure)
}
