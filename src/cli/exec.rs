//! `extregs exec PATH [ARG...]`: run one static Linux x86-64 program on
//! the kernel (`mode=exec`), and exit as a shell would.
//!
//! The program goes to the kernel as fw_cfg file `opt/extregs/program`,
//! its arguments (argv[0] = PATH as given) NUL-separated as
//! `opt/extregs/argv`: the boot image is not rebuilt. The file is checked
//! here first, with the kernel's own ELF checks (`extregs-elf`), so a
//! missing, non-ELF or non-x86-64 file fails with one line before QEMU
//! starts. The exit status is the program's (its exit code, or 128 + the
//! signal that killed it), 127 if the kernel could not execute it, and
//! the runner's own codes (1 kernel failure, 2 set-up, 124 timeout)
//! when the kernel did not report one.

use extregs::exit_codes::{EXIT_KERNEL_FAILURE, EXIT_USAGE};
use extregs::qemu::{self, Accel, Firmware, RunConfig};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct ExecArgs {
    /// Firmware that boots the image.
    #[arg(long, value_enum, default_value = "bios")]
    pub(crate) firmware: Firmware,
    /// QEMU CPU model (`max` has PKS under TCG).
    #[arg(long, default_value = "max")]
    pub(crate) cpu: String,
    /// Seconds before QEMU is killed and the run reported as a timeout (124).
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Send NMIs from outside (QMP inject-nmi, back to back) while the
    /// program runs.
    #[arg(long)]
    pub(crate) nmi_storm: bool,
    /// One guest instruction per translation block (QEMU -singlestep).
    #[arg(long)]
    pub(crate) granular: bool,
    /// Print only the program's output and the kernel's lines about it
    /// (not the boot log).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// CPUs (1 to 8): the process may run on any of them (docs/smp.md).
    #[arg(long, default_value_t = 1)]
    pub(crate) smp: u32,
    /// The static x86-64 ELF program.
    pub(crate) path: PathBuf,
    /// Its arguments (argv[1] on).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
}

/// The largest argument block the kernel takes (its `ARGV_MAX`).
const ARGV_MAX: usize = 4096;

pub(crate) fn exec(args: ExecArgs) -> i32 {
    match try_exec(args) {
        Ok(code) => code,
        Err(why) => {
            eprintln!("extregs: exec: {why}");
            EXIT_USAGE
        }
    }
}

fn try_exec(args: ExecArgs) -> Result<i32, String> {
    if !(1..=8).contains(&args.smp) {
        return Err("--smp must be from 1 to 8".into());
    }
    if args.timeout == 0 {
        return Err("--timeout must be at least 1 second".into());
    }
    let path = &args.path;
    let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    extregs_elf::plan(&bytes, extregs_elf_user_end())
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let mut argv = Vec::new();
    for argument in
        std::iter::once(path.to_string_lossy().into_owned()).chain(args.args.iter().cloned())
    {
        if argument.contains('\0') {
            return Err(format!("argument {argument:?} contains a NUL byte"));
        }
        argv.extend_from_slice(argument.as_bytes());
        argv.push(0);
    }
    if argv.len() > ARGV_MAX {
        return Err(format!("the arguments take {} bytes, more than {ARGV_MAX}", argv.len()));
    }
    let argv_file = tempfile_with(&argv)?;
    let program =
        std::fs::canonicalize(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let config = RunConfig {
        firmware: args.firmware,
        accel: Accel::Tcg,
        cpu: args.cpu,
        timeout: Duration::from_secs(args.timeout),
        echo: !args.quiet,
        granular: args.granular,
        nmi_storm: args.nmi_storm,
        smp: (args.smp > 1).then(|| args.smp.to_string()),
        ..qemu::exec_config(&program, &argv_file.0)
    };
    let outcome = qemu::run(&config).map_err(|error| error.to_string())?;
    if args.quiet {
        print_program_output(&outcome.serial);
    }
    if let Some(sent) = outcome.nmis_sent {
        eprintln!("extregs: NMI storm: {sent} NMIs sent over QMP");
    }
    let (code, why) = outcome.verdict();
    let status = outcome.result().and_then(|result| result.get("exit_status")?.as_i64());
    match status {
        Some(status) if code == 0 || code == EXIT_KERNEL_FAILURE => {
            if !args.quiet {
                eprintln!("extregs: exec: program exited with status {status}");
            }
            Ok(status.clamp(0, 255) as i32)
        }
        _ => {
            eprintln!("extregs: exec: {why} (exit {code})");
            Ok(code)
        }
    }
}

/// The kernel's `TASK_SIZE_MAX`: user space ends a page below 2^47.
fn extregs_elf_user_end() -> u64 {
    (1 << 47) - 4096
}

/// What `--quiet` keeps of the console: everything after the kernel's
/// `extregs: exec:` line, but the RESULT line.
fn print_program_output(serial: &str) {
    let mut started = false;
    let mut stdout = std::io::stdout().lock();
    for line in serial.lines() {
        if !started {
            started = line.starts_with("extregs: exec:");
            continue;
        }
        if line.starts_with("RESULT ") || line.starts_with("extregs: exec:") {
            continue;
        }
        let _ = writeln!(stdout, "{line}");
    }
}

/// A temporary file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_with(bytes: &[u8]) -> Result<TempFile, String> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let number = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("extregs-{}-{number}.argv", std::process::id()));
    std::fs::write(&path, bytes).map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(TempFile(path))
}
