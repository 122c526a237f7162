//! Reporting: a violation (show_regs, the seed, the event path, a call
//! trace, the failed `RESULT`), the event labels of the coverage counts,
//! and the `FUZZ` line of a seed.

use super::*;

/// The label index of level `index`'s event.
impl lane::OwnLane {
    pub(super) fn label(&self, index: usize) -> usize {
        self.level(index).kind as usize + if self.is_user_level(index) { ALL_KINDS } else { 0 }
    }
}

/// Prints label `index`'s name (`int3`, `user_int3`).
pub(super) fn print_label(index: usize) {
    let user = if index >= ALL_KINDS { "user_" } else { "" };
    let kind = Kind::ALL[index % ALL_KINDS];
    print!("\"{user}{}\"", kind.name());
}

pub(super) fn print_path(depth: usize) {
    print!("extregs: fuzz: path:");
    for index in 0..=depth.min(program_len().saturating_sub(1)) {
        print!("{} {}", if index == 0 { "" } else { " >" }, level(index).kind.name());
    }
    println!();
}

/// The TSC now.
pub(super) fn tsc_now() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Microseconds of `lane`'s seed from its start to TSC `tsc`.
pub(super) fn seed_microseconds(lane: &Lane, tsc: u64) -> u64 {
    let cycles = tsc.saturating_sub(lane.seed_started_tsc.load(Ordering::Relaxed));
    (cycles * 1000 / apic::tsc_ticks_per_ms()).max(1)
}

/// Prints the failing RESULT of this lane's seed and exits QEMU.
/// `microseconds`: the seed's time up to the failure (not the dump), so a
/// campaign counts the frames it validated with it.
pub(super) fn report_and_die(
    invariant: &str,
    depth: usize,
    detail: core::fmt::Arguments<'_>,
    microseconds: u64,
) -> ! {
    let lane = &lane();
    let (seed, iteration, event) = (
        lane.seed.load(Ordering::Relaxed),
        lane.iteration.load(Ordering::Relaxed),
        lane.event_number.load(Ordering::Relaxed),
    );
    let cpu = lane.home_cpu.load(Ordering::Relaxed);
    println!("extregs: fuzz: seed={seed} iteration={iteration} event={event} level={depth} (lane of CPU {cpu})");
    print_path(depth);
    result::emit(
        false,
        format_args!(
            ",\"seed\":{seed},\"cpu\":{cpu},\"iteration\":{iteration},\"event\":{event},\"level\":{depth},\"violations\":1,\"invariant\":\"{invariant}\",\"frames\":{},\"microseconds\":{microseconds},\"error\":\"{detail}\"",
            lane.frames.load(Ordering::Relaxed),
        ),
    );
    exit::exit_qemu(exit::ExitCode::Failure)
}

/// A frame broke an invariant: show it and die.
pub(super) fn violation(
    regs: &PtRegs,
    depth: usize,
    invariant: &str,
    detail: core::fmt::Arguments<'_>,
) -> ! {
    let detected = tsc_now();
    oops::begin_dying();
    println!("extregs: fuzz: VIOLATION {invariant}: {detail}");
    // SAFETY: the hooks only get entry-stub frames.
    unsafe { show_regs::show_regs(regs) };
    // From here, not from `regs`: the trampolines run with a random RBP,
    // and this handler's callers lead through the frame anyway.
    crate::debug::calltrace::print_call_trace_here();
    report_and_die(invariant, depth, detail, seed_microseconds(&lane(), detected))
}

/// What came back after an event broke an invariant: show it as a frame.
pub(super) fn violation_after(
    depth: usize,
    output: &PtRegs,
    invariant: &str,
    detail: core::fmt::Arguments<'_>,
) -> ! {
    let detected = tsc_now();
    oops::begin_dying();
    println!("extregs: fuzz: VIOLATION {invariant}: {detail}");
    println!("extregs: fuzz: registers of level {depth}'s context after the return:");
    let mut frame = ExtendedPtRegs { regs: *output, ..ExtendedPtRegs::default() };
    // The context went on at the trampoline's resume point.
    frame.regs.ip = lane().sites(depth, level(depth).kind).1;
    if is_user_level(depth) {
        frame.regs.cs = u64::from(gdt::USER_CS.0);
        frame.regs.ss = u64::from(gdt::USER_DS.0);
        frame.arch.pks = if pks::enabled() { PKRS_DEFAULT } else { 0 };
    } else {
        frame.regs.cs = u64::from(gdt::KERNEL_CS.0);
        frame.regs.ss = u64::from(gdt::KERNEL_DS.0);
        if pks::enabled() {
            frame.arch.pks = pks::read_pkrs();
        }
    }
    // SAFETY: `frame.regs` is inside a whole ExtendedPtRegs.
    unsafe { show_regs::show_regs(&frame.regs) };
    // The context came back: its callers are this code's.
    crate::debug::calltrace::print_call_trace_here();
    report_and_die(invariant, depth, detail, seed_microseconds(&lane(), detected))
}

