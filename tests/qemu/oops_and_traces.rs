//! Dying well: double faults from every stack overflow, machine checks,
//! show_regs and its code bytes, PKS oopses, and call traces (nested,
//! broken, decoded with addr2line, walked by gdb).

use crate::common::*;
use extregs::exit_codes::EXIT_KERNEL_FAILURE;
use extregs::images;
use extregs::qemu::Firmware;
use extregs::report::{self};
use std::process::Command;
use std::time::Duration;

#[test]
fn stack_overflow_ends_in_a_double_fault_dump_not_a_reset() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=stack-overflow");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: unhandled double fault (vector 8)"),
        "{}",
        dump(&outcome)
    );
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    assert!(dump_regs.rip_text.contains("recurse"), "RIP {}", dump_regs.rip_text);
    assert!(dump_regs.saved_pkrs.is_some(), "the #DF frame carries the saved PKRS");
    assert!(outcome.serial.contains("(PtRegs - 8) on the DF stack"), "{}", dump(&outcome));
    assert_eq!(outcome.result().unwrap()["ok"], false);
}

#[test]
fn ist_stack_overflow_ends_in_a_double_fault_naming_the_guard_page() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=nmi-stack-overflow");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: unhandled double fault (vector 8)")
            && outcome.serial.contains("is in the guard page below the NMI IST stack"),
        "{}",
        dump(&outcome)
    );
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    assert!(dump_regs.rip_text.contains("recurse_until_overflow"), "RIP {}", dump_regs.rip_text);
    assert!(outcome.serial.contains("(PtRegs - 8) on the DF stack"), "{}", dump(&outcome));
}

#[test]
fn machine_check_is_fatal_even_with_hooks_that_would_claim_it() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=machine-check");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: machine check (vector 18)"),
        "{}",
        dump(&outcome)
    );
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #MC");
    // The interrupted context had key 1 granted: the #MC entry saved it.
    assert_eq!(dump_regs.saved_pkrs, Some(0x5555_5550), "{}", dump(&outcome));
    assert!(outcome.serial.contains("(PtRegs - 8) on the MCE stack"), "{}", dump(&outcome));
    let result = outcome.result().unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"], "machine check");
}

/// The entries that never return, walked: a real NMI entry at every
/// instruction the #MC (from kernel and from user mode) and the #DF
/// entries run before their handlers (single-stepped), the kernel state
/// right at each, and then the same death as the plain cause. Exactly: the
/// #MC stub's way from kernel mode is 36, the #DF stub 33, and the
/// paranoid path up to its call 20 (21 with SMAP, as on `-cpu max`); the
/// #MC stub's way from user mode is 48, and the common tail's user path up
/// to its call 10 (11 with SMAP).
#[test]
fn dying_entries_take_an_nmi_at_every_instruction_before_their_handlers() {
    for (cause, instructions, death, error) in [
        (
            "machine-check-walk",
            36 + 21,
            "extregs: oops: machine check (vector 18)",
            "machine check",
        ),
        ("stack-overflow-walk", 33 + 21, "extregs: oops: unhandled double fault", "double fault"),
        (
            "user-machine-check-walk",
            48 + 11,
            "extregs: oops: machine check (vector 18)",
            "machine check",
        ),
    ] {
        let outcome = boot(Firmware::Bios, "max", &format!("mode=oops cause={cause}"));
        assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
        let walked = format!(
            "# dying entry: an NMI at each of its {instructions} instructions before the handler\n"
        );
        assert!(outcome.serial.contains(&walked), "{cause}: {}", dump(&outcome));
        assert!(outcome.serial.contains(death), "{cause}: {}", dump(&outcome));
        let hits = extregs::coverage::hits_in(&outcome.serial);
        assert_eq!(hits.len(), instructions, "{cause}: {}", dump(&outcome));
        let result = outcome.result().unwrap();
        assert_eq!((&result["error"], &result["frame_errors"]), (&error.into(), &0.into()));
    }
}

