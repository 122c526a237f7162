//! The extregs kernel command line.
//!
//! QEMU passes it as the fw_cfg file `opt/extregs/cmdline`: whitespace
//! separated `key=value` words (docs/design.md, "Contracts"). This crate is `no_std` and
//! allocation-free so the kernel can use it, and it is tested on the host.
//! Anything unknown or malformed is an error with a one-line reason; nothing
//! is silently ignored.

#![no_std]

use core::fmt;

/// What the kernel does after boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Default: show the extended frame at work (int3 with a non-default
    /// PKRS, show_regs, check PKRS came back).
    Demo,
    /// KTAP selftests of the entry paths.
    Selftest,
    /// Deliberately die of an unhandled event, to exercise the oops path.
    Oops,
    /// Idle (`sti; hlt`) with the periodic timer running for `seconds=`,
    /// counting timer IRQs and NMIs (e.g. injected from outside).
    Idle,
    /// The nested-interrupt fuzzer: `seed=`, `iterations=`, `max-depth=`.
    Fuzz,
    /// The kernel harness of `extregs bench`: `iterations=` round trips per
    /// entry variant.
    Bench,
    /// Preemptive kernel tasks: `tasks=` workers, each with its own PKRS,
    /// for `seconds=`.
    Tasks,
    /// User mode: ring-3 tasks over SYSCALL (a hello world, a spinner the
    /// timer preempts, a task killed by its ud2, 10,000 syscalls).
    User,
    /// The NMI backtrace of every CPU (Linux's `trigger_all_cpu_backtrace`).
    Backtrace,
    /// Runs the static Linux x86-64 program in fw_cfg file
    /// `opt/extregs/program` (arguments in `opt/extregs/argv`) as a Linux
    /// process (`extregs exec PATH`).
    Exec,
}

impl Mode {
    /// Every mode with its command-line spelling.
    pub const ALL: [(Mode, &'static str); 10] = [
        (Mode::Demo, "demo"),
        (Mode::Selftest, "selftest"),
        (Mode::Oops, "oops"),
        (Mode::Idle, "idle"),
        (Mode::Fuzz, "fuzz"),
        (Mode::Bench, "bench"),
        (Mode::Tasks, "tasks"),
        (Mode::User, "user"),
        (Mode::Backtrace, "backtrace"),
        (Mode::Exec, "exec"),
    ];

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(mode, _)| *mode == self).map(|(_, name)| *name).unwrap_or("?")
    }
}

/// What `mode=oops` dies of (`cause=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OopsCause {
    /// `ud2`: an unhandled #UD.
    InvalidOpcode,
    /// A load from a non-canonical address: an unhandled #GP.
    GeneralProtection,
    /// A read of a page whose pkey the default PKRS forbids: an unresolved
    /// PKS fault (#PF with the PK bit).
    PksViolation,
    /// A Rust `panic!`.
    Panic,
    /// Unbounded recursion into the kernel stack's guard page: the #PF can't
    /// be delivered on the overflowed stack, so it becomes a #DF (on its IST).
    StackOverflow,
    /// Unbounded recursion inside an NMI handler, into the guard page below
    /// the NMI IST stack: a #DF, not a silent run into the next stack.
    NmiStackOverflow,
    /// `int $18` through the #MC gate: a machine check is fatal in the
    /// kernel, even with a hook installed that would claim it.
    MachineCheck,
    /// Unbounded recursion in a kernel task, into the guard page below its
    /// own stack: a #DF whose dump names the task.
    TaskStackOverflow,
    /// A user task's int3 whose entry finds the kernel stack top (TSS.RSP0)
    /// in the task's guard page: the CPU's push faults, and the #DF that
    /// follows from user mode must stay on its IST stack.
    UserDoubleFault,
    /// A timer IRQ whose handler executes int3, whose handler sends a
    /// self-NMI, whose handler BUGs: the oops's call trace crosses all three
    /// interrupt frames, each with its extension.
    Nested,
    /// A kernel function overwrites its saved frame pointer, then executes
    /// ud2: the call trace's walk stops with a marker, and the callers it
    /// could not reach print as `? ` entries found on the stack.
    BrokenChain,
    /// `machine-check`, with a real NMI entry at every instruction the #MC
    /// entry runs before its handler (single-stepped): the one breakpoint
    /// walk of an entry that never returns.
    MachineCheckWalk,
    /// `stack-overflow`, with a real NMI entry at every instruction the #DF
    /// entry runs before its handler.
    StackOverflowWalk,
    /// A #MC from user mode (a user task's `int` through a user gate to the
    /// #MC stub, which only this cause installs), with a real NMI entry at
    /// every instruction its entry runs before the handler, which dies.
    UserMachineCheckWalk,
}