/// Boot-wide counters a seed's window runs from: foreign events the
/// kernel's own handlers took, the foreign timer's IRQs, and NMIs latched
/// inside NMIs from user mode. (The entry checks' and the models' errors
/// are charged to the lane whose task took them: `lane::observe_errors`.)
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub(super) kernel_nmis: u64,
    pub(super) foreign_irqs: u64,
    pub(super) user_nmis_latched: u64,
}

impl Window {
    pub(super) fn now() -> Window {
        Window {
            kernel_nmis: nmi::count(),
            foreign_irqs: irq::foreign_timer_irqs(),
            user_nmis_latched: nmi::user_nmis_latched(),
        }
    }
}

/// Which summary [`SeedSummary::print_fields`] prints.
#[derive(Clone, Copy, Debug)]
pub(super) enum Summary {
    /// A seed's `FUZZ` line in a batch: its digest and its window's entry
    /// checks, without `kind_depth` and `contexts`. Those two are most of
    /// the bytes (4 of a line's 5 KB), and every byte crosses the emulated
    /// UART one port write and one host `write` at a time: printing them
    /// cost about 4 ms a seed, 2 % of a 1,000-iteration seed
    /// (docs/boot.md, "Fifth pass"). The batch's RESULT carries them,
    /// summed over its seeds.
    SeedLine { seed: u64 },
    /// The RESULT of a one-seed boot: the seed's own summary, whole.
    OneSeedResult { seed: u64 },
    /// The RESULT of a batch: its seeds added up, breakdowns included.
    BatchResult,
}

/// One seed's run (or, added up, a batch's): what `FUZZ` lines and
/// `RESULT` report.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SeedSummary {
    pub(super) iterations: u64,
    pub(super) frames: u64,
    /// Time in the seed's iterations (TSC; boot and set-up excluded).
    pub(super) microseconds: u64,
    pub(super) max_depth_reached: u64,
    pub(super) latched_nmis: u64,
    /// The seed's trace digest (a batch's totals carry the last seed's,
    /// which is not printed).
    pub(super) digest: u64,
    pub(super) kinds: [u64; ALL_KINDS],
    pub(super) user_kinds: [u64; ALL_KINDS],
    pub(super) depths: [[u64; MAX_LEVELS]; LABELS],
    pub(super) contexts: [[u64; CONTEXTS]; LABELS],
    pub(super) foreign_nmis: u64,
    pub(super) foreign_user_nmis: u64,
    pub(super) foreign_irqs: u64,
    /// Frames that failed `check_frame`, and context switches that found
    /// the models wrong, in the seed's window.
    pub(super) frame_errors: u64,
    pub(super) model_errors: u64,
    /// NMIs latched inside NMIs from user mode (their handler's repeats).
    pub(super) user_nmis_latched: u64,
    /// NMIs the lane sent to other CPUs meanwhile.
    pub(super) cross_cpu_nmis: u64,
    /// `migrate` levels that resumed on another CPU.
    pub(super) migrations: u64,
}

impl SeedSummary {
    pub(super) fn frames_per_s(&self) -> u64 {
        self.frames * 1_000_000 / self.microseconds.max(1)
    }