#[test]
fn task_stack_overflow_ends_in_a_double_fault_naming_the_task() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=task-stack-overflow");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(
        outcome.serial.contains("extregs: oops: unhandled double fault (vector 8)")
            && outcome.serial.contains("is in the guard page below the stack of task 2 (overflow)"),
        "{}",
        dump(&outcome)
    );
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    assert_eq!(dump_regs.task, Some((2, "overflow".to_string())), "{}", dump(&outcome));
    assert!(dump_regs.rip_text.contains("recurse_until_overflow"), "RIP {}", dump_regs.rip_text);
    assert_eq!(dump_regs.task_pkrs, Some(0x5555_5554));
}

#[test]
fn nested_oops_traces_every_level_with_its_extension() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=nested");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let serial = &outcome.serial;
    assert!(
        serial.contains("extregs: BUG: the NMI handler (mode=oops cause=nested)"),
        "{}",
        dump(&outcome)
    );
    let trace_start = serial.find("Call Trace:").expect("a call trace");
    let trace_end =
        serial[trace_start..].find("Kernel Offset:").expect("the trace ends") + trace_start;
    let trace: Vec<&str> = serial[trace_start..trace_end].lines().skip(1).collect();
    // The sections in order: the NMI handler on the NMI stack, then the
    // task stack the int3 and the timer IRQ ran on: IRQ context (the int3
    // inside the IRQ's handler) below the IRQ's frame, the task above it.
    let markers: Vec<&str> =
        trace.iter().copied().filter(|l| l.starts_with(" <") || l.starts_with(" </")).collect();
    assert_eq!(
        markers,
        [" <NMI>", " </NMI>", " <IRQ>", " </IRQ>", " <TASK>", " </TASK>"],
        "{}",
        dump(&outcome)
    );
    // Each frame's extension records its vector: the NMI's, the int3's
    // (inside <IRQ>), the timer IRQ's (whose registers are the task's, so
    // it opens <TASK>).
    let section_of = |index: usize| {
        trace[..index].iter().rev().find(|l| l.starts_with(" <")).copied().unwrap_or("")
    };
    let generic: Vec<(&str, &str)> = trace
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("GENERIC: "))
        .map(|(index, l)| (section_of(index), l.split(" vector: ").nth(1).unwrap_or("")))
        .collect();
    let vectors: Vec<(&str, &str)> =
        generic.iter().map(|(s, rest)| (*s, rest.split(' ').next().unwrap_or(""))).collect();
    assert_eq!(
        vectors,
        [(" <NMI>", "0x02"), (" <IRQ>", "0x03"), (" <TASK>", "0xec")],
        "{}",
        dump(&outcome)
    );
    // Three interrupt frames crossed (the NMI's, the int3's, the IRQ's),
    // each with the interrupted registers and that frame's extension.
    let rips: Vec<&str> = trace.iter().copied().filter(|l| l.starts_with("RIP: 0010:")).collect();
    assert_eq!(rips.len(), 3, "{}", dump(&outcome));
    assert_eq!(trace.iter().filter(|l| l.starts_with("GENERIC: ")).count(), 3);
    assert_eq!(trace.iter().filter(|l| l.starts_with("PKRS: ")).count(), 3);
    assert!(
        rips[0].contains("write_icr"),
        "the NMI interrupted the self-NMI's ICR write: {}",
        rips[0]
    );
    assert!(rips[1].contains("nested_hook"), "the int3 interrupted the IRQ handler: {}", rips[1]);
    assert!(rips[2].contains("oops_nested"), "the IRQ interrupted the waiting task: {}", rips[2]);
    // Each level's functions in order, down to the mode's entry function,
    // on the walk's own lines (not the `? ` entries the stack scan adds).
    let trace: Vec<&str> = trace.iter().copied().filter(|l| !l.starts_with(" ? ")).collect();
    let mut at = 0;
    for name in [
        "asm_exc_nmi",
        "nested_hook",
        "extregs_entry_common",
        "oops_nested",
        "die_on_purpose",
        "kernel_main",
    ] {
        let found = trace[at..].iter().position(|l| l.contains(name));
        at += found.unwrap_or_else(|| panic!("no {name} after line {at}\n{}", dump(&outcome))) + 1;
    }
    // Every return address symbolises (` symbol+0xoff/0xsize`), and so
    // does every `? ` entry.
    let all_lines = serial[trace_start..trace_end].lines().skip(1);
    for line in
        all_lines.filter(|l| l.starts_with(' ') && !l.starts_with(" <") && !l.starts_with(" </"))
    {
        assert!(line.contains("+0x") && line.contains("/0x"), "not symbolised: {line}");
    }
    // The oops's own registers are still the first show_regs.
    let regs = report::parse_show_regs(serial).expect("show_regs of the #UD");
    assert!(regs.rip_text.contains("nested_hook"), "RIP {}", regs.rip_text);
}