impl OopsCause {
    /// Every cause with its command-line spelling.
    pub const ALL: [(OopsCause, &'static str); 14] = [
        (OopsCause::InvalidOpcode, "ud2"),
        (OopsCause::GeneralProtection, "gp"),
        (OopsCause::PksViolation, "pks"),
        (OopsCause::Panic, "panic"),
        (OopsCause::StackOverflow, "stack-overflow"),
        (OopsCause::NmiStackOverflow, "nmi-stack-overflow"),
        (OopsCause::MachineCheck, "machine-check"),
        (OopsCause::TaskStackOverflow, "task-stack-overflow"),
        (OopsCause::UserDoubleFault, "user-double-fault"),
        (OopsCause::Nested, "nested"),
        (OopsCause::BrokenChain, "broken-chain"),
        (OopsCause::MachineCheckWalk, "machine-check-walk"),
        (OopsCause::StackOverflowWalk, "stack-overflow-walk"),
        (OopsCause::UserMachineCheckWalk, "user-machine-check-walk"),
    ];
}

/// A parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub mode: Mode,
    /// Only with `mode=oops` (where it is required).
    pub oops_cause: Option<OopsCause>,
    /// `cpu=` of `mode=oops`: the CPU that dies (CPU 0 when absent), or
    /// `cpu=all`. The kernel refuses a CPU that is not online.
    pub oops_cpu: OopsCpu,
    /// `seconds=` of `mode=idle` and `mode=tasks` ([`DEFAULT_SECONDS`] when
    /// absent).
    pub seconds: u32,
    /// `tasks=` of `mode=tasks` ([`DEFAULT_TASKS`] when absent).
    pub tasks: u32,
    /// `mode=fuzz` settings (defaults when absent).
    pub fuzz: FuzzSettings,
    /// `iterations=` of `mode=bench` ([`DEFAULT_BENCH_ITERATIONS`] when absent).
    pub bench_iterations: u64,
}

/// Which CPU `mode=oops` dies on (`cpu=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OopsCpu {
    /// `cpu=K`.
    Cpu(u32),
    /// `cpu=all`: every online CPU at once (one dump must come out).
    All,
}

/// The highest `cpu=` (the kernel runs at most 8 CPUs).
pub const MAX_CPU_NUMBER: u64 = 7;

/// Round trips per variant in `mode=bench` without `iterations=`.
pub const DEFAULT_BENCH_ITERATIONS: u64 = 100_000;
/// The most `mode=bench` keeps samples for.
pub const MAX_BENCH_ITERATIONS: u64 = 200_000;

/// A fault a fault-injection kernel build can switch on (`inject=`), for
/// the fuzzer's proof by mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The int3 exit does not restore R12.
    SkipGprRestore,
    /// The IRQ exit path does not restore PKRS.
    SkipPkrsRestore,
    /// The extension accessor steps back too far.
    ExtensionOffset,
    /// NMI exit does not restore the lockdep flag.
    NmiExitForgetsLockdep,
    /// A nested NMI is handled as the outermost, reusing the NMI IST frame.
    NmiReusesIstFrame,
    /// TLB shootdowns flush the sending CPU only (the SMP selftests catch
    /// it; the one fault that runs on more than one CPU).
    SkipTlbShootdown,
}

