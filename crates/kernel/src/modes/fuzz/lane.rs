//! The fuzzer's lanes: on N CPUs, `mode=fuzz` runs N seeds at once, one
//! per lane. A lane is a task pinned to its home CPU that runs seeds one
//! after another (the next one a shared counter hands out), each from the
//! lane's own state ([`Lane`]): its program, depth, counters, digest and
//! partner task.
//!
//! The hooks find the lane of an event from the *running task*
//! ([`current_lane`]), never from the CPU: a `migrate` level moves a task
//! to another CPU in the middle of a program, and a lane's events are
//! raised by three tasks (the lane's own, its partner after a `preempt`,
//! and the user task of a ring-3 level), each bound to the lane before it
//! first runs ([`bind`]).
//!
//! What lanes share, and how:
//! - The 8259, which raises a ring-3 level's NMI on CPU 0's LINT0: one
//!   lane at a time holds it ([`Claim::pic_nmi`]), and that lane's task
//!   moves to CPU 0 for the level (the user task runs there too).
//! - The Linux personality's signal counters: one signal-ending ring-3
//!   level at a time ([`Claim::signal_level`]).
//! - The fuzz pkey page: read only, at one address, with each CPU's own
//!   PKRS deciding the access.
//! - The wait loops' counter (`extregs_fuzz_spins`): every raise sets it
//!   back, so with several CPUs an NMI that never comes is caught by the
//!   runner's timeout rather than by the count running out (an IRQ that
//!   never comes always is: that loop halts).
//! - Cross-CPU NMIs: at a random quarter of its raises a lane sends an NMI
//!   to another online CPU ([`nmi_another_cpu`]), chosen by a side PRNG
//!   that is not the seed's, so the programs stay a function of the seed.
//!   The CPU that takes it classifies it like any foreign NMI.

use super::*;
use crate::arch::{percpu, smp};
use extregs_regs::NR_CPUS;

/// Where a task belongs to no lane.
const NO_LANE: usize = usize::MAX;
/// A [`LANE_OF_SLOT`] entry that binds no task.
const UNBOUND: u64 = u64::MAX;

/// One lane's state: everything a seed's run reads and writes.
pub(super) struct Lane {
    /// This lane's number (its user page, its place in [`LANES`]).
    pub(super) index: AtomicUsize,
    /// The CPU the lane's task starts every iteration on.
    pub(super) home_cpu: AtomicUsize,
    /// A program is running (the hooks claim its events).
    pub(super) active: AtomicBool,
    /// Levels whose handler is running (so the next event is for this level).
    pub(super) depth: AtomicUsize,
    /// Bit d: level d's event was handled (its handler ran to the end).
    pub(super) handled: AtomicU32,
    /// Bit d: level d (an NMI) saw the repeat of a latched NMI.
    pub(super) repeated: AtomicU32,
    /// Where each level's PtRegs was (for the nesting checks).
    pub(super) frame_address: [AtomicU64; MAX_LEVELS],
    pub(super) frames: AtomicU64,
    pub(super) kind_counts: [AtomicU64; ALL_KINDS],
    /// The ring-3 levels' kinds, counted apart (`user_<kind>` in RESULT).
    pub(super) user_kind_counts: [AtomicU64; ALL_KINDS],
    /// Frames per event label and depth (`kind_depth` in RESULT).
    pub(super) depth_counts: [[AtomicU64; MAX_LEVELS]; LABELS],
    /// Frames per event label and interrupted context (`contexts`).
    pub(super) context_counts: [[AtomicU64; CONTEXTS]; LABELS],
    /// NMIs the program did not raise that came in while an iteration ran
    /// (see `raise::is_foreign_nmi`), and those of them in user mode.
    pub(super) foreign_nmis: AtomicU64,
    pub(super) foreign_user_nmis: AtomicU64,
    pub(super) latched_nmis: AtomicU64,
    pub(super) max_depth_reached: AtomicUsize,
    pub(super) digest: AtomicU64,
    pub(super) seed: AtomicU64,
    /// The TSC when the seed's first iteration began (for a violation's
    /// `microseconds`).
    pub(super) seed_started_tsc: AtomicU64,
    pub(super) iteration: AtomicU64,
    pub(super) event_number: AtomicU64,
    /// The `ip` the running chain's own NMI left in its frame (0: none yet),
    /// so a latched repeat can be told from a foreign NMI.
    pub(super) own_nmi_ip: AtomicU64,
    /// The frame of the signal-ending ring-3 level's event (0: none): the
    /// event hook leaves that event unclaimed, for the Linux personality to
    /// make a signal. Keyed by the frame's address, so a foreign NMI landing
    /// between the mark and the hook's answer can't take it.
    pub(super) leave_to_signal: AtomicU64,
    /// The task a `preempt` event switches to.
    pub(super) partner: spin::Once<sched::TaskHandle>,
    /// The level the partner raises next (the one after the preempt event).
    pub(super) partner_start: AtomicUsize,
    /// Programs (possibly empty) the partner ran to the end.
    pub(super) partner_runs: AtomicU64,
    pub(super) partner_stop: AtomicBool,
    /// The running program (see [`ProgramCell`]).
    pub(super) program: ProgramCell,
    /// The lane's ring-3 user page (`user::fuzz_page`).
    pub(super) user_page: AtomicU64,
    /// NMIs this lane sent to other CPUs.
    pub(super) cross_cpu_nmis: AtomicU64,
    /// `migrate` levels that resumed on another CPU.
    pub(super) migrations: AtomicU64,
    /// The side PRNG (xorshift64) that picks when and where cross-CPU NMIs
    /// go; seeded from the TSC, never from the seed.
    pub(super) side_random: AtomicU64,
    /// This iteration moved the lane's task off its home CPU (a `migrate`
    /// level, or the 8259's NMI, which only CPU 0 takes).
    pub(super) away: AtomicBool,
    /// Frames that failed the entry checks, and context switches that
    /// found the models wrong, in this lane's tasks (see [`observe_errors`]).
    pub(super) frame_errors: AtomicU64,
    pub(super) model_errors: AtomicU64,
}

