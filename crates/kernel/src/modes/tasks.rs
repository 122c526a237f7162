//! `mode=tasks [tasks=N] [seconds=S]`: N preemptible workers, each with its
//! own PKRS, under the scheduler tick for S seconds.
//!
//! Worker `i` (named `worker-<i+1>`) grants itself read/write on pkey
//! `1 + i % 15` and, from the sixteenth worker on, read-only on a second key,
//! so every worker's PKRS differs. It spins with IF set, so the tick
//! preempts it at any instruction (one spin in eight inside a
//! preempt_disable section, and one iteration in eight ends in a yield, so
//! switches from task context, where the switch installs PKRS, happen too),
//! and keeps checking:
//!
//! * that 12 GPRs held across a spin loop come back (a preempted task's
//!   registers live in its frame on its own stack while others run);
//! * that the live PKRS is its own (a preempted task resumes through
//!   `irqentry_exit`, which restores the PKRS its frame's extension saved);
//! * that its own key's page is writable and readable (the hardware agrees:
//!   a PKS fault there is counted and resolved by granting the key).
//!
//! An event hook also checks every timer IRQ frame: the PKRS the extension
//! saved must be the interrupted task's own. Without PKS the PKRS checks
//! are skipped, and the mode says so.
//!
//! The workers may run on every online CPU: each CPU's tick preempts them,
//! and a worker preempted on one CPU may resume on another, through the
//! frame (and the saved PKRS) on its own stack. RESULT counts those
//! `migrations` and each CPU's context switches and preemptions.

use crate::arch::pks::{self, KeyRights, PksFault};
use crate::arch::{apic, memory, smp};
use crate::debug::result;
use crate::entry::hooks;
use crate::sched::{self, TaskHandle, TICK_HZ};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use extregs_regs::{ExtendedPtRegs, PtRegs};

/// Workers at most (the command line's limit).
const MAX_WORKERS: usize = extregs_cmdline::MAX_TASKS as usize;
/// Keys a worker can be granted (1..=15; key 0 is all kernel memory).
const WORKER_KEYS: usize = 15;
/// Iterations of one GPR spin: long enough that most ticks land inside it.
const SPINS_PER_CHECK: u64 = 20_000;
/// The value the worker pages start with.
const PAGE_FILL: u64 = 0x7a5c_0000_0000_0000;

static ITERATIONS: [AtomicU64; MAX_WORKERS] = [const { AtomicU64::new(0) }; MAX_WORKERS];
static GPR_MISMATCHES: AtomicU64 = AtomicU64::new(0);
static PKRS_MISMATCHES: AtomicU64 = AtomicU64::new(0);
static PAGE_MISMATCHES: AtomicU64 = AtomicU64::new(0);
static TIMER_FRAMES_CHECKED: AtomicU64 = AtomicU64::new(0);
/// The same, per CPU (each CPU's tick preempts the workers it runs).
static CPU_TIMER_FRAMES_CHECKED: [AtomicU64; extregs_regs::NR_CPUS] =
    [const { AtomicU64::new(0) }; extregs_regs::NR_CPUS];
static YIELDS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// The page of each key 1..=15 (index = key).
static PAGES: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

/// The keys worker `index` is granted: one read/write, and (from the
/// sixteenth worker on) one read-only.
fn worker_keys(index: usize) -> (u8, Option<u8>) {
    let own = 1 + index % WORKER_KEYS;
    let round = index / WORKER_KEYS;
    let read_only = (round > 0).then(|| 1 + (index % WORKER_KEYS + round) % WORKER_KEYS);
    (own as u8, read_only.map(|key| key as u8))
}

/// Spins `SPINS_PER_CHECK` times with 12 GPRs holding patterns derived from
/// `seed`; true when all 12 come back.
fn spin_with_gprs(seed: u64) -> bool {
    let expected: [u64; 12] =
        core::array::from_fn(|index| seed.rotate_left(5 * index as u32) ^ (index as u64 + 1));
    let mut seen = expected;
    // SAFETY: the block only counts RCX down; every other register it names
    // is an input it leaves alone (an interrupt may land anywhere in it and
    // must give them back).
    unsafe {
        core::arch::asm!(
            "2:",
            "dec rcx",
            "jnz 2b",
            inout("rcx") SPINS_PER_CHECK => _,
            inout("rax") seen[0],
            inout("rdx") seen[1],
            inout("rsi") seen[2],
            inout("rdi") seen[3],
            inout("r8") seen[4],
            inout("r9") seen[5],
            inout("r10") seen[6],
            inout("r11") seen[7],
            inout("r12") seen[8],
            inout("r13") seen[9],
            inout("r14") seen[10],
            inout("r15") seen[11],
            options(nostack)
        );
    }
    seen == expected
}

