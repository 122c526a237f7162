//! Selftests of the per-CPU entry state, run from the boot CPU with the
//! APs idle. Each reaches an AP through an NMI IPI whose handler runs a
//! probe on that CPU (`nmi::call_on`), so every probe is itself an NMI
//! taken, checked and returned through the extended entry of that CPU.
//! On one CPU they print `# SKIP needs 2 CPUs`.

use super::{check, wait_until, Context, Outcome, EVENT_TIMEOUT_TSC};
use crate::arch::percpu::{this_cpu, PerCpu};
use crate::arch::{apic, gdt, irqflags, pks, smp};
use crate::entry::events::FrameEdit;
use crate::entry::nmi;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use extregs_regs::{PtRegs, NR_CPUS};

/// The APs that are online: (CPU number, APIC ID).
fn online_aps() -> impl Iterator<Item = (usize, u32)> {
    smp::online_cpus().filter(|&(cpu, _)| cpu != 0)
}

/// The first online AP, or the skip every test here gives on one CPU.
pub(super) fn first_ap() -> Result<(usize, u32), Outcome> {
    online_aps().next().ok_or(Outcome::Skip("needs 2 CPUs"))
}

/// What a CPU's identity probe saw, in its own NMI handler.
struct IdentityReport {
    done: AtomicBool,
    gs_base: AtomicU64,
    gdt: AtomicU64,
    tss: AtomicU64,
    /// The GS area every one of its IST blocks records, if they all agree
    /// (0 when they do not).
    ist_recorded_area: AtomicU64,
    /// Was the probe's own stack this CPU's NMI IST stack?
    on_own_nmi_stack: AtomicBool,
    apic_id: AtomicU64,
}

static IDENTITY: PerCpu<IdentityReport> = PerCpu::new(
    [const {
        IdentityReport {
            done: AtomicBool::new(false),
            gs_base: AtomicU64::new(0),
            gdt: AtomicU64::new(0),
            tss: AtomicU64::new(0),
            ist_recorded_area: AtomicU64::new(0),
            on_own_nmi_stack: AtomicBool::new(false),
            apic_id: AtomicU64::new(0),
        }
    }; NR_CPUS],
);

/// Runs in an NMI on the CPU being probed.
fn identity_probe() {
    use x86_64::registers::model_specific::GsBase;
    let cpu = this_cpu();
    let report = IDENTITY.this();
    let recorded = gdt::ist_recorded_per_cpu(cpu, 0);
    let all_agree = (0..4).all(|index| gdt::ist_recorded_per_cpu(cpu, index) == recorded);
    let probe_stack = core::ptr::addr_of!(report) as u64;
    report.gs_base.store(GsBase::read().as_u64(), Ordering::SeqCst);
    report.gdt.store(gdt::gdt_address(), Ordering::SeqCst);
    report.tss.store(gdt::loaded_tss_address(), Ordering::SeqCst);
    report.ist_recorded_area.store(if all_agree { recorded } else { 0 }, Ordering::SeqCst);
    report.on_own_nmi_stack.store(
        gdt::ist_stack_range_of(cpu, gdt::NMI_IST_INDEX).contains(&probe_stack),
        Ordering::SeqCst,
    );
    report.apic_id.store(u64::from(apic::id()), Ordering::SeqCst);
    report.done.store(true, Ordering::SeqCst);
}