/// What Linux's `scripts/decode_stacktrace.sh` does with `sym+0xoff/0xsize`:
/// the symbol's address in the kernel ELF plus the offset, less one (the
/// call, not the return), through `addr2line`.
#[test]
fn nested_oops_trace_decodes_with_addr2line() {
    use object::{Object, ObjectSymbol};
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=nested");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let elf_path = extregs::images::kernel_elf();
    let data = std::fs::read(elf_path).expect("the kernel ELF");
    let elf = object::File::parse(&*data).expect("an ELF");
    let address_of = |name: &str| {
        elf.symbols().find_map(|symbol| {
            let demangled = format!("{:#}", rustc_demangle::demangle(symbol.name().ok()?));
            (demangled == name).then(|| symbol.address())
        })
    };
    let trace = outcome.serial.split("Call Trace:\n").nth(1).expect("a call trace");
    let (mut resolved, mut resolved_in_assembly) = (0, 0);
    for line in trace.lines().take_while(|l| !l.starts_with("Kernel Offset")) {
        // ` name+0xoff/0xsize` or ` ? name+0xoff/0xsize` (not the markers,
        // not the nested registers).
        let reliable = !line.starts_with(" ? ");
        let Some(line) = line.strip_prefix(" ? ").or_else(|| line.strip_prefix(' ')) else {
            continue;
        };
        let Some((name, rest)) = line.rsplit_once("+0x") else {
            continue;
        };
        let Some((offset, _)) = rest.split_once("/0x") else { continue };
        let offset = u64::from_str_radix(offset, 16).expect("a hex offset");
        let base = address_of(name).unwrap_or_else(|| panic!("{name} is not in the ELF"));
        if !reliable {
            // A `? ` entry is any text address left on the stack (often
            // core's code, or just past a function's end): its symbol must
            // be the ELF's; its line is not required.
            continue;
        }
        let output = Command::new("addr2line")
            .args(["-e", elf_path.to_str().unwrap(), &format!("{:#x}", base + offset - 1)])
            .output()
            .expect("addr2line (binutils; `make` installs it)");
        let place = String::from_utf8_lossy(&output.stdout).trim().to_string();
        // `_start` (bootloader_api's entry) ends in a call that never
        // returns: its return address is past its last line.
        if name == "_start" {
            continue;
        }
        let repo = env!("CARGO_MANIFEST_DIR");
        assert!(
            place.starts_with(repo)
                && place.rsplit(':').next().is_some_and(|l| l.parse::<u32>().is_ok_and(|n| n > 0)),
            "{line} -> {place}"
        );
        // The entry stubs are assembly: their lines are entry_64.S's (or
        // calling.S's, for a macro's lines).
        if name.starts_with("asm_exc_") || name.starts_with("extregs_entry_common") {
            assert!(
                place.contains("/crates/entry-asm/src/") && place.contains(".S:"),
                "{line} -> {place}"
            );
            resolved_in_assembly += 1;
        }
        resolved += 1;
    }
    assert!(resolved >= 9, "{resolved} entries resolved\n{}", dump(&outcome));
    // The NMI stub and both extregs_entry_common frames (int3's, IRQ's).
    assert!(
        resolved_in_assembly >= 3,
        "{resolved_in_assembly} assembly entries resolved\n{}",
        dump(&outcome)
    );
}

