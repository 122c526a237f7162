//! The NMI backtrace of every CPU (Linux's `trigger_all_cpu_backtrace` and
//! `nmi_cpu_backtrace`): every online CPU, the one asking included, is
//! sent an NMI; each answers from its NMI handler with `NMI backtrace for
//! cpu K`, show_regs of the context the NMI interrupted (the extension
//! included) and the Call Trace from inside the handler, whose ` <NMI>` …
//! ` </NMI>` section is the handler on that CPU's own NMI stack.
//!
//! Each CPU's dump is whole: a dump lock, taken by one CPU at a time
//! around its whole dump (Linux's `printk_cpu_sync_get_irqsave`), keeps the
//! other CPUs' dumps out of it. Waiting for it in an NMI is safe: the
//! holder is another CPU's NMI handler, which only prints, and the asking
//! CPU waits for the answers without holding it. The holder may wait for
//! the console lock; so an NMI whose own CPU holds the console (it
//! interrupted a print) does not answer then, as it could neither print
//! nor let the holder's wait end: it answers the next NMI, which the asker
//! sends every [`RESEND_MS`] to the CPUs that have not answered.

use crate::arch::percpu::this_cpu;
use crate::arch::{apic, serial, smp};
use crate::debug::{calltrace, show_regs};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use extregs_regs::{PtRegs, NR_CPUS};

/// CPUs asked for a backtrace that have not answered yet.
static PENDING: [AtomicBool; NR_CPUS] = [const { AtomicBool::new(false) }; NR_CPUS];

/// The CPU printing its dump, plus one (0: none).
static DUMP_OWNER: AtomicUsize = AtomicUsize::new(0);

/// How long the asking CPU waits for the others (Linux waits 10 s too).
const ANSWER_TIMEOUT_MS: u64 = 10_000;

/// How often the asker sends another NMI to the CPUs that have not
/// answered.
const RESEND_MS: u64 = 100;

/// Runs `body` holding the dump lock, so no other CPU's dump interleaves
/// with what it prints. Re-entrant on the CPU that holds it (a dump that
/// faults and oopses keeps printing).
pub fn with_dump_lock<T>(body: impl FnOnce() -> T) -> T {
    let me = this_cpu() + 1;
    let already_mine = DUMP_OWNER.load(Ordering::SeqCst) == me;
    if !already_mine {
        while DUMP_OWNER.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            core::hint::spin_loop();
        }
    }
    let result = body();
    if !already_mine {
        DUMP_OWNER.store(0, Ordering::SeqCst);
    }
    result
}

/// What a backtrace request found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    /// CPUs asked (the online ones).
    pub asked: u32,
    /// CPUs that printed their dump within the wait.
    pub answered: u32,
}

/// Asks every online CPU for its backtrace through an NMI and waits
/// (bounded) for the answers; a CPU that does not answer is named. Call
/// with interrupts off or on; not from an NMI handler (this CPU's answer
/// comes in its own NMI, after this returns to the wait).
pub fn trigger_all_cpu_backtrace() -> Answers {
    let online: heapless_cpus::Cpus = smp::online_cpus().map(|(cpu, _)| cpu).collect();
    println!(
        "NMI backtrace: sending NMI from CPU {} to CPUs {}:",
        this_cpu(),
        heapless_cpus::Display(&online)
    );
    for &cpu in online.iter() {
        PENDING[cpu].store(true, Ordering::SeqCst);
    }
    let ticks_per_ms = apic::tsc_ticks_per_ms();
    // SAFETY: RDTSC has no side effects.
    let now = || unsafe { core::arch::x86_64::_rdtsc() };
    let start = now();
    let mut last_send = None;
    // To each online CPU by APIC ID, never by shorthand: a CPU the MADT
    // lists that is not online (left out, or still on its way up) must
    // not get an NMI it has no IDT for.
    while online.iter().any(|&cpu| PENDING[cpu].load(Ordering::SeqCst))
        && now() - start < ticks_per_ms * ANSWER_TIMEOUT_MS
    {
        if last_send.is_none_or(|sent| now() - sent >= ticks_per_ms * RESEND_MS) {
            for (cpu, apic_id) in smp::online_cpus() {
                if PENDING[cpu].load(Ordering::SeqCst) {
                    apic::send_nmi(apic_id);
                }
            }
            last_send = Some(now());
        }
        core::hint::spin_loop();
    }
    let mut answers = Answers { asked: online.len() as u32, answered: 0 };
    for &cpu in online.iter() {
        if PENDING[cpu].swap(false, Ordering::SeqCst) {
            println!("NMI backtrace: CPU {cpu} did not answer within {ANSWER_TIMEOUT_MS} ms");
        } else {
            answers.answered += 1;
        }
    }
    answers
}

/// The NMI handler's part (Linux's `nmi_cpu_backtrace`): when this CPU was
/// asked, prints its dump under the dump lock and answers. `regs` is the
/// NMI's frame. True when it answered.
pub fn nmi_cpu_backtrace(regs: &PtRegs) -> bool {
    let cpu = this_cpu();
    if !PENDING[cpu].load(Ordering::SeqCst) || serial::held_by_this_cpu() {
        return false;
    }
    with_dump_lock(|| {
        println!("NMI backtrace for cpu {cpu}");
        // SAFETY: `regs` is the NMI stub's frame, with its extension below.
        unsafe { show_regs::show_regs(regs) };
        calltrace::print_call_trace_here();
    });
    PENDING[cpu].store(false, Ordering::SeqCst);
    true
}

/// A fixed-size list of CPU numbers (no allocator), printed Linux's way.
mod heapless_cpus {
    use extregs_regs::NR_CPUS;

    /// Up to `NR_CPUS` CPU numbers.
    pub struct Cpus {
        cpus: [usize; NR_CPUS],
        len: usize,
    }

    impl Cpus {
        pub fn iter(&self) -> impl Iterator<Item = &usize> {
            self.cpus[..self.len].iter()
        }

        pub fn len(&self) -> usize {
            self.len
        }
    }

    impl FromIterator<usize> for Cpus {
        fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Cpus {
            let mut list = Cpus { cpus: [0; NR_CPUS], len: 0 };
            for cpu in iter.into_iter().take(NR_CPUS) {
                list.cpus[list.len] = cpu;
                list.len += 1;
            }
            list
        }
    }

    /// `0-3` for a run, `0,2` otherwise (Linux's `%*pbl`).
    pub struct Display<'a>(pub &'a Cpus);

    impl core::fmt::Display for Display<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let cpus = &self.0.cpus[..self.0.len];
            let mut index = 0;
            let mut first = true;
            while index < cpus.len() {
                let start = cpus[index];
                let mut end = start;
                while index + 1 < cpus.len() && cpus[index + 1] == end + 1 {
                    index += 1;
                    end = cpus[index];
                }
                if !first {
                    write!(f, ",")?;
                }
                first = false;
                if end > start {
                    write!(f, "{start}-{end}")?;
                } else {
                    write!(f, "{start}")?;
                }
                index += 1;
            }
            Ok(())
        }
    }
}
