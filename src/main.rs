//! `extregs`: build-free front end to the extregs kernel images.
//!
//! `extregs run` boots the kernel under QEMU and exits 0 (kernel success),
//! 1 (kernel failure or crash), 2 (usage or set-up error) or 124 (timeout).
//! `extregs images` prints where the boot images (and the kernel ELF) are.
//! `extregs inject-nmi --qmp PATH` sends NMIs to a kernel started with
//! `extregs run --qmp PATH` (e.g. in `mode=idle`).

use clap::{Parser, Subcommand};
use extregs::images;
use extregs::qemu::{self, Accel, Firmware, RunConfig};
use extregs::qmp::Qmp;
use extregs::report::{EXIT_SUCCESS, EXIT_USAGE};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "extregs", version, about = "Boot and test the extregs kernel (extended pt_regs)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the kernel under QEMU and report its result.
    Run(RunArgs),
    /// Print the paths of the BIOS and UEFI boot images (and the kernel ELF).
    Images,
    /// Inject NMIs through QMP into a kernel started with `run --qmp PATH`.
    InjectNmi(InjectNmiArgs),
}

#[derive(clap::Args)]
struct InjectNmiArgs {
    /// The QMP socket given to `extregs run --qmp`.
    #[arg(long)]
    qmp: PathBuf,
    /// How many NMIs to send.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Milliseconds between NMIs (NMIs that arrive together merge into one,
    /// as on hardware).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Firmware that boots the image.
    #[arg(long, value_enum, default_value = "bios")]
    firmware: Firmware,
    /// QEMU accelerator (TCG is the one that works everywhere).
    #[arg(long, value_enum, default_value = "tcg")]
    accel: Accel,
    /// QEMU CPU model (`max` has PKS under TCG; `qemu64` has none).
    #[arg(long, default_value = "max")]
    cpu: String,
    /// Kernel command line, e.g. "mode=selftest" (DESIGN §4).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Seconds before QEMU is killed and the run reported as a timeout (124).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Wait for gdb on localhost:1234 before the first instruction.
    #[arg(long)]
    gdb: bool,
    /// Serve QMP on this Unix socket (for `extregs inject-nmi` or any QMP
    /// client).
    #[arg(long)]
    qmp: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            let code = if error.use_stderr() { EXIT_USAGE } else { EXIT_SUCCESS };
            return ExitCode::from(code as u8);
        }
    };
    let code = match cli.command {
        Command::Images => {
            println!("bios={}", images::bios_image().display());
            println!("uefi={}", images::uefi_image().display());
            println!("kernel={}", images::kernel_elf().display());
            EXIT_SUCCESS
        }
        Command::Run(args) => run(args),
        Command::InjectNmi(args) => inject_nmi(args),
    };
    ExitCode::from(code as u8)
}

fn run(args: RunArgs) -> i32 {
    if args.timeout == 0 {
        eprintln!("extregs: --timeout must be at least 1 second");
        return EXIT_USAGE;
    }
    let config = RunConfig {
        firmware: args.firmware,
        accel: args.accel,
        cpu: args.cpu,
        cmdline: args.cmdline,
        timeout: Duration::from_secs(args.timeout),
        gdb: args.gdb,
        echo: true,
        qmp: args.qmp,
        serial_lines: None,
    };
    if config.gdb {
        eprintln!("extregs: QEMU waits for gdb: target remote localhost:1234");
    }
    match qemu::run(&config) {
        Ok(outcome) => {
            let (code, why) = outcome.verdict();
            if !outcome.qemu_stderr.trim().is_empty() {
                eprintln!("qemu: {}", outcome.qemu_stderr.trim_end());
            }
            eprintln!("extregs: {why} (exit {code})");
            code
        }
        Err(error) => {
            eprintln!("extregs: {error}");
            EXIT_USAGE
        }
    }
}

fn inject_nmi(args: InjectNmiArgs) -> i32 {
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