/// A chain broken on purpose: the walk stops at the frame whose saved RBP
/// was overwritten, says so, and the callers only the stack still holds
/// print after it as `? ` entries.
#[test]
fn broken_chain_trace_stops_and_lists_the_rest_as_unreliable() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=broken-chain");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #UD");
    assert!(regs.rip_text.contains("oops_broken_chain"), "RIP {}", regs.rip_text);
    let trace = outcome.serial.split("Call Trace:\n").nth(1).expect("a call trace");
    let lines: Vec<&str> = trace.lines().take_while(|l| l.starts_with(' ')).collect();
    let stop = lines
        .iter()
        .position(|l| *l == " [call trace stopped: frame pointer outside the known stacks]")
        .unwrap_or_else(|| panic!("no stop marker\n{}", dump(&outcome)));
    // The walk reached the function's caller, reliably, and no further.
    assert!(lines[..stop].iter().any(|l| l.starts_with(" kernel::modes::oops::die_on_purpose+")));
    assert!(lines[..stop].iter().all(|l| !l.contains("kernel_main")), "{}", dump(&outcome));
    // The caller's callers, found on the stack, unreliable.
    assert!(
        lines[stop..].iter().any(|l| l.starts_with(" ? kernel::kernel_main+0x")),
        "{}",
        dump(&outcome)
    );
    assert!(lines[stop + 1..]
        .iter()
        .all(|l| l.starts_with(" ? ") || l.starts_with(" </") || l.ends_with(" not shown]")));
    assert_eq!(lines.last(), Some(&" </TASK>"), "{}", dump(&outcome));
}

#[test]
fn every_oops_ends_with_a_call_trace() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=ud2");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    let trace = outcome.serial.split("Call Trace:\n").nth(1).expect("a call trace");
    let lines: Vec<&str> = trace.lines().take_while(|l| l.starts_with(' ')).collect();
    assert_eq!(lines.first(), Some(&" <TASK>"), "{}", dump(&outcome));
    assert_eq!(lines.last(), Some(&" </TASK>"), "{}", dump(&outcome));
    assert!(lines.iter().any(|l| l.contains("die_on_purpose")), "{}", dump(&outcome));
    assert!(lines.iter().any(|l| l.contains("kernel_main")), "{}", dump(&outcome));
}

#[test]
fn user_double_fault_stays_on_the_df_stack_and_names_the_task() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=user-double-fault");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    for line in [
        "extregs: oops: unhandled double fault (vector 8)",
        "extregs: double fault from user mode: the entry could not push its frame at RSP0",
        "is in the guard page below the stack of task 2 (user-df)",
        "(PtRegs - 8) on the DF stack",
    ] {
        assert!(outcome.serial.contains(line), "no '{line}'\n{}", dump(&outcome));
    }
    assert!(!outcome.serial.contains("bad frame"), "{}", dump(&outcome));
    assert_eq!(outcome.serial.matches("booting").count(), 1, "the machine reset");
    let regs = report::parse_show_regs(&outcome.serial).expect("show_regs of the #DF");
    // The user frame the #DF saved: the int3 that could not enter.
    assert_eq!((regs.cs, regs.ss), (0x33, Some(0x2b)), "{}", dump(&outcome));
    assert_eq!(regs.code.get(regs.code_rip_index), Some(&0xcc), "RIP at the int3");
    assert_eq!(regs.task, Some((2, "user-df".to_string())));
}

#[test]
fn unhandled_exception_dumps_code_bytes_of_the_image() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=ud2");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(outcome.serial.contains("oops: unhandled invalid opcode (vector 6)"));
    assert_eq!(outcome.result().unwrap()["ok"], false);
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs");
    // RIP: 0010:kernel::modes::oops::oops_invalid_opcode+0x1/0x5
    let (symbol, offsets) = dump_regs.rip_text.split_once('+').expect("a symbolised RIP");
    let offset =
        u64::from_str_radix(offsets.split('/').next().unwrap().trim_start_matches("0x"), 16)
            .unwrap();
    assert_eq!(symbol, "kernel::modes::oops::oops_invalid_opcode");
    let elf_bytes = std::fs::read(images::kernel_elf()).expect("kernel ELF");
    let elf = object::File::parse(&*elf_bytes).expect("parse the kernel ELF");
    let rip = symbol_address(&elf, symbol) + offset;
    let first = rip - dump_regs.code_rip_index as u64;
    assert_eq!(image_bytes(&elf, first, dump_regs.code.len()), dump_regs.code);
    assert_eq!(&dump_regs.code[dump_regs.code_rip_index..][..2], [0x0f, 0x0b], "ud2 at RIP");
}

