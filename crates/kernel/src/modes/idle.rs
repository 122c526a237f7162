//! `mode=idle seconds=N`: the idle loop (`sched::idle`) under a timer.
//!
//! `mode=idle` runs the periodic LAPIC timer at [`HZ`] and idles until
//! `seconds * HZ` ticks have passed, counting timer IRQs and NMIs (QEMU's
//! `inject-nmi` over QMP is the way to send NMIs from outside).

use crate::arch::{apic, pks, smp};
use crate::debug::result;
use crate::entry::{irq, nmi};
use crate::sched::idle::idle_once;
use extregs_regs::NR_CPUS;

/// Timer ticks per second in `mode=idle`.
pub const HZ: u32 = 100;

/// `mode=idle`: periodic timer, idle for `seconds`, report counts.
pub fn run(seconds: u32) -> bool {
    let ticks_wanted = u64::from(seconds) * u64::from(HZ);
    let start = irq::counts();
    let nmis_before = nmi::count();
    let per_cpu_before: [u64; NR_CPUS] = core::array::from_fn(|cpu| nmi::count_on(cpu).0);
    let (frames_before, errors_before) = result::frame_counts();
    let wrmsrs_before = pks::wrmsr_count();
    let mut rcu_leaks = 0u64;
    println!(
        "extregs: idle: {} s at HZ={} ({} mode, {} timer ticks/ms); NMIs welcome (QMP inject-nmi)",
        seconds,
        HZ,
        apic::current_mode().name(),
        apic::timer_ticks_per_ms()
    );
    apic::start_timer_us(apic::TimerMode::Periodic, 1_000_000 / HZ);
    while irq::counts().timer - start.timer < ticks_wanted {
        if idle_once().rcu_watching_after_wakeup {
            rcu_leaks += 1;
        }
    }
    apic::stop_timer();
    let end = irq::counts();
    let timer_irqs = end.timer - start.timer;
    let nmis = nmi::count() - nmis_before;
    // What each online CPU took: QMP's NMIs arrive on every CPU's LINT1.
    let mut nmis_per_cpu = [0u64; NR_CPUS];
    let mut online = 0;
    for (cpu, _) in smp::online_cpus() {
        nmis_per_cpu[online] = nmi::count_on(cpu).0 - per_cpu_before[cpu];
        online += 1;
    }
    let nmis_per_cpu = result::JsonList(&nmis_per_cpu[..online]);
    let (frames, errors) = result::frame_counts();
    let (frames_checked, frame_errors) = (frames - frames_before, errors - errors_before);
    let unexpected = end.unexpected - start.unexpected;
    // Idle runs with the default PKRS, so the cache must have saved every
    // entry and exit its WRMSR.
    let pkrs_wrmsrs = pks::wrmsr_count() - wrmsrs_before;
    println!(
        "extregs: idle: done: {timer_irqs} timer IRQs, {nmis} NMIs, {frames_checked} frames checked, {frame_errors} bad"
    );
    let ok = frame_errors == 0 && unexpected == 0 && rcu_leaks == 0;
    if rcu_leaks != 0 {
        println!("extregs: idle: RCU was left watching after {rcu_leaks} wakeups");
    }
    result::emit(
        ok,
        format_args!(
            ",\"seconds\":{seconds},\"hz\":{HZ},\"timer_irqs\":{timer_irqs},\"nmis\":{nmis},\"nmis_per_cpu\":{nmis_per_cpu},\"unexpected_irqs\":{unexpected},\"rcu_leaks\":{rcu_leaks},\"pkrs_wrmsrs\":{pkrs_wrmsrs}"
        ),
    );
    ok
}