    pub(super) fn add(&mut self, seed: &SeedSummary) {
        self.iterations += seed.iterations;
        self.frames += seed.frames;
        self.microseconds += seed.microseconds;
        self.max_depth_reached = self.max_depth_reached.max(seed.max_depth_reached);
        self.latched_nmis += seed.latched_nmis;
        self.digest = seed.digest;
        for (total, count) in self.kinds.iter_mut().zip(seed.kinds) {
            *total += count;
        }
        for (total, count) in self.user_kinds.iter_mut().zip(seed.user_kinds) {
            *total += count;
        }
        for (totals, counts) in self.depths.iter_mut().zip(seed.depths) {
            for (total, count) in totals.iter_mut().zip(counts) {
                *total += count;
            }
        }
        for (totals, counts) in self.contexts.iter_mut().zip(seed.contexts) {
            for (total, count) in totals.iter_mut().zip(counts) {
                *total += count;
            }
        }
        self.foreign_nmis += seed.foreign_nmis;
        self.foreign_user_nmis += seed.foreign_user_nmis;
        self.foreign_irqs += seed.foreign_irqs;
        self.frame_errors += seed.frame_errors;
        self.model_errors += seed.model_errors;
        self.user_nmis_latched += seed.user_nmis_latched;
        self.cross_cpu_nmis += seed.cross_cpu_nmis;
        self.migrations += seed.migrations;
    }

    /// Prints the JSON fields of `summary` (inside a `FUZZ {…}` object, or
    /// the rest of a RESULT object).
    pub(super) fn print_fields(&self, summary: Summary) {
        let (seed, checks, breakdowns) = match summary {
            Summary::SeedLine { seed } => (Some(seed), true, false),
            Summary::OneSeedResult { seed } => (Some(seed), false, true),
            Summary::BatchResult => (None, false, true),
        };
        if let Some(seed) = seed {
            print!("\"seed\":{seed},");
        }
        print!(
            "\"iterations\":{},\"frames\":{},\"microseconds\":{},\"frames_per_s\":{},\"max_depth_reached\":{},\"violations\":0,\"latched_nmis\":{},\"foreign_nmis\":{},\"foreign_user_nmis\":{},\"foreign_irqs\":{},",
            self.iterations,
            self.frames,
            self.microseconds,
            self.frames_per_s(),
            self.max_depth_reached,
            self.latched_nmis,
            self.foreign_nmis,
            self.foreign_user_nmis,
            self.foreign_irqs,
        );
        if checks {
            print!(
                "\"frame_errors\":{},\"model_errors\":{},",
                self.frame_errors, self.model_errors
            );
        }
        print!(
            "\"user_nmis_latched\":{},\"cross_cpu_nmis\":{},\"migrations\":{},",
            self.user_nmis_latched, self.cross_cpu_nmis, self.migrations
        );
        if seed.is_some() {
            print!("\"digest\":\"{:016x}\",", self.digest);
        }
        print!("\"kinds\":{{");
        for (index, kind) in KINDS.iter().enumerate() {
            print!(
                "{}\"{}\":{}",
                if index == 0 { "" } else { "," },
                kind.name(),
                self.kinds[*kind as usize]
            );
        }
        for kind in USER_KINDS {
            print!(",\"user_{}\":{}", kind.name(), self.user_kinds[kind as usize]);
        }
        print!("}}");
        if !breakdowns {
            return;
        }
        // Frames by depth, and by what they interrupted: the rows with any.
        print!(",\"kind_depth\":{{");
        let mut first = true;
        for (index, counts) in self.depths.iter().enumerate() {
            if counts.iter().all(|&count| count == 0) {
                continue;
            }
            print!("{}", if first { "" } else { "," });
            first = false;
            print_label(index);
            print!(":[");
            for (depth, count) in counts.iter().enumerate() {
                print!("{}{count}", if depth == 0 { "" } else { "," });
            }
            print!("]");
        }
        print!("}},\"contexts\":{{");
        first = true;
        for (index, counts) in self.contexts.iter().enumerate() {
            if counts.iter().all(|&count| count == 0) {
                continue;
            }
            print!("{}", if first { "" } else { "," });
            first = false;
            print_label(index);
            print!(":{{");
            let mut first_context = true;
            for (context, &count) in counts.iter().enumerate().filter(|(_, &count)| count > 0) {
                print!("{}", if first_context { "" } else { "," });
                first_context = false;
                match context {
                    0 => print!("\"task\""),
                    1 => print!("\"user\""),
                    parent => print_label(parent - 2),
                }
                print!(":{count}");
            }
            print!("}}");
        }
        print!("}}");
    }
}