#[test]
fn unresolved_pks_fault_is_an_oops_that_names_key_and_right() {
    let outcome = boot(Firmware::Bios, "max", "mode=oops cause=pks");
    assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
    assert!(outcome.serial.contains("protection key"), "{}", dump(&outcome));
    assert!(
        outcome.serial.contains("PKS: read of pkey 1 denied: access-disable (AD) set"),
        "{}",
        dump(&outcome)
    );
    let dump_regs = report::parse_show_regs(&outcome.serial).expect("show_regs");
    assert_eq!(dump_regs.saved_pkrs, Some(0x5555_5554));
}

#[test]
fn panic_and_gp_print_show_regs_and_fail() {
    for cmdline in ["mode=oops cause=panic", "mode=oops cause=gp"] {
        let outcome = boot(Firmware::Bios, "max", cmdline);
        assert_verdict(&outcome, EXIT_KERNEL_FAILURE);
        assert!(report::parse_show_regs(&outcome.serial).is_some(), "{}", dump(&outcome));
        assert_eq!(outcome.result().unwrap()["ok"], false);
    }
}

/// gdb's `bt` from a handler nested three deep walks through each entry
/// stub (their call-frame information describes PtRegs) into the
/// interrupted functions, down to the mode's entry function.
#[test]
fn gdb_backtrace_walks_through_the_entry_stubs() {
    // Where the bootloader loads the kernel (the same for every boot of
    // this image): the `Kernel Offset:` line of an oops.
    let oops = boot(Firmware::Bios, "max", "mode=oops cause=ud2");
    let offset = oops
        .serial
        .lines()
        .find_map(|l| l.strip_prefix("Kernel Offset: "))
        .expect("the oops names the kernel offset")
        .trim()
        .to_string();
    let _port = GDB_PORT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut qemu = Command::new(env!("CARGO_BIN_EXE_extregs"))
        .args(["run", "--gdb", "--timeout", "120", "--cmdline", "mode=oops cause=nested"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start QEMU");
    let listening = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect("127.0.0.1:1234").is_ok()
    });
    assert!(listening, "QEMU's gdb stub never listened");
    let elf = images::kernel_elf().to_str().unwrap().to_string();
    let gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set confirm off", "-ex", "set pagination off"])
        .args(["-ex", &format!("symbol-file -o {offset} {elf}")])
        .args(["-ex", "target remote 127.0.0.1:1234"])
        // The hook runs for the timer IRQ, the int3, then the NMI.
        .args([
            "-ex",
            "hbreak nested_hook",
            "-ex",
            "continue",
            "-ex",
            "continue",
            "-ex",
            "continue",
        ])
        .args(["-ex", "bt", "-ex", "kill"])
        .output()
        .expect("gdb (`make` installs it)");
    let _ = qemu.kill();
    let _ = qemu.wait();
    let text = String::from_utf8_lossy(&gdb.stdout).to_string();
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    // Each level's frames in order, through the stubs, without a frame gdb
    // could not place before the mode's entry function.
    let mut at = 0;
    for name in [
        "nested_hook",
        "asm_exc_nmi",
        "write_icr",
        "extregs_entry_common",
        "extregs_entry_common",
        "oops_nested",
        "die_on_purpose",
        "kernel_main",
    ] {
        let found = frames[at..].iter().position(|f| f.contains(name));
        at += found.unwrap_or_else(|| panic!("no {name} after frame {at}:\n{text}")) + 1;
    }
    assert!(!frames[..at].iter().any(|f| f.contains("?? ()")), "{text}");
}
