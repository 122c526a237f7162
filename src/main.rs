//! `extregs`: build-free front end to the extregs kernel images.
//!
//! `extregs run` boots the kernel under QEMU and exits 0 (kernel success),
//! 1 (kernel failure or crash), 2 (usage or set-up error) or 124 (timeout).
//! `extregs images` prints where the boot images (and the kernel ELF) are.
//! `extregs fuzz --seeds A..B` runs a fuzz campaign; `--seed S` replays one.
//! `extregs exec PATH [ARG...]` runs a static Linux program and exits with
//! its status.
//! `extregs inject-nmi --qmp PATH` sends NMIs to a kernel started with
//! `extregs run --qmp PATH` (e.g. in `mode=idle`).

use clap::{Parser, Subcommand};
use extregs::exit_codes::{EXIT_SUCCESS, EXIT_USAGE};
use extregs::images;
use std::process::ExitCode;

mod cli;

use cli::bench::BenchArgs;
use cli::exec::ExecArgs;
use cli::fuzz::FuzzArgs;
use cli::run::{InjectNmiArgs, RunArgs};

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
    /// Fuzz nested interrupt frames: a campaign over a seed range, or the
    /// replay of one seed.
    Fuzz(Box<FuzzArgs>),
    /// Run a static Linux x86-64 program on the kernel (mode=exec) and
    /// exit with its status.
    Exec(ExecArgs),
    /// Measure the entry variants (floor, x86-interrupt, by-value,
    /// by-reference, extended, extended+pks-hit/-write) side by side.
    Bench(BenchArgs),
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
        Command::Run(args) => cli::run::run(args),
        Command::InjectNmi(args) => cli::run::inject_nmi(args),
        Command::Fuzz(args) => cli::fuzz::fuzz(*args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::Exec(args) => cli::exec::exec(args),
    };
    ExitCode::from(code as u8)
}