/// Each CPU's GS area, GDT, TSS and IST stacks are its own: every CPU
/// (the boot CPU through a self-NMI, each AP through an NMI IPI) reports
/// them from inside an NMI, and no two CPUs share one; every IST block
/// records its own CPU's GS area (what the paranoid entries compare
/// MSR_GS_BASE with), and the NMI ran on that CPU's own NMI stack.
pub fn each_cpu_has_its_own_entry_state(_: &Context) -> Outcome {
    if let Err(skip) = first_ap() {
        return skip;
    }
    let mut seen: [[u64; 3]; NR_CPUS] = [[0; 3]; NR_CPUS];
    let mut cpus = 0;
    for (cpu, apic_id) in smp::online_cpus() {
        let report = IDENTITY.of(cpu);
        report.done.store(false, Ordering::SeqCst);
        nmi::call_on(cpu, apic_id, identity_probe);
        check!(
            wait_until(|| report.done.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC),
            "CPU {cpu} (APIC ID {apic_id}) did not run its probe"
        );
        let area = extregs_entry_asm::per_cpu(cpu) as u64;
        let gs_base = report.gs_base.load(Ordering::SeqCst);
        check!(gs_base == area, "CPU {cpu}: GS base {gs_base:#x} is not its area {area:#x}");
        check!(
            report.ist_recorded_area.load(Ordering::SeqCst) == area,
            "CPU {cpu}: its IST blocks do not all record its GS area"
        );
        check!(
            report.on_own_nmi_stack.load(Ordering::SeqCst),
            "CPU {cpu}: the NMI did not run on its own NMI stack"
        );
        check!(
            report.apic_id.load(Ordering::SeqCst) == u64::from(apic_id),
            "CPU {cpu}: the probe ran on APIC ID {} instead of {apic_id}",
            report.apic_id.load(Ordering::SeqCst)
        );
        seen[cpu] = [gs_base, report.gdt.load(Ordering::SeqCst), report.tss.load(Ordering::SeqCst)];
        cpus += 1;
    }
    for first in 0..NR_CPUS {
        for second in first + 1..NR_CPUS {
            for (what, index) in [("GS area", 0), ("GDT", 1), ("TSS", 2)] {
                let (a, b) = (seen[first][index], seen[second][index]);
                check!(a == 0 || a != b, "CPUs {first} and {second} share one {what} at {a:#x}");
            }
        }
    }
    println!("# {cpus} CPUs, each with its own GS area, GDT, TSS and IST stacks");
    Outcome::Pass
}

/// An NMI IPI reaches each CPU it is sent to, and only through that CPU's
/// handler: one to each AP by APIC ID, then one to all but self, then one
/// to all (the boot CPU included, through its own NMI entry).
pub fn nmi_ipis_reach_each_cpu(_: &Context) -> Outcome {
    if let Err(skip) = first_ap() {
        return skip;
    }
    for (cpu, apic_id) in online_aps() {
        let (before, _) = nmi::count_on(cpu);
        apic::send_nmi(apic_id);
        check!(
            wait_until(|| nmi::count_on(cpu).0 > before, EVENT_TIMEOUT_TSC),
            "the NMI IPI to APIC ID {apic_id} never reached CPU {cpu}"
        );
        let (_, recorded) = nmi::count_on(cpu);
        check!(recorded == apic_id, "CPU {cpu} recorded APIC ID {recorded}, not {apic_id}");
    }
    for (send, name, boot_cpu_too) in [
        (apic::send_nmi_all_but_self as fn(), "all-but-self", false),
        (apic::send_nmi_all as fn(), "all", true),
    ] {
        let before: [u64; NR_CPUS] = core::array::from_fn(|cpu| nmi::count_on(cpu).0);
        send();
        for (cpu, _) in smp::online_cpus() {
            let expected = cpu != 0 || boot_cpu_too;
            if expected {
                check!(
                    wait_until(|| nmi::count_on(cpu).0 > before[cpu], EVENT_TIMEOUT_TSC),
                    "the {name} NMI IPI never reached CPU {cpu}"
                );
            }
        }
    }
    Outcome::Pass
}

/// The AP's answer in [`nmi_on_one_cpu_runs_while_another_is_in_nmi`].
static AP_NMI_RAN: AtomicBool = AtomicBool::new(false);
/// What the boot CPU's NMI saw: did the AP's handler run while it waited?
static AP_RAN_DURING_BOOT_CPU_NMI: AtomicBool = AtomicBool::new(false);
/// Set when the boot CPU's NMI is done waiting.
static BOOT_CPU_NMI_DONE: AtomicBool = AtomicBool::new(false);

fn note_ap_nmi() {
    AP_NMI_RAN.store(true, Ordering::SeqCst);
}