fn worker(index: usize) {
    let (own_key, read_only_key) = worker_keys(index);
    if pks::enabled() {
        sched::pks_set_readwrite(own_key);
        if let Some(key) = read_only_key {
            sched::pks_set_rights(key, KeyRights::ReadOnly);
        }
    }
    let own_pkrs = sched::current_pkrs();
    let own_page = PAGES[usize::from(own_key)].load(Ordering::Relaxed) as *mut u64;
    let read_only_page =
        read_only_key.map(|key| PAGES[usize::from(key)].load(Ordering::Relaxed) as *const u64);
    let mut iteration = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        // One iteration in eight runs its spin with preemption disabled
        // (the enable then switches if a tick asked meanwhile), and one in
        // eight ends with a yield: switches from task context, where the
        // switch itself must install the next task's PKRS.
        let phase = iteration % 8;
        if phase == 7 {
            sched::preempt_disable();
        }
        let seed = 0x5eed_0000_0000_0000 ^ ((index as u64) << 40) ^ iteration;
        if !spin_with_gprs(seed) {
            GPR_MISMATCHES.fetch_add(1, Ordering::Relaxed);
        }
        if pks::enabled() {
            if pks::read_pkrs() != own_pkrs {
                PKRS_MISMATCHES.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: `run` mapped the page before any worker started and word `index` is this
            // worker's alone; its key is granted read/write to this task (a PKS fault would be
            // counted and resolved by `wrong_rights`).
            let read_back = unsafe {
                own_page.add(index).write_volatile(seed);
                own_page.add(index).read_volatile()
            };
            if read_back != seed {
                PAGE_MISMATCHES.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(page) = read_only_page {
                // SAFETY: as above; the key is granted read-only, and
                // nothing else writes word `index + 256` (the own-key
                // writers use words 0..64).
                let value = unsafe { page.add(256 + index).read_volatile() };
                if value != PAGE_FILL {
                    PAGE_MISMATCHES.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if phase == 7 {
            sched::preempt_enable();
        }
        if phase == 3 {
            sched::yield_now();
            YIELDS.fetch_add(1, Ordering::Relaxed);
        }
        ITERATIONS[index].fetch_add(1, Ordering::Relaxed);
        iteration += 1;
    }
}

/// A PKS fault on a worker key's page: the running task's PKRS did not
/// grant what the task itself set. Counted; the key is granted in the
/// saved PKRS so the worker can go on.
fn wrong_rights(regs: &mut PtRegs, fault: PksFault) -> bool {
    PKRS_MISMATCHES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `regs` is the #PF entry's frame, handed to this handler.
    unsafe { pks::pks_update_saved(regs, fault.pkey, KeyRights::ReadWrite) }
}

/// Every timer IRQ: the PKRS its frame saved is the interrupted task's own
/// (tasks change their PKRS only with interrupts off, together with the
/// task's value). Never claims the event.
fn check_timer_frame(regs: &mut PtRegs, vector: u8) -> bool {
    if vector == apic::TIMER_VECTOR && pks::enabled() {
        TIMER_FRAMES_CHECKED.fetch_add(1, Ordering::Relaxed);
        CPU_TIMER_FRAMES_CHECKED[crate::arch::percpu::this_cpu()].fetch_add(1, Ordering::Relaxed);
        // SAFETY: `regs` is the IRQ stub's frame (an event hook is only
        // offered entry frames).
        let saved = unsafe { ExtendedPtRegs::from_regs(regs) }.arch.pks;
        if saved != sched::current_pkrs() {
            PKRS_MISMATCHES.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

/// `mode=tasks`: runs `tasks` workers for `seconds`, then reports.
pub fn run(tasks: u32, seconds: u32) -> bool {
    let workers = tasks as usize;
    assert!((1..=MAX_WORKERS).contains(&workers), "the command line limits tasks=");
    if pks::enabled() {
        for key in 1..=WORKER_KEYS as u8 {
            let page = memory::map_pkey_page(key, PAGE_FILL);
            PAGES[usize::from(key)].store(page.address.as_u64(), Ordering::Relaxed);
            pks::register_fault_handler(key, wrong_rights);
        }
        println!(
            "extregs: tasks: {workers} workers for {seconds} s, tick {TICK_HZ} Hz; each grants its own pkey (1..15) in its own PKRS"
        );
    } else {
        println!(
            "extregs: tasks: {workers} workers for {seconds} s, tick {TICK_HZ} Hz; no PKS on this CPU: PKS checks are skipped"
        );
    }
    let sched_before = sched::counts();
    let cpus: [(u64, u64); extregs_regs::NR_CPUS] = core::array::from_fn(sched::cpu_counts);
    let online = smp::online_mask();
    let nmis_before = crate::entry::nmi::count();
    let wrmsrs_before = pks::wrmsr_count();
    let (frames_before, _) = result::frame_counts();
    let mut handles: [Option<TaskHandle>; MAX_WORKERS] = [None; MAX_WORKERS];
    hooks::with_event_hook_on_every_cpu(check_timer_frame, || {
        for (index, handle) in handles.iter_mut().enumerate().take(workers) {
            match sched::spawn_with_affinity(
                format_args!("worker-{}", index + 1),
                worker,
                index,
                online,
            ) {
                Ok(spawned) => *handle = Some(spawned),
                Err(why) => panic!("spawning worker {index}: {why:?}"),
            }
        }
        sched::start_tick();
        sched::sleep_ticks(u64::from(seconds) * u64::from(TICK_HZ));
        STOP.store(true, Ordering::Relaxed);
        for handle in handles.iter().flatten() {
            sched::wait(*handle);
        }
        sched::stop_tick();
    });
    for key in 1..=WORKER_KEYS as u8 {
        pks::unregister_fault_handler(key);
    }

    let counts = sched::counts();
    let context_switches = counts.context_switches - sched_before.context_switches;
    let irq_preemptions = counts.irq_preemptions - sched_before.irq_preemptions;
    let enable_preemptions = counts.enable_preemptions - sched_before.enable_preemptions;
    let preemptions = irq_preemptions + enable_preemptions;
    let yields = YIELDS.load(Ordering::Relaxed);
    let model_errors = counts.model_errors - sched_before.model_errors;
    let migrations = counts.migrations - sched_before.migrations;
    let online_cpus = smp::cpus_online() as usize;
    let mut cpu_switches = [0u64; extregs_regs::NR_CPUS];
    let mut cpu_preemptions = [0u64; extregs_regs::NR_CPUS];
    let cpu_timer_frames: [u64; extregs_regs::NR_CPUS] =
        core::array::from_fn(|cpu| CPU_TIMER_FRAMES_CHECKED[cpu].load(Ordering::Relaxed));
    for cpu in 0..online_cpus {
        let (switches, preemptions) = sched::cpu_counts(cpu);
        cpu_switches[cpu] = switches - cpus[cpu].0;
        cpu_preemptions[cpu] = preemptions - cpus[cpu].1;
    }
    let pkrs_wrmsrs = pks::wrmsr_count() - wrmsrs_before;
    let nmis = crate::entry::nmi::count() - nmis_before;
    let (frames_after, _) = result::frame_counts();
    let gpr_mismatches = GPR_MISMATCHES.load(Ordering::Relaxed);
    let pkrs_mismatches = PKRS_MISMATCHES.load(Ordering::Relaxed);
    let page_mismatches = PAGE_MISMATCHES.load(Ordering::Relaxed);
    let timer_frames = TIMER_FRAMES_CHECKED.load(Ordering::Relaxed);
    let mut all_progressed = true;
    for (index, iterations) in ITERATIONS.iter().enumerate().take(workers) {
        let iterations = iterations.load(Ordering::Relaxed);
        all_progressed &= iterations > 0;
        if iterations == 0 {
            println!("extregs: tasks: worker-{} made no progress", index + 1);
        }
    }
    println!(
        "extregs: tasks: done: {context_switches} context switches, {preemptions} preemptions ({enable_preemptions} at preempt_enable), {yields} yields, {} frames checked ({timer_frames} timer frames' saved PKRS), {pkrs_wrmsrs} PKRS WRMSRs",
        frames_after - frames_before
    );
    println!(
        "extregs: tasks: {online_cpus} CPUs: {migrations} migrations; context switches per CPU {:?}, preemptions per CPU {:?}",
        &cpu_switches[..online_cpus],
        &cpu_preemptions[..online_cpus]
    );
    println!(
        "extregs: tasks: mismatches: gprs {gpr_mismatches}, pkrs {pkrs_mismatches}, pages {page_mismatches}; scheduler model errors {model_errors}"
    );
    let ok = all_progressed
        && gpr_mismatches == 0
        && pkrs_mismatches == 0
        && page_mismatches == 0
        && model_errors == 0;
    let per_task: [u64; MAX_WORKERS] =
        core::array::from_fn(|index| ITERATIONS[index].load(Ordering::Relaxed));
    result::emit(
        ok,
        format_args!(
            ",\"tasks\":{workers},\"seconds\":{seconds},\"tick_hz\":{TICK_HZ},\"context_switches\":{context_switches},\"preemptions\":{preemptions},\"enable_preemptions\":{enable_preemptions},\"yields\":{yields},\"per_task\":{},\"pkrs_mismatches\":{pkrs_mismatches},\"gpr_mismatches\":{gpr_mismatches},\"page_mismatches\":{page_mismatches},\"model_errors\":{model_errors},\"timer_frames_checked\":{timer_frames},\"pkrs_wrmsrs\":{pkrs_wrmsrs},\"nmis\":{nmis},\"pks_checks\":{},\"migrations\":{migrations},\"cpu_context_switches\":{},\"cpu_preemptions\":{},\"cpu_timer_frames_checked\":{}",
            result::JsonList(&per_task[..workers]),
            pks::enabled(),
            result::JsonList(&cpu_switches[..online_cpus]),
            result::JsonList(&cpu_preemptions[..online_cpus]),
            result::JsonList(&cpu_timer_frames[..online_cpus])
        ),
    );
    ok
}