impl Lane {
    const fn new() -> Lane {
        Lane {
            index: AtomicUsize::new(0),
            home_cpu: AtomicUsize::new(0),
            active: AtomicBool::new(false),
            depth: AtomicUsize::new(0),
            handled: AtomicU32::new(0),
            repeated: AtomicU32::new(0),
            frame_address: [const { AtomicU64::new(0) }; MAX_LEVELS],
            frames: AtomicU64::new(0),
            kind_counts: [const { AtomicU64::new(0) }; ALL_KINDS],
            user_kind_counts: [const { AtomicU64::new(0) }; ALL_KINDS],
            depth_counts: [const { [const { AtomicU64::new(0) }; MAX_LEVELS] }; LABELS],
            context_counts: [const { [const { AtomicU64::new(0) }; CONTEXTS] }; LABELS],
            foreign_nmis: AtomicU64::new(0),
            foreign_user_nmis: AtomicU64::new(0),
            latched_nmis: AtomicU64::new(0),
            max_depth_reached: AtomicUsize::new(0),
            // `reset_for_seed` starts it at FNV_OFFSET before a seed's first fold; zero here
            // keeps every lane all-zero, so LANES is .bss and not 100 KB of the kernel file.
            digest: AtomicU64::new(0),
            seed: AtomicU64::new(0),
            seed_started_tsc: AtomicU64::new(0),
            iteration: AtomicU64::new(0),
            event_number: AtomicU64::new(0),
            own_nmi_ip: AtomicU64::new(0),
            leave_to_signal: AtomicU64::new(0),
            partner: spin::Once::new(),
            partner_start: AtomicUsize::new(0),
            partner_runs: AtomicU64::new(0),
            partner_stop: AtomicBool::new(false),
            program: ProgramCell::new(),
            user_page: AtomicU64::new(0),
            cross_cpu_nmis: AtomicU64::new(0),
            migrations: AtomicU64::new(0),
            side_random: AtomicU64::new(0),
            away: AtomicBool::new(false),
            frame_errors: AtomicU64::new(0),
            model_errors: AtomicU64::new(0),
        }
    }

    /// Folds `value` into the seed's trace digest (FNV-1a over its bytes).
    pub(super) fn fold_digest(&self, value: u64) {
        let mut hash = self.digest.load(Ordering::Relaxed);
        for byte in value.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        self.digest.store(hash, Ordering::Relaxed);
    }

    /// The next draw of the side PRNG (only the lane's own tasks draw, one
    /// at a time: the load and store need not be one atomic step).
    fn side_draw(&self) -> u64 {
        let mut x = self.side_random.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.side_random.store(x, Ordering::Relaxed);
        x
    }

    /// Puts every per-seed counter and the digest back to the start.
    pub(super) fn reset_for_seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.frames.store(0, Ordering::Relaxed);
        for counter in self.kind_counts.iter().chain(self.user_kind_counts.iter()) {
            counter.store(0, Ordering::Relaxed);
        }
        for counter in
            self.depth_counts.iter().flatten().chain(self.context_counts.iter().flatten())
        {
            counter.store(0, Ordering::Relaxed);
        }
        self.foreign_nmis.store(0, Ordering::Relaxed);
        self.foreign_user_nmis.store(0, Ordering::Relaxed);
        self.latched_nmis.store(0, Ordering::Relaxed);
        self.max_depth_reached.store(0, Ordering::Relaxed);
        self.digest.store(FNV_OFFSET, Ordering::Relaxed);
        self.event_number.store(0, Ordering::Relaxed);
    }
}