/// Runs in the boot CPU's NMI: sends the AP an NMI and waits for its
/// handler, with this CPU's own NMI still running.
fn nmi_to_ap_from_inside_nmi() {
    if let Some((cpu, apic_id)) = online_aps().next() {
        nmi::call_on(cpu, apic_id, note_ap_nmi);
        let ran = wait_until(|| AP_NMI_RAN.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
        AP_RAN_DURING_BOOT_CPU_NMI.store(ran, Ordering::SeqCst);
    }
    BOOT_CPU_NMI_DONE.store(true, Ordering::SeqCst);
}

/// An NMI on an AP runs its handler while the boot CPU sits in its own
/// NMI handler. With one global nesting state the AP's stub would find
/// RUNNING, latch its NMI as PENDING and return without running it.
pub fn nmi_on_one_cpu_runs_while_another_is_in_nmi(_: &Context) -> Outcome {
    if let Err(skip) = first_ap() {
        return skip;
    }
    AP_NMI_RAN.store(false, Ordering::SeqCst);
    AP_RAN_DURING_BOOT_CPU_NMI.store(false, Ordering::SeqCst);
    BOOT_CPU_NMI_DONE.store(false, Ordering::SeqCst);
    nmi::call_in_next_nmi(nmi_to_ap_from_inside_nmi);
    apic::send_self_nmi();
    check!(
        wait_until(|| BOOT_CPU_NMI_DONE.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC),
        "the boot CPU's NMI never ran"
    );
    check!(
        AP_RAN_DURING_BOOT_CPU_NMI.load(Ordering::SeqCst),
        "the AP's NMI handler did not run while the boot CPU was in its NMI handler"
    );
    check!(
        gdt::nmi_nesting_state() == extregs_regs::nmi_state::IDLE,
        "the boot CPU's NMI state is {} afterwards",
        gdt::nmi_nesting_state()
    );
    Outcome::Pass
}

/// A PKRS value no other code uses: key 1 read-only, the rest as the
/// default.
const AP_PKRS: u32 = pks::PKRS_DEFAULT & !(0b11 << 2) | (0b10 << 2);

static AP_IN_BRACKET: AtomicBool = AtomicBool::new(false);
static AP_RELEASE: AtomicBool = AtomicBool::new(false);
static AP_PROBE_DONE: AtomicBool = AtomicBool::new(false);

/// Runs in the AP's NMI: writes its PKRS to [`AP_PKRS`] and holds its own
/// write bracket open until the boot CPU has looked (bounded), then leaves
/// (the NMI's exit puts the AP's PKRS back).
fn hold_pkrs_write_on_ap() {
    // SAFETY: PKS is on (the caller checked); AP_PKRS keeps key 0, all kernel memory, writable.
    unsafe { pks::write_pkrs(AP_PKRS) };
    pks::with_write_in_progress(|| {
        AP_IN_BRACKET.store(true, Ordering::SeqCst);
        wait_until(|| AP_RELEASE.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    });
    AP_PROBE_DONE.store(true, Ordering::SeqCst);
}

/// The PKRS cache and its writes-in-progress bracket are per CPU: while an
/// AP has written another PKRS and sits inside its write bracket, the boot
/// CPU's cache still equals its own MSR, its bracket is closed, and an
/// exception it takes trusts its cache (no resync) and saves its own PKRS.
pub fn pkrs_cache_and_bracket_are_per_cpu(context: &Context) -> Outcome {
    if let Err(skip) = first_ap() {
        return skip;
    }
    if context.pkey_page.is_none() {
        return Outcome::Skip("PKS is not supported by this CPU");
    }
    let (cpu, apic_id) = first_ap().unwrap_or((1, 1));
    AP_IN_BRACKET.store(false, Ordering::SeqCst);
    AP_RELEASE.store(false, Ordering::SeqCst);
    AP_PROBE_DONE.store(false, Ordering::SeqCst);
    nmi::call_on(cpu, apic_id, hold_pkrs_write_on_ap);
    let entered = wait_until(|| AP_IN_BRACKET.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    let own_msr = pks::read_pkrs();
    let own_cache = pks::cached_pkrs();
    let own_bracket = pks::writes_in_progress();
    let resyncs_before = pks::resyncs();
    let (observed, _) = super::int3_with_gprs(&PtRegs::default(), FrameEdit::None);
    let saved = observed.map(|observed| observed.saved_pkrs);
    let resyncs = pks::resyncs() - resyncs_before;
    AP_RELEASE.store(true, Ordering::SeqCst);
    let left = wait_until(|| AP_PROBE_DONE.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    check!(entered, "CPU {cpu} never entered its PKRS write bracket");
    check!(left, "CPU {cpu} never left its probe");
    check!(
        own_cache == own_msr,
        "the boot CPU's PKRS cache {own_cache:08x} is not its MSR {own_msr:08x} \
         while CPU {cpu} wrote {AP_PKRS:08x}"
    );
    check!(own_bracket == 0, "the boot CPU sees {own_bracket} writes in progress (CPU {cpu}'s)");
    check!(resyncs == 0, "an int3 on the boot CPU resynced its cache {resyncs} times");
    check!(saved == Some(own_msr), "the int3 saved PKRS {saved:08x?}, not {own_msr:08x}");
    check!(irqflags::rcu_is_watching(), "RCU stopped watching");
    Outcome::Pass
}

static AP_IN_USER_NMI: AtomicBool = AtomicBool::new(false);
static AP_USER_NMI_RELEASE: AtomicBool = AtomicBool::new(false);
static AP_USER_NMI_DONE: AtomicBool = AtomicBool::new(false);

/// Runs in the AP's NMI: marks its user-NMI latch "an NMI from user mode
/// is running" until the boot CPU has looked (bounded).
fn hold_user_nmi_latch_on_ap() {
    nmi::with_user_nmi_marked_running(|| {
        AP_IN_USER_NMI.store(true, Ordering::SeqCst);
        wait_until(|| AP_USER_NMI_RELEASE.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    });
    AP_USER_NMI_DONE.store(true, Ordering::SeqCst);
}

/// The user-NMI latch is per CPU: while an AP's latch says an NMI from user
/// mode is running there, a kernel-mode NMI on the boot CPU runs its
/// handler instead of being latched as nested in the AP's.
pub fn user_nmi_latch_is_per_cpu(_: &Context) -> Outcome {
    let (cpu, apic_id) = match first_ap() {
        Ok(ap) => ap,
        Err(skip) => return skip,
    };
    AP_IN_USER_NMI.store(false, Ordering::SeqCst);
    AP_USER_NMI_RELEASE.store(false, Ordering::SeqCst);
    AP_USER_NMI_DONE.store(false, Ordering::SeqCst);
    nmi::call_on(cpu, apic_id, hold_user_nmi_latch_on_ap);
    let entered = wait_until(|| AP_IN_USER_NMI.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    let (latched_before, handled_before) = (nmi::user_nmis_latched(), nmi::count_this_cpu());
    let handled = apic::with_outside_nmis_held(|| {
        nmi::take_log();
        apic::send_self_nmi();
        wait_until(|| nmi::count_this_cpu() > handled_before, EVENT_TIMEOUT_TSC)
    });
    let latched = nmi::user_nmis_latched() - latched_before;
    AP_USER_NMI_RELEASE.store(true, Ordering::SeqCst);
    let left = wait_until(|| AP_USER_NMI_DONE.load(Ordering::SeqCst), EVENT_TIMEOUT_TSC);
    check!(entered, "CPU {cpu} never marked its user-NMI latch");
    check!(left, "CPU {cpu} never left its probe");
    check!(handled, "the boot CPU's self-NMI never ran its handler (latched as nested?)");
    check!(latched == 0, "{latched} NMIs latched as nested in CPU {cpu}'s user-mode NMI");
    check!(nmi::take_log().1 == 1, "the boot CPU's NMI handler did not log its frame");
    Outcome::Pass
}

/// The NMI backtrace answers from every online CPU, each through its own
/// NMI handler (`entry::backtrace`; the dumps appear in this output).
pub fn backtrace_answers_from_every_cpu(_: &Context) -> Outcome {
    if let Err(skip) = first_ap() {
        return skip;
    }
    let online = smp::online_cpus().count() as u32;
    let before: [u64; NR_CPUS] = core::array::from_fn(|cpu| nmi::count_on(cpu).0);
    let answers = crate::entry::backtrace::trigger_all_cpu_backtrace();
    check!(answers.asked == online, "asked {} of {online} CPUs", answers.asked);
    check!(answers.answered == online, "{} of {online} CPUs answered", answers.answered);
    for (cpu, _) in smp::online_cpus() {
        check!(nmi::count_on(cpu).0 > before[cpu], "CPU {cpu} took no NMI for its answer");
    }
    Outcome::Pass
}

/// The APIC ID the boot CPU's NMI sends to in [`icr_high_survives_a_nested_send`].
static NESTED_SEND_TARGET: AtomicU64 = AtomicU64::new(0);

fn send_nmi_to_the_target() {
    apic::send_nmi(NESTED_SEND_TARGET.load(Ordering::SeqCst) as u32);
}

/// ICR_HIGH around an AP's shorthand send (`u64::MAX`: not yet), for
/// [`icr_high_survives_a_nested_send`].
static SHORTHAND_ICR_HIGH_BEFORE: AtomicU64 = AtomicU64::new(u64::MAX);
static SHORTHAND_ICR_HIGH_AFTER: AtomicU64 = AtomicU64::new(u64::MAX);

/// On an AP, in its NMI handler: ICR_HIGH preloaded for a one-store
/// self-NMI (the AP's own APIC ID, which is not 0, so a shorthand send
/// that wrote its unused zero destination there would show), then an NMI
/// to all but self, which reaches the boot CPU (and any other AP).
fn shorthand_send_on_ap() {
    let _ = apic::prepare_self_nmi_store();
    let before = apic::icr_high();
    apic::send_nmi_all_but_self();
    SHORTHAND_ICR_HIGH_AFTER.store(u64::from(apic::icr_high()), Ordering::SeqCst);
    SHORTHAND_ICR_HIGH_BEFORE.store(u64::from(before), Ordering::SeqCst);
}

/// The xAPIC's two-step ICR write can't be torn by an NMI that sends an
/// IPI in between: with ICR_HIGH preloaded as a sender's first store
/// leaves it (here: this CPU, for the fuzzer's one-store self-NMI), the
/// second store raises an NMI whose handler sends an NMI IPI to an AP; the
/// AP gets it, and ICR_HIGH is back to what the interrupted sender wrote.
/// A shorthand send, which the APIC sends without reading ICR_HIGH, leaves
/// it alone: shown on the AP, whose preloaded ICR_HIGH is not 0.
pub fn icr_high_survives_a_nested_send(_: &Context) -> Outcome {
    let (cpu, apic_id) = match first_ap() {
        Ok(ap) => ap,
        Err(skip) => return skip,
    };
    let apic::SelfNmiStore::XApic { icr_low, value } = apic::prepare_self_nmi_store() else {
        return Outcome::Skip("x2APIC writes the ICR in one WRMSR");
    };
    let preloaded = apic::icr_high();
    NESTED_SEND_TARGET.store(u64::from(apic_id), Ordering::SeqCst);
    let (ap_before, _) = nmi::count_on(cpu);
    let own_before = nmi::count_this_cpu();
    nmi::call_in_next_nmi(send_nmi_to_the_target);
    // SAFETY: `icr_low` is this CPU's ICR_LOW in the APIC page `apic::init` mapped uncached (its
    // address exposed by that mapping, no Rust reference covers it); `value` sends this CPU an
    // NMI with the destination preloaded above, as the fuzzer's trampolines do.
    unsafe {
        core::ptr::with_exposed_provenance_mut::<u32>(icr_low as usize).write_volatile(value)
    };
    let own = wait_until(|| nmi::count_this_cpu() > own_before, EVENT_TIMEOUT_TSC);
    let ap = wait_until(|| nmi::count_on(cpu).0 > ap_before, EVENT_TIMEOUT_TSC);
    let after = apic::icr_high();
    check!(own, "the one-store self-NMI never arrived");
    check!(ap, "the NMI IPI sent from inside the NMI never reached CPU {cpu}");
    check!(
        after == preloaded,
        "ICR_HIGH is {after:#010x} after the nested send, not the interrupted sender's {preloaded:#010x}"
    );
    SHORTHAND_ICR_HIGH_AFTER.store(u64::MAX, Ordering::SeqCst);
    SHORTHAND_ICR_HIGH_BEFORE.store(u64::MAX, Ordering::SeqCst);
    let own_before = nmi::count_this_cpu();
    nmi::call_on(cpu, apic_id, shorthand_send_on_ap);
    let probed = wait_until(
        || SHORTHAND_ICR_HIGH_BEFORE.load(Ordering::SeqCst) != u64::MAX,
        EVENT_TIMEOUT_TSC,
    );
    let reached = wait_until(|| nmi::count_this_cpu() > own_before, EVENT_TIMEOUT_TSC);
    check!(probed, "CPU {cpu} never ran its shorthand send");
    check!(reached, "CPU {cpu}'s NMI to all but itself never reached this CPU");
    let before = SHORTHAND_ICR_HIGH_BEFORE.load(Ordering::SeqCst);
    let after = SHORTHAND_ICR_HIGH_AFTER.load(Ordering::SeqCst);
    check!(
        before == u64::from(apic_id) << 24,
        "CPU {cpu}'s preloaded ICR_HIGH is {before:#010x}, not its APIC ID {apic_id}"
    );
    check!(
        after == before,
        "ICR_HIGH is {after:#010x} after CPU {cpu}'s shorthand send, not its preloaded {before:#010x}"
    );
    Outcome::Pass
}