impl Fault {
    /// Every fault with its command-line spelling.
    pub const ALL: [(Fault, &'static str); 6] = [
        (Fault::SkipGprRestore, "skip-gpr-restore"),
        (Fault::SkipPkrsRestore, "skip-pkrs-restore"),
        (Fault::ExtensionOffset, "extension-offset"),
        (Fault::NmiExitForgetsLockdep, "nmi-exit-forgets-lockdep"),
        (Fault::NmiReusesIstFrame, "nmi-reuses-ist-frame"),
        (Fault::SkipTlbShootdown, "skip-tlb-shootdown"),
    ];
}

/// One kind of event the fuzzer raises. The kernel raises them; the
/// runner, its heat maps and the tests read their names from `FUZZ` and
/// `RESULT` lines (`int3`, and `user_int3` for a ring-3 level), so the
/// names are defined here, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FuzzKind {
    IntN,
    Int3,
    Ud2,
    DivideError,
    GeneralProtection,
    PksResolved,
    PksFixup,
    Timer,
    SelfIpi,
    SelfNmi,
    /// A timer IRQ whose exit preempts the interrupted task: the fuzz
    /// partner task runs the rest of the program on its own stack, then
    /// parks, and the preempted frame resumes.
    Preempt,
    /// A timer IRQ whose handler, after raising the levels below it, moves
    /// the interrupted task to the next CPU: the IRQ's exit switches away,
    /// and the task (its frames and their extensions on its stack) resumes
    /// on the other CPU. On one CPU it only reschedules.
    Migrate,
    /// Ring 3 only: a SYSCALL (`fuzz_event`), whose frame the syscall hook
    /// hands to the fuzzer.
    Syscall,
    /// Ring 3 only: a load from an unmapped user page.
    UserPageFault,
}

impl FuzzKind {
    /// Every kind, indexed by its discriminant (checked below).
    pub const ALL: [FuzzKind; 14] = [
        FuzzKind::IntN,
        FuzzKind::Int3,
        FuzzKind::Ud2,
        FuzzKind::DivideError,
        FuzzKind::GeneralProtection,
        FuzzKind::PksResolved,
        FuzzKind::PksFixup,
        FuzzKind::Timer,
        FuzzKind::SelfIpi,
        FuzzKind::SelfNmi,
        FuzzKind::Preempt,
        FuzzKind::Migrate,
        FuzzKind::Syscall,
        FuzzKind::UserPageFault,
    ];

    /// The kinds a kernel-mode level draws from: every kind but the two
    /// ring-3-only ones, which come last in [`FuzzKind::ALL`].
    pub const KERNEL: &'static [FuzzKind] = FuzzKind::ALL.split_at(FuzzKind::ALL.len() - 2).0;

    /// The kinds of an outermost level run in ring 3, in the order a draw
    /// picks them (Timer and SelfIpi arrive right after a SYSCALL that
    /// asked for them; SelfNmi is a real NMI the user task sets off).
    pub const USER: [FuzzKind; 7] = [
        FuzzKind::Syscall,
        FuzzKind::Int3,
        FuzzKind::Ud2,
        FuzzKind::UserPageFault,
        FuzzKind::Timer,
        FuzzKind::SelfIpi,
        FuzzKind::SelfNmi,
    ];

    /// The name in `FUZZ`/`RESULT` lines (a ring-3 level's is prefixed
    /// with `user_`).
    pub const fn name(self) -> &'static str {
        match self {
            FuzzKind::IntN => "int_n",
            FuzzKind::Int3 => "int3",
            FuzzKind::Ud2 => "ud2",
            FuzzKind::DivideError => "divide_error",
            FuzzKind::GeneralProtection => "general_protection",
            FuzzKind::PksResolved => "pks_fault_resolved",
            FuzzKind::PksFixup => "pks_fault_fixup",
            FuzzKind::Timer => "timer",
            FuzzKind::SelfIpi => "self_ipi",
            FuzzKind::SelfNmi => "self_nmi",
            FuzzKind::Preempt => "preempt",
            FuzzKind::Migrate => "migrate",
            FuzzKind::Syscall => "syscall",
            FuzzKind::UserPageFault => "page_fault",
        }
    }
}

// `FuzzKind::ALL[k] as usize == k`: the kernel indexes its counters by the
// discriminant.
const _: () = {
    let mut index = 0;
    while index < FuzzKind::ALL.len() {
        assert!(FuzzKind::ALL[index] as usize == index);
        index += 1;
    }
};

/// What `mode=fuzz` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzSettings {
    /// `seed=`: the PRNG seed (decimal or 0x-hex); with `seeds=A..B`, A.
    pub seed: u64,
    /// How many seeds from `seed` one boot runs, each from a fresh state
    /// (`seeds=A..B`: B - A; 1 for `seed=`).
    pub seed_count: u64,
    /// `iterations=`: event programs to run.
    pub iterations: u64,
    /// `max-depth=`: the deepest nesting a program may reach.
    pub max_depth: u32,
    /// `inject=`: a fault to switch on (fault-injection builds only).
    pub inject: Option<Fault>,
    /// `foreign-timer-hz=`: a timer the fuzzer knows nothing of (the PIT
    /// through the 8259 on LINT0), firing wherever IF=1; 0 = off.
    pub foreign_timer_hz: u32,
}

