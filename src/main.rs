//! `extregs`: build-free front end to the extregs kernel images.
//!
//! `extregs run` boots the kernel under QEMU and exits 0 (kernel success),
//! 1 (kernel failure or crash), 2 (usage or set-up error) or 124 (timeout).
//! `extregs images` prints where the boot images (and the kernel ELF) are.

use clap::{Parser, Subcommand};
use extregs::images;
use extregs::qemu::{self, Accel, Firmware, RunConfig};
use extregs::report::{EXIT_SUCCESS, EXIT_USAGE};
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