/// Every lane (lane k's home is the k-th online CPU).
pub(super) static LANES: [Lane; NR_CPUS] = [const { Lane::new() }; NR_CPUS];

/// The lane each task slot works for, with the PID of the task it was
/// bound for (`pid << 32 | lane`; [`UNBOUND`]: none). A binding names its
/// task, so one left behind in a slot that a new task has reused (it is
/// never cleared: clearing it after `wait` would race with a lane that has
/// already reused the slot) binds nothing, and neither does the window
/// before a lane's own task or partner binds itself.
static LANE_OF_SLOT: [AtomicU64; sched::task::MAX_TASKS] =
    [const { AtomicU64::new(UNBOUND) }; sched::task::MAX_TASKS];

/// `lane` bound for the task `pid`.
fn binding(pid: u32, lane: usize) -> u64 {
    u64::from(pid) << 32 | lane as u64
}

/// The running task's lane, as only [`current_lane`] hands it out: the
/// proof that the holder is one of the lane's tasks or runs in one of its
/// events, which is what reading the lane's program (its methods, see
/// `ProgramCell`) requires. It derefs to the [`Lane`] for everything else.
#[derive(Clone, Copy)]
pub(super) struct OwnLane(&'static Lane);

impl core::ops::Deref for OwnLane {
    type Target = Lane;

    fn deref(&self) -> &Lane {
        self.0
    }
}

/// The lane the running task works for, if any.
pub(super) fn current_lane() -> Option<OwnLane> {
    let bound = LANE_OF_SLOT[sched::current_slot()].load(Ordering::Acquire);
    if bound == UNBOUND || (bound >> 32) as u32 != sched::current_pid() {
        return None;
    }
    LANES.get((bound & 0xffff_ffff) as usize).map(OwnLane)
}

/// The lane of the running task, which must work for one (everything but
/// the hooks' first look runs in a lane's task or one of its events).
pub(super) fn lane() -> OwnLane {
    current_lane().expect("fuzz code runs in a fuzz lane's task")
}

/// Binds `handle`'s task to `lane`. Before the task can first run: the
/// caller spawned it on a CPU that is busy with the caller (its own,
/// interrupts off), or it parks first thing.
pub(super) fn bind(handle: sched::TaskHandle, lane: &Lane) {
    let bound = binding(handle.pid(), lane.index.load(Ordering::Relaxed));
    LANE_OF_SLOT[handle.slot()].store(bound, Ordering::Release);
}

/// Binds the running task to lane `index` (a lane's own task and its
/// partner, first thing: they may run before their spawner returns; until
/// then they are no lane's).
pub(super) fn bind_current(index: usize) {
    let bound = binding(sched::current_pid(), index);
    LANE_OF_SLOT[sched::current_slot()].store(bound, Ordering::Release);
}

/// Charges a failed entry check or a wrong model to the running task's
/// lane (`result::observe_frame_errors`, `sched::observe_model_errors`):
/// on N CPUs the window of boot-wide counters would charge them to
/// whichever lane's seed finished next.
pub(super) fn observe_errors(on: bool) {
    fn frame_error() {
        if let Some(lane) = current_lane() {
            lane.frame_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn model_error() {
        if let Some(lane) = current_lane() {
            lane.model_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    crate::debug::result::observe_frame_errors(on.then_some(frame_error as fn()));
    sched::observe_model_errors(on.then_some(model_error as fn()));
}

/// The CPU mask of the CPU the caller runs on (interrupts off, so it stays).
pub(super) fn this_cpu_mask() -> u32 {
    1 << percpu::this_cpu()
}

/// Sends an NMI to another online CPU, at a quarter of the calls (by the
/// side PRNG); a no-op on one CPU.
pub(super) fn nmi_another_cpu(lane: &Lane) {
    let online = smp::cpus_online() as u64;
    if online < 2 {
        return;
    }
    let draw = lane.side_draw();
    if !draw.is_multiple_of(4) {
        return;
    }
    let this = percpu::this_cpu();
    let pick = (draw >> 8) % (online - 1);
    let target = smp::online_cpus().filter(|&(cpu, _)| cpu != this).nth(pick as usize);
    if let Some((_, apic_id)) = target {
        apic::send_nmi(apic_id);
        lane.cross_cpu_nmis.fetch_add(1, Ordering::Relaxed);
    }
}

/// The lane that holds the 8259's NMI (its ring-3 NMI level is armed or
/// about to be), or [`NO_LANE`].
static PIC_NMI_OWNER: AtomicUsize = AtomicUsize::new(NO_LANE);

/// The lane running a signal-ending ring-3 level, or [`NO_LANE`]: the
/// Linux personality's signal counters and last-frame records, which the
/// level's check reads, are the boot's, so one lane at a time.
static SIGNAL_LEVEL_OWNER: AtomicUsize = AtomicUsize::new(NO_LANE);

/// Does `lane` hold the 8259's NMI?
pub(super) fn owns_pic_nmi(lane: &Lane) -> bool {
    PIC_NMI_OWNER.load(Ordering::SeqCst) == lane.index.load(Ordering::Relaxed)
}

/// A lane's hold on something lanes share one at a time; dropping it lets
/// the next lane in.
pub(super) struct Claim(&'static AtomicUsize);

impl Claim {
    fn take(owner: &'static AtomicUsize, lane: &Lane) -> Claim {
        let index = lane.index.load(Ordering::Relaxed);
        // The holder may be waiting to run on this CPU: give it the CPU.
        // Interrupts stay off: answer a TLB shootdown meanwhile.
        while owner.compare_exchange(NO_LANE, index, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            crate::arch::tlb::answer_pending_shootdown();
            sched::yield_now();
        }
        Claim(owner)
    }

    /// The 8259's NMI, which reaches CPU 0 only (the 8259 drives the boot
    /// CPU's LINT0): taking it also moves the lane's task to CPU 0 (it goes
    /// home at its next iteration).
    pub(super) fn pic_nmi(lane: &Lane) -> Claim {
        let claim = Claim::take(&PIC_NMI_OWNER, lane);
        if percpu::this_cpu() != 0 {
            lane.away.store(true, Ordering::Relaxed);
            sched::set_current_affinity(1);
        }
        claim
    }

    /// The right to run a signal-ending ring-3 level.
    pub(super) fn signal_level(lane: &Lane) -> Claim {
        Claim::take(&SIGNAL_LEVEL_OWNER, lane)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.store(NO_LANE, Ordering::SeqCst);
    }
}

/// What every lane reads: the settings, the next seed to hand out, the
/// seeds' summaries added up, and the window of boot-wide counters the
/// next finished seed's FUZZ line takes its foreign counts from.
pub(super) struct Shared {
    pub(super) settings: FuzzSettings,
    pub(super) next_seed_offset: AtomicU64,
    pub(super) totals: spin::Mutex<SeedSummary>,
    pub(super) window: spin::Mutex<Window>,
}

pub(super) static SHARED: spin::Once<Shared> = spin::Once::new();

/// Held while a lane prints its seed's `FUZZ` line (many prints).
static FUZZ_LINE: spin::Mutex<()> = spin::Mutex::new(());

/// Lane `index`'s task: runs seeds until none are left.
pub(super) fn lane_main(index: usize) {
    bind_current(index);
    let lane = &LANES[index];
    let shared = SHARED.get().expect("the lanes' shared state is set up before they start");
    let settings = shared.settings;
    // As in the mode's own context: events are raised with IF clear.
    irqflags::local_irq_disable();
    // SAFETY: RDTSC has no side effects.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    lane.side_random
        .store(tsc ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), Ordering::Relaxed);
    let batch = settings.seed_count > 1;
    loop {
        let offset = shared.next_seed_offset.fetch_add(1, Ordering::SeqCst);
        if offset >= settings.seed_count {
            break;
        }
        let seed = settings.seed + offset;
        let summary = run_seed(lane, seed, settings.iterations, settings.max_depth as usize);
        if batch {
            if summary.frame_errors + summary.model_errors > 0 {
                // Name this seed: check_frame printed what it found (the
                // counts are this lane's own). The other lanes stop first, so
                // no line of theirs splits the RESULT.
                oops::begin_dying();
                report_and_die(
                    "frame_check",
                    0,
                    format_args!(
                        "{} frames failed the entry checks, {} switches the models",
                        summary.frame_errors, summary.model_errors
                    ),
                    summary.microseconds,
                );
            }
            // One line per seed, whole: the other lanes' lines wait.
            let _line = FUZZ_LINE.lock();
            print!("FUZZ {{\"cpu\":{},", lane.home_cpu.load(Ordering::Relaxed));
            summary.print_fields(Summary::SeedLine { seed });
            println!("}}");
        }
        shared.totals.lock().add(&summary);
    }
}