/// The fastest `foreign-timer-hz=` (the PIT's rate generator goes far
/// higher, but under TCG more would only starve the fuzzer).
pub const MAX_FOREIGN_TIMER_HZ: u32 = 10_000;

impl Default for FuzzSettings {
    fn default() -> Self {
        FuzzSettings {
            seed: 0,
            seed_count: 1,
            iterations: 100,
            max_depth: DEFAULT_FUZZ_MAX_DEPTH,
            inject: None,
            foreign_timer_hz: 0,
        }
    }
}

/// `max-depth=` when absent.
pub const DEFAULT_FUZZ_MAX_DEPTH: u32 = 8;
/// The deepest nesting `max-depth=` accepts (the IST stacks bound it).
pub const MAX_FUZZ_DEPTH: u32 = 12;
/// The most seeds one `seeds=A..B` may hold.
pub const MAX_FUZZ_SEEDS_PER_BOOT: u64 = 100_000;
/// The most `iterations=` accepted.
pub const MAX_FUZZ_ITERATIONS: u64 = 100_000_000;

/// How long `mode=idle` idles, and `mode=tasks` runs, without `seconds=`.
pub const DEFAULT_SECONDS: u32 = 5;
/// The longest `seconds=` accepted.
pub const MAX_SECONDS: u32 = 3600;
/// Workers of `mode=tasks` without `tasks=`.
pub const DEFAULT_TASKS: u32 = 4;
/// The most workers `tasks=` accepts.
pub const MAX_TASKS: u32 = 64;

/// Why a command line was rejected. `Display` gives the one-line reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandLineError<'a> {
    /// A word without `=`, or with an empty key or value.
    Malformed(&'a str),
    /// A key no mode knows.
    UnknownKey(&'a str),
    /// The same key twice.
    DuplicateKey(&'a str),
    /// A value not in the key's list.
    BadValue { key: &'a str, value: &'a str, expected: &'static str },
    /// A key the chosen mode does not take.
    KeyNotForMode { key: &'a str, mode: Mode },
    /// A key the chosen mode requires is missing.
    MissingKey { key: &'static str, mode: Mode },
    /// A number out of range or not a number.
    BadNumber { key: &'a str, value: &'a str, min: u64, max: u64 },
    /// Not a range `A..B` with A < B, or more than `max` long.
    BadRange { key: &'a str, value: &'a str, max: u64 },
    /// Two keys that exclude each other.
    Conflict { key: &'a str, other: &'a str },
}

impl fmt::Display for CommandLineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandLineError::Malformed(word) => {
                write!(f, "malformed command-line word '{word}' (expected key=value)")
            }
            CommandLineError::UnknownKey(key) => {
                write!(f, "unknown command-line key '{key}' (known: mode, cause, seconds, tasks, seed, seeds, iterations, max-depth, inject, foreign-timer-hz)")
            }
            CommandLineError::DuplicateKey(key) => {
                write!(f, "command-line key '{key}' given twice")
            }
            CommandLineError::BadValue { key, value, expected } => {
                write!(f, "bad value '{value}' for '{key}' (expected one of: {expected})")
            }
            CommandLineError::KeyNotForMode { key, mode } => {
                write!(f, "key '{key}' does not apply to mode={}", mode.name())
            }
            CommandLineError::MissingKey { key, mode } => {
                write!(f, "mode={} needs {key}=", mode.name())
            }
            CommandLineError::BadNumber { key, value, min, max } => {
                write!(f, "bad value '{value}' for '{key}' (expected a number from {min} to {max})")
            }
            CommandLineError::BadRange { key, value, max } => {
                write!(
                    f,
                    "bad range '{value}' for '{key}' (expected A..B, B excluded, with A < B and at most {max} values)"
                )
            }
            CommandLineError::Conflict { key, other } => {
                write!(f, "keys '{other}' and '{key}' exclude each other")
            }
        }
    }
}

/// A decimal or `0x` hexadecimal number in `min..=max`.
fn number<'a>(
    key: &'a str,
    value: &'a str,
    min: u64,
    max: u64,
) -> Result<u64, CommandLineError<'a>> {
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse::<u64>().ok(),
    };
    parsed.filter(|n| (min..=max).contains(n)).ok_or(CommandLineError::BadNumber {
        key,
        value,
        min,
        max,
    })
}

