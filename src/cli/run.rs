//! `extregs run` and `extregs inject-nmi`: one boot, and NMIs sent to it
//! over QMP.

use extregs::exit_codes::{EXIT_SUCCESS, EXIT_USAGE};
use extregs::qemu::{self, Accel, Firmware, RunConfig};
use extregs::qmp::Qmp;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Firmware that boots the image.
    #[arg(long, value_enum, default_value = "bios")]
    pub(crate) firmware: Firmware,
    /// QEMU accelerator (TCG is the one that works everywhere).
    #[arg(long, value_enum, default_value = "tcg")]
    pub(crate) accel: Accel,
    /// QEMU CPU model (`max` has PKS under TCG; `qemu64` has none).
    #[arg(long, default_value = "max")]
    pub(crate) cpu: String,
    /// Kernel command line, e.g. "mode=selftest" (docs/design.md, "Contracts").
    #[arg(long, default_value = "")]
    pub(crate) cmdline: String,
    /// Seconds before QEMU is killed and the run reported as a timeout (124).
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Wait for gdb on localhost:1234 before the first instruction.
    #[arg(long)]
    pub(crate) gdb: bool,
    /// Serve QMP on this Unix socket (for `extregs inject-nmi` or any QMP
    /// client).
    #[arg(long)]
    pub(crate) qmp: Option<PathBuf>,
    /// Send NMIs from outside (QMP inject-nmi, back to back) from the
    /// kernel's mode line until it exits.
    #[arg(long)]
    pub(crate) nmi_storm: bool,
    /// One guest instruction per translation block (QEMU -singlestep), so
    /// NMIs and IRQs can land at every instruction boundary (slower).
    #[arg(long)]
    pub(crate) granular: bool,
    /// CPUs (1 to 8): QEMU's -smp. The kernel brings every AP online with
    /// its own entry state; `mode=tasks` and `mode=user` run tasks on
    /// every CPU, the other modes on CPU 0 while the APs idle, taking NMIs
    /// and IPIs (docs/smp.md).
    #[arg(long, default_value_t = 1)]
    pub(crate) smp: u32,
}

#[derive(clap::Args)]
pub(crate) struct InjectNmiArgs {
    /// The QMP socket given to `extregs run --qmp`.
    #[arg(long)]
    pub(crate) qmp: PathBuf,
    /// How many NMIs to send.
    #[arg(long, default_value_t = 1)]
    pub(crate) count: u32,
    /// Milliseconds between NMIs (NMIs that arrive together merge into one,
    /// as on hardware).
    #[arg(long, default_value_t = 100)]
    pub(crate) interval_ms: u64,
}

pub(crate) fn run(args: RunArgs) -> i32 {
    if args.timeout == 0 {
        eprintln!("extregs: --timeout must be at least 1 second");
        return EXIT_USAGE;
    }
    if !(1..=8).contains(&args.smp) {
        eprintln!("extregs: --smp must be from 1 to 8");
        return EXIT_USAGE;
    }
    let config = RunConfig {
        firmware: args.firmware,
        accel: args.accel,
        cpu: args.cpu,
        cmdline: args.cmdline,
        timeout: Duration::from_secs(args.timeout),
        progress_prefix: None,
        gdb: args.gdb,
        echo: true,
        qmp: args.qmp,
        deterministic: false,
        cancel: None,
        serial_lines: None,
        granular: args.granular,
        nmi_storm: args.nmi_storm,
        smp: (args.smp > 1).then(|| args.smp.to_string()),
        fw_cfg_files: Vec::new(),
    };
    if config.nmi_storm && config.accel == Accel::Kvm {
        eprintln!("extregs: --nmi-storm needs TCG here (KVM cannot deliver guest exceptions)");
        return EXIT_USAGE;
    }
    if config.gdb {
        eprintln!("extregs: QEMU waits for gdb: target remote localhost:1234");
    }
    match qemu::run(&config) {
        Ok(outcome) => {
            let (code, why) = outcome.verdict();
            if let Some(sent) = outcome.nmis_sent {
                eprintln!("extregs: NMI storm: {sent} NMIs sent over QMP");
            }
            if !outcome.qemu_stderr.trim().is_empty() {
                eprintln!("qemu: {}", outcome.qemu_stderr.trim_end());
            }
            print_coverage_figures(&outcome.serial);
            eprintln!("extregs: {why} (exit {code})");
            code
        }
        Err(error) => {
            eprintln!("extregs: {error}");
            EXIT_USAGE
        }
    }
}

pub(crate) fn inject_nmi(args: InjectNmiArgs) -> i32 {
    let mut qmp = match Qmp::connect(&args.qmp, Duration::from_secs(5)) {
        Ok(qmp) => qmp,
        Err(error) => {
            eprintln!("extregs: {error}");
            return EXIT_USAGE;
        }
    };
    for sent in 0..args.count {
        if sent > 0 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        if let Err(error) = qmp.inject_nmi() {
            eprintln!("extregs: after {sent} NMIs: {error}");
            return EXIT_USAGE;
        }
    }
    eprintln!("extregs: injected {} NMIs", args.count);
    EXIT_SUCCESS
}

/// A boot that reported its interrupt-point coverage (a selftest's walks, a
/// fuzz run) gets one summary line: the figures split by reachability
/// ([`extregs::coverage::Figures`]). Nothing when the boot printed none, or
/// the kernel ELF can't be decoded (said on stderr).
fn print_coverage_figures(serial: &str) {
    let Some(unreachable) = extregs::coverage::unreachable_in(serial) else {
        return;
    };
    match extregs::coverage::EntryText::from_elf(extregs::images::kernel_elf()) {
        Ok(text) => {
            let hits = extregs::coverage::hits_in(serial);
            eprintln!("extregs: coverage: {}", text.figures(&hits, &unreachable));
        }
        Err(error) => eprintln!("extregs: coverage: cannot decode the entry text: {error}"),
    }
}