fn lookup<T: Copy>(table: &[(T, &'static str)], value: &str) -> Option<T> {
    table.iter().find(|(_, name)| *name == value).map(|(item, _)| *item)
}

/// Parses a command line. An empty line means `mode=demo`.
pub fn parse(text: &str) -> Result<CommandLine, CommandLineError<'_>> {
    let mut mode = None;
    let mut cause = None;
    let mut cause_key = "";
    let mut seconds = None;
    let mut seconds_key = "";
    let mut tasks = None;
    let mut tasks_key = "";
    let (mut seed, mut iterations, mut max_depth) = (None, None, None);
    let mut fuzz_key = "";
    let mut inject = None;
    let mut foreign_timer_hz = None;
    let mut seeds = None;
    let mut iterations_text = "";
    let mut oops_cpu = None;
    for word in text.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => (key, value),
            _ => return Err(CommandLineError::Malformed(word)),
        };
        match key {
            "mode" => {
                if mode.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                mode = Some(lookup(&Mode::ALL, value).ok_or(CommandLineError::BadValue {
                    key,
                    value,
                    expected: "demo, selftest, oops, idle, fuzz, bench, tasks, user, backtrace",
                })?);
            }
            "cause" => {
                if cause.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                cause_key = key;
                cause = Some(lookup(&OopsCause::ALL, value).ok_or(CommandLineError::BadValue {
                    key,
                    value,
                    expected:
                        "ud2, gp, pks, panic, stack-overflow, nmi-stack-overflow, machine-check, task-stack-overflow, user-double-fault, nested, broken-chain",
                })?);
            }
            "seconds" => {
                if seconds.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                seconds_key = key;
                seconds = Some(number(key, value, 1, u64::from(MAX_SECONDS))? as u32);
            }
            "cpu" => {
                if oops_cpu.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                oops_cpu = Some(match value {
                    "all" => OopsCpu::All,
                    _ => OopsCpu::Cpu(number(key, value, 0, MAX_CPU_NUMBER)? as u32),
                });
            }
            "tasks" => {
                if tasks.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                tasks_key = key;
                tasks = Some(number(key, value, 1, u64::from(MAX_TASKS))? as u32);
            }
            "inject" => {
                if inject.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                inject = Some(lookup(&Fault::ALL, value).ok_or(CommandLineError::BadValue {
                    key,
                    value,
                    expected: "skip-gpr-restore, skip-pkrs-restore, extension-offset, nmi-exit-forgets-lockdep, nmi-reuses-ist-frame, skip-tlb-shootdown",
                })?);
                // Any mode but bench: a bad frame must fail every mode.
            }
            "foreign-timer-hz" => {
                if foreign_timer_hz.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                foreign_timer_hz =
                    Some(number(key, value, 0, u64::from(MAX_FOREIGN_TIMER_HZ))? as u32);
                fuzz_key = key;
            }
            "seeds" => {
                if seeds.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                let bad = CommandLineError::BadRange { key, value, max: MAX_FUZZ_SEEDS_PER_BOOT };
                let (start, end) = value.split_once("..").ok_or(bad)?;
                let (start, end) = (
                    number(key, start, 0, u64::MAX).map_err(|_| bad)?,
                    number(key, end, 0, u64::MAX).map_err(|_| bad)?,
                );
                if start >= end || end - start > MAX_FUZZ_SEEDS_PER_BOOT {
                    return Err(bad);
                }
                seeds = Some((start, end - start));
                fuzz_key = key;
            }
            "seed" | "iterations" | "max-depth" => {
                let slot = match key {
                    "seed" => &mut seed,
                    "iterations" => &mut iterations,
                    _ => &mut max_depth,
                };
                if slot.is_some() {
                    return Err(CommandLineError::DuplicateKey(key));
                }
                let (min, max) = match key {
                    "seed" => (0, u64::MAX),
                    "iterations" => (1, MAX_FUZZ_ITERATIONS),
                    _ => (1, u64::from(MAX_FUZZ_DEPTH)),
                };
                *slot = Some(number(key, value, min, max)?);
                if key == "iterations" {
                    iterations_text = value;
                }
                fuzz_key = key;
            }
            _ => return Err(CommandLineError::UnknownKey(key)),
        }
    }
    if seed.is_some() && seeds.is_some() {
        return Err(CommandLineError::Conflict { key: "seeds", other: "seed" });
    }
    let mode = mode.unwrap_or(Mode::Demo);
    match (mode, cause) {
        (Mode::Oops, None) => return Err(CommandLineError::MissingKey { key: "cause", mode }),
        (Mode::Oops, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err(CommandLineError::KeyNotForMode { key: cause_key, mode }),
    }
    if oops_cpu.is_some() && mode != Mode::Oops {
        return Err(CommandLineError::KeyNotForMode { key: "cpu", mode });
    }
    if seconds.is_some() && !matches!(mode, Mode::Idle | Mode::Tasks) {
        return Err(CommandLineError::KeyNotForMode { key: seconds_key, mode });
    }
    if tasks.is_some() && mode != Mode::Tasks {
        return Err(CommandLineError::KeyNotForMode { key: tasks_key, mode });
    }
    let bench_only_iterations = mode == Mode::Bench && fuzz_key == "iterations";
    if !fuzz_key.is_empty() && mode != Mode::Fuzz && !bench_only_iterations {
        return Err(CommandLineError::KeyNotForMode { key: fuzz_key, mode });
    }
    if mode == Mode::Bench
        && (seed.is_some()
            || seeds.is_some()
            || max_depth.is_some()
            || inject.is_some()
            || foreign_timer_hz.is_some())
    {
        let key = if seed.is_some() {
            "seed"
        } else if seeds.is_some() {
            "seeds"
        } else if foreign_timer_hz.is_some() {
            "foreign-timer-hz"
        } else if max_depth.is_some() {
            "max-depth"
        } else {
            "inject"
        };
        return Err(CommandLineError::KeyNotForMode { key, mode });
    }
    let bench_iterations = match (mode, iterations) {
        (Mode::Bench, Some(n)) if n > MAX_BENCH_ITERATIONS => {
            return Err(CommandLineError::BadNumber {
                key: "iterations",
                value: iterations_text,
                min: 1,
                max: MAX_BENCH_ITERATIONS,
            })
        }
        (Mode::Bench, Some(n)) => n,
        _ => DEFAULT_BENCH_ITERATIONS,
    };
    let defaults = FuzzSettings::default();
    Ok(CommandLine {
        mode,
        oops_cause: cause,
        oops_cpu: oops_cpu.unwrap_or(OopsCpu::Cpu(0)),
        seconds: seconds.unwrap_or(DEFAULT_SECONDS),
        tasks: tasks.unwrap_or(DEFAULT_TASKS),
        fuzz: FuzzSettings {
            seed: seeds.map_or(seed.unwrap_or(defaults.seed), |(start, _)| start),
            seed_count: seeds.map_or(1, |(_, count)| count),
            iterations: iterations.unwrap_or(defaults.iterations),
            max_depth: max_depth.map_or(defaults.max_depth, |depth| depth as u32),
            inject,
            foreign_timer_hz: foreign_timer_hz.unwrap_or(0),
        },
        bench_iterations,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    #[test]
    fn empty_means_demo() {
        assert_eq!(
            parse("").unwrap(),
            CommandLine {
                mode: Mode::Demo,
                oops_cause: None,
                oops_cpu: OopsCpu::Cpu(0),
                seconds: DEFAULT_SECONDS,
                tasks: DEFAULT_TASKS,
                fuzz: FuzzSettings::default(),
                bench_iterations: DEFAULT_BENCH_ITERATIONS
            }
        );
        assert_eq!(parse("  \n\t ").unwrap().mode, Mode::Demo);
    }

    #[test]
    fn modes_and_causes_parse() {
        assert_eq!(parse("mode=selftest").unwrap().mode, Mode::Selftest);
        assert_eq!(
            parse("mode=oops cause=pks").unwrap(),
            CommandLine {
                mode: Mode::Oops,
                oops_cause: Some(OopsCause::PksViolation),
                oops_cpu: OopsCpu::Cpu(0),
                seconds: DEFAULT_SECONDS,
                tasks: DEFAULT_TASKS,
                fuzz: FuzzSettings::default(),
                bench_iterations: DEFAULT_BENCH_ITERATIONS
            }
        );
        assert_eq!(parse("mode=idle seconds=7").unwrap().seconds, 7);
        assert_eq!(
            parse("mode=fuzz seed=0x2a iterations=1000 max-depth=12").unwrap().fuzz,
            FuzzSettings {
                seed: 42,
                seed_count: 1,
                iterations: 1000,
                max_depth: 12,
                inject: None,
                foreign_timer_hz: 0
            }
        );
        assert_eq!(parse("mode=fuzz").unwrap().fuzz, FuzzSettings::default());
        let batch = parse("mode=fuzz seeds=10..0x10 iterations=5").unwrap().fuzz;
        assert_eq!((batch.seed, batch.seed_count, batch.iterations), (10, 6, 5));
    }

    #[test]
    fn bad_seed_ranges_are_refused() {
        for (line, message) in [
            (
                "mode=fuzz seeds=5..5",
                "bad range '5..5' for 'seeds' (expected A..B, B excluded, with A < B and at most 100000 values)",
            ),
            (
                "mode=fuzz seeds=7..3",
                "bad range '7..3' for 'seeds' (expected A..B, B excluded, with A < B and at most 100000 values)",
            ),
            (
                "mode=fuzz seeds=3",
                "bad range '3' for 'seeds' (expected A..B, B excluded, with A < B and at most 100000 values)",
            ),
            (
                "mode=fuzz seeds=a..9",
                "bad range 'a..9' for 'seeds' (expected A..B, B excluded, with A < B and at most 100000 values)",
            ),
            (
                "mode=fuzz seeds=0..100001",
                "bad range '0..100001' for 'seeds' (expected A..B, B excluded, with A < B and at most 100000 values)",
            ),
            ("mode=fuzz seed=1 seeds=0..4", "keys 'seed' and 'seeds' exclude each other"),
            ("mode=fuzz seeds=0..4 seeds=0..4", "command-line key 'seeds' given twice"),
            ("mode=bench seeds=0..4", "key 'seeds' does not apply to mode=bench"),
            (
                "mode=bench foreign-timer-hz=100 iterations=5",
                "key 'foreign-timer-hz' does not apply to mode=bench",
            ),
            ("mode=demo seeds=0..4", "key 'seeds' does not apply to mode=demo"),
        ] {
            assert_eq!(parse(line).unwrap_err().to_string(), message, "{line}");
        }
        assert_eq!(parse("mode=fuzz seeds=0..100000").unwrap().fuzz.seed_count, 100_000);
        assert_eq!(parse("mode=bench iterations=5000").unwrap().bench_iterations, 5000);
        assert_eq!(
            parse("mode=bench iterations=200001").unwrap_err().to_string(),
            "bad value '200001' for 'iterations' (expected a number from 1 to 200000)"
        );
        assert_eq!(
            parse("mode=bench seed=1").unwrap_err().to_string(),
            "key 'seed' does not apply to mode=bench"
        );
        assert_eq!(parse("mode=fuzz foreign-timer-hz=500").unwrap().fuzz.foreign_timer_hz, 500);
        assert!(parse("mode=fuzz foreign-timer-hz=10001").is_err());
        assert!(parse("mode=demo foreign-timer-hz=5").is_err());
        assert_eq!(
            parse("mode=demo inject=extension-offset").unwrap().fuzz.inject,
            Some(Fault::ExtensionOffset)
        );
        assert_eq!(
            parse("mode=fuzz inject=nmi-reuses-ist-frame").unwrap().fuzz.inject,
            Some(Fault::NmiReusesIstFrame)
        );
        assert_eq!(
            parse("mode=fuzz max-depth=13").unwrap_err().to_string(),
            "bad value '13' for 'max-depth' (expected a number from 1 to 12)"
        );
        assert_eq!(
            parse("mode=selftest seed=1").unwrap_err().to_string(),
            "key 'seed' does not apply to mode=selftest"
        );
        assert_eq!(
            parse("mode=fuzz seed=1 seed=2").unwrap_err(),
            CommandLineError::DuplicateKey("seed")
        );
        assert_eq!(parse("mode=idle").unwrap().seconds, DEFAULT_SECONDS);
        assert_eq!(
            parse("mode=oops cause=stack-overflow").unwrap().oops_cause,
            Some(OopsCause::StackOverflow)
        );
        assert_eq!(
            parse("cause=ud2 mode=oops").unwrap().oops_cause,
            Some(OopsCause::InvalidOpcode)
        );
    }

    #[test]
    fn tasks_mode_takes_tasks_and_seconds() {
        let line = parse("mode=tasks").unwrap();
        assert_eq!((line.mode, line.tasks, line.seconds), (Mode::Tasks, 4, 5));
        let line = parse("mode=tasks tasks=64 seconds=10").unwrap();
        assert_eq!((line.tasks, line.seconds), (64, 10));
        assert_eq!(parse("mode=tasks tasks=1").unwrap().tasks, 1);
        for bad in ["0", "65", "-1", "four", "4x", "0x41"] {
            let line = std::format!("mode=tasks tasks={bad}");
            assert_eq!(
                parse(&line).unwrap_err().to_string(),
                std::format!("bad value '{bad}' for 'tasks' (expected a number from 1 to 64)")
            );
        }
        assert_eq!(
            parse("mode=idle tasks=3").unwrap_err().to_string(),
            "key 'tasks' does not apply to mode=idle"
        );
        assert_eq!(
            parse("mode=tasks tasks=3 tasks=4").unwrap_err(),
            CommandLineError::DuplicateKey("tasks")
        );
    }

    #[test]
    fn errors_say_why() {
        assert_eq!(parse("mode").unwrap_err(), CommandLineError::Malformed("mode"));
        assert_eq!(parse("=x").unwrap_err(), CommandLineError::Malformed("=x"));
        assert_eq!(parse("mode=").unwrap_err(), CommandLineError::Malformed("mode="));
        assert_eq!(parse("colour=red").unwrap_err(), CommandLineError::UnknownKey("colour"));
        assert_eq!(
            parse("mode=demo mode=selftest").unwrap_err(),
            CommandLineError::DuplicateKey("mode")
        );
        assert_eq!(
            parse("mode=dance").unwrap_err().to_string(),
            "bad value 'dance' for 'mode' (expected one of: demo, selftest, oops, idle, fuzz, bench, tasks, user, backtrace)"
        );
        for bad in ["0", "-1", "3601", "ten", "1e3"] {
            let line = std::format!("mode=idle seconds={bad}");
            assert_eq!(
                parse(&line).unwrap_err().to_string(),
                std::format!("bad value '{bad}' for 'seconds' (expected a number from 1 to 3600)")
            );
        }
        assert_eq!(
            parse("mode=selftest seconds=3").unwrap_err().to_string(),
            "key 'seconds' does not apply to mode=selftest"
        );
        assert_eq!(
            parse("mode=idle seconds=3 seconds=4").unwrap_err(),
            CommandLineError::DuplicateKey("seconds")
        );
        assert_eq!(
            parse("mode=oops").unwrap_err(),
            CommandLineError::MissingKey { key: "cause", mode: Mode::Oops }
        );
        assert_eq!(parse("mode=oops cause=ud2 cpu=3").unwrap().oops_cpu, OopsCpu::Cpu(3));
        assert_eq!(parse("mode=oops cause=ud2").unwrap().oops_cpu, OopsCpu::Cpu(0));
        assert_eq!(parse("mode=oops cause=ud2 cpu=all").unwrap().oops_cpu, OopsCpu::All);
        assert_eq!(
            parse("mode=oops cause=ud2 cpu=8").unwrap_err().to_string(),
            "bad value '8' for 'cpu' (expected a number from 0 to 7)"
        );
        assert_eq!(
            parse("mode=demo cpu=1").unwrap_err().to_string(),
            "key 'cpu' does not apply to mode=demo"
        );
        assert_eq!(parse("mode=backtrace").unwrap().mode, Mode::Backtrace);
        assert_eq!(
            parse("mode=selftest cause=gp").unwrap_err().to_string(),
            "key 'cause' does not apply to mode=selftest"
        );
    }

    proptest! {
        /// Any word list made of valid words in any order and spacing parses,
        /// and to what the words say.
        #[test]
        fn valid_lines_parse_whatever_the_spacing(
            cause_index in 0usize..OopsCause::ALL.len(),
            spaces in proptest::collection::vec("[ \t\n]{1,3}", 3),
            cause_first in any::<bool>(),
        ) {
            let (cause, cause_name) = OopsCause::ALL[cause_index];
            let words = if cause_first {
                ["cause=", cause_name, "mode=", "oops"]
            } else {
                ["mode=", "oops", "cause=", cause_name]
            };
            let line = std::format!(
                "{}{}{}{}{}{}{}",
                spaces[0], words[0], words[1], spaces[1], words[2], words[3], spaces[2]
            );
            let parsed = parse(&line).unwrap();
            prop_assert_eq!(parsed.mode, Mode::Oops);
            prop_assert_eq!(parsed.oops_cause, Some(cause));
        }

        /// Arbitrary input never panics, and errors always render one line.
        #[test]
        fn arbitrary_input_is_accepted_or_explained(line in ".{0,64}") {
            if let Err(error) = parse(&line) {
                prop_assert!(!error.to_string().contains('\n'));
            }
        }
    }
}
