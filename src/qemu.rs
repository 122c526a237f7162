//! Starting QEMU for the kernel and collecting what it prints.
//!
//! The machine is always the same: serial on stdio, `isa-debug-exit` at port
//! 0xf4 (the kernel writes 0x10 for success, 0x11 for failure; QEMU exits with
//! `(value << 1) | 1`, so 33 and 35), the command line as the fw_cfg file
//! `opt/extregs/cmdline`, and `-no-reboot` so a triple fault ends QEMU instead
//! of looping.

use crate::error::{Error, Result};
use crate::images;
use crate::report::{Outcome, RunStatus};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use wait_timeout::ChildExt;

/// Where OVMF lives once the `ovmf` package is installed.
pub const OVMF_PATH: &str = "/usr/share/ovmf/OVMF.fd";

/// Which firmware boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// Which QEMU accelerator runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: the default, and what every test uses.
    Tcg,
    /// KVM. On the reference machine it cannot deliver guest exceptions
    /// (docs/design.md, "Machine facts"), so it is only for experiments.
    Kvm,
    /// KVM when `/dev/kvm` can be opened, TCG otherwise.
    Auto,
}

impl Accel {
    fn qemu_name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
            Accel::Auto => {
                let kvm_usable =
                    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
                if kvm_usable {
                    "kvm"
                } else {
                    "tcg"
                }
            }
        }
    }
}

/// One boot of the kernel.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub firmware: Firmware,
    pub accel: Accel,
    /// QEMU `-cpu` model; `max` exposes PKS under TCG.
    pub cpu: String,
    /// The kernel command line (docs/design.md, "Contracts"), passed through fw_cfg.
    pub cmdline: String,
    /// Kill QEMU after this long and report a timeout (with
    /// `progress_prefix`: this long without a progress line).
    pub timeout: Duration,
    /// A serial line starting with this is progress: the timeout then
    /// counts from the last such line (a batch of fuzz seeds, `FUZZ `).
    pub progress_prefix: Option<&'static str>,
    /// Start QEMU's gdb stub on :1234 and wait for the debugger.
    pub gdb: bool,
    /// Copy the serial console to our stdout as it arrives.
    pub echo: bool,
    /// Open a QMP server on this Unix socket (`-qmp unix:PATH,server=on,
    /// wait=off`), e.g. to inject NMIs while the kernel idles.
    pub qmp: Option<PathBuf>,
    /// Run with `-icount shift=0,sleep=off`: guest time follows the
    /// instruction count, so timer and IPI delivery points replay exactly.
    pub deterministic: bool,
    /// Kill QEMU early when this becomes true (Ctrl-C in a campaign); the
    /// outcome is then reported as a timeout.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Also send every serial line here as it arrives (tests use it to act
    /// on the kernel's progress, e.g. inject NMIs once it idles).
    pub serial_lines: Option<mpsc::Sender<String>>,
    /// One guest instruction per translation block (QEMU 7.2 `-singlestep`):
    /// TCG delivers interrupts only between blocks, so this lets an NMI or
    /// IRQ land at every instruction boundary (slower).
    pub granular: bool,
    /// Send NMIs from outside (QMP `inject-nmi`, back to back) from the
    /// moment the kernel names its mode (it has its IDT then) until QEMU
    /// exits. Uses `qmp` when given, else a socket of its own.
    pub nmi_storm: bool,
    /// QEMU's `-smp` value (`4`, or a topology such as
    /// `6,sockets=2,cores=3`); `None`: one CPU. The kernel reads the CPUs
    /// from the MADT; it does not start the others yet.
    pub smp: Option<String>,
    /// Extra fw_cfg files (`-fw_cfg name=NAME,file=PATH`): the program and
    /// arguments of `extregs exec`.
    pub fw_cfg_files: Vec<(String, PathBuf)>,
}

/// The gap between two NMIs of a storm. QEMU keeps one pending NMI per
/// CPU, so a shorter gap only merges more of them.
pub const NMI_STORM_INTERVAL: Duration = Duration::from_micros(500);

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            firmware: Firmware::Bios,
            accel: Accel::Tcg,
            cpu: "max".to_string(),
            cmdline: String::new(),
            timeout: Duration::from_secs(120),
            progress_prefix: None,
            gdb: false,
            echo: false,
            qmp: None,
            deterministic: false,
            cancel: None,
            serial_lines: None,
            granular: false,
            nmi_storm: false,
            smp: None,
            fw_cfg_files: Vec::new(),
        }
    }
}

/// The QEMU binary: `$EXTREGS_QEMU` or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("EXTREGS_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// Checks the command line can go through fw_cfg's `string=` form: QEMU
/// splits `-fw_cfg` options at commas, so a comma would silently cut it.
pub fn check_cmdline(cmdline: &str) -> Result<()> {
    if cmdline.contains(',') {
        return Err(Error::Setup(format!(
            "the kernel command line cannot contain ',' (QEMU's option syntax): {cmdline:?}"
        )));
    }
    Ok(())
}

/// A boot in `mode=exec`: the program goes to the kernel as fw_cfg file
/// `opt/extregs/program`, its argv (NUL-separated, argv[0] first) as
/// `opt/extregs/argv` (`extregs exec`, and the bench's peer section).
pub fn exec_config(program: &Path, argv_file: &Path) -> RunConfig {
    RunConfig {
        cmdline: "mode=exec".into(),
        fw_cfg_files: vec![
            ("opt/extregs/program".into(), program.to_path_buf()),
            ("opt/extregs/argv".into(), argv_file.to_path_buf()),
        ],
        ..RunConfig::default()
    }
}

/// The machine type: q35 as QEMU 7.0 defined it.
///
/// From 7.1 on, a q35 machine whose CPU says AMD (TCG's `-cpu max` and
/// `qemu64` do) and has 40 physical address bits (the only width TCG takes)
/// lists the HyperTransport hole below 1 TiB (`0xfd00000000`) as reserved
/// memory. The loader maps physical memory up to the highest address the
/// memory map names, in 2 MiB pages, so that one entry made it build page
/// tables for a whole TiB: 0.1 s of every boot under TCG (docs/boot.md).
/// The 7.0 machine lists the same RAM and devices without that entry.
pub const MACHINE_TYPE: &str = "pc-q35-7.0";

/// The machine every boot runs on ([`MACHINE_TYPE`], 256 MiB, the
/// accelerator and CPU of `config`, the serial console on stdio, no
/// display, no reboot): what the kernel's boots and the bench's Linux peer
/// share.
pub fn machine_arguments(config: &RunConfig) -> Vec<String> {
    vec![
        "-machine".into(),
        MACHINE_TYPE.into(),
        "-m".into(),
        "256M".into(),
        "-accel".into(),
        config.accel.qemu_name().into(),
        "-cpu".into(),
        config.cpu.clone(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-monitor".into(),
        "none".into(),
        "-no-reboot".into(),
    ]
}

/// The QEMU arguments for a boot, without the binary. Public so the README's
/// plain-QEMU recipe and the runner cannot drift apart (a test checks it).
pub fn qemu_arguments(config: &RunConfig, image: &Path) -> Vec<String> {
    let mut args = machine_arguments(config);
    args.extend(["-device".into(), "isa-debug-exit,iobase=0xf4,iosize=0x04".into()]);
    // QEMU refuses an empty string=; no file means the default (mode=demo).
    if !config.cmdline.trim().is_empty() {
        args.extend([
            "-fw_cfg".into(),
            format!("name=opt/extregs/cmdline,string={}", config.cmdline),
        ]);
    }
    for (name, path) in &config.fw_cfg_files {
        args.extend(["-fw_cfg".into(), format!("name={name},file={}", path.display())]);
    }
    if config.firmware == Firmware::Uefi {
        args.extend(["-bios".into(), OVMF_PATH.into()]);
    }
    if let Some(smp) = &config.smp {
        args.extend(["-smp".into(), smp.clone()]);
    }
    args.extend(["-drive".into(), format!("format=raw,snapshot=on,file={}", image.display())]);
    if config.deterministic {
        args.extend(["-icount".into(), "shift=0,sleep=off".into()]);
    }
    if config.granular {
        args.push("-singlestep".into());
    }
    if let Some(socket) = qmp_socket(config) {
        args.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", socket.display())]);
    }
    if config.gdb {
        args.extend(["-s".into(), "-S".into()]);
    }
    args
}

/// The QMP socket of a boot: the one asked for, or a private one for an
/// NMI storm.
fn qmp_socket(config: &RunConfig) -> Option<PathBuf> {
    match (&config.qmp, config.nmi_storm) {
        (Some(socket), _) => Some(socket.clone()),
        (None, true) => Some(std::env::temp_dir().join(format!(
            "extregs-{}-{}-storm.qmp",
            std::process::id(),
            storm_socket_number(config)
        ))),
        (None, false) => None,
    }
}

/// A number that tells the storm sockets of one process's boots apart
/// (parallel campaign boots): derived from the config's address, stable
/// while the boot runs.
fn storm_socket_number(config: &RunConfig) -> usize {
    config as *const RunConfig as usize
}

/// Sends NMIs over `socket` once `ready` is set, until `done` is; returns
/// how many QEMU accepted.
fn nmi_storm(socket: PathBuf, ready: Arc<AtomicBool>, done: Arc<AtomicBool>) -> u64 {
    while !ready.load(Ordering::SeqCst) {
        if done.load(Ordering::SeqCst) {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Ok(mut qmp) = crate::qmp::Qmp::connect(&socket, Duration::from_secs(10)) else {
        return 0;
    };
    let mut sent = 0;
    while !done.load(Ordering::SeqCst) {
        if qmp.inject_nmi().is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(NMI_STORM_INTERVAL);
    }
    sent
}

/// Boots the kernel once and waits for QEMU to end or the timeout.
pub fn run(config: &RunConfig) -> Result<Outcome> {
    check_cmdline(&config.cmdline)?;
    for (name, path) in &config.fw_cfg_files {
        if path.to_string_lossy().contains(',') || name.contains(',') {
            return Err(Error::Setup(format!(
                "a fw_cfg file path cannot contain ',' (QEMU's option syntax): {}",
                path.display()
            )));
        }
    }
    if let Some(socket) = qmp_socket(config) {
        if socket.to_string_lossy().contains(',') {
            return Err(Error::Setup(format!(
                "the QMP socket path cannot contain ',' (QEMU's option syntax): {}",
                socket.display()
            )));
        }
    }
    let image = match config.firmware {
        Firmware::Bios => images::bios_image(),
        Firmware::Uefi => images::uefi_image(),
    };
    if !image.exists() {
        return Err(Error::Setup(format!("boot image {} is missing: rebuild", image.display())));
    }
    if config.firmware == Firmware::Uefi && !Path::new(OVMF_PATH).exists() {
        return Err(Error::Setup(format!(
            "UEFI firmware {OVMF_PATH} is missing: install the ovmf package (make run does)"
        )));
    }
    let qemu = qemu_binary();
    let mut command = Command::new(&qemu);
    command
        .args(qemu_arguments(config, image))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if config.cancel.is_some() {
        // The owner stops this boot through `cancel`; keep a terminal's
        // Ctrl-C (sent to the whole foreground group) away from QEMU, so a
        // boot killed by Ctrl-C is never mistaken for a kernel failure.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut child = command.spawn().map_err(|error| {
        Error::io(
            format!("starting {} (install qemu-system-x86; make run does)", qemu.display()),
            error,
        )
    })?;

    // Serial and QEMU's own stderr are read on threads, so a chatty guest can
    // never block on a full pipe while we wait.
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let echo = config.echo;
    let line_sink = config.serial_lines.clone();
    // The kernel names its mode once its IDT is in: before that an NMI
    // would triple-fault the guest (docs/design.md, "Machine facts").
    let kernel_ready = Arc::new(AtomicBool::new(false));
    let kernel_ready_flag = kernel_ready.clone();
    let storm_done = Arc::new(AtomicBool::new(false));
    let storm = match (config.nmi_storm, qmp_socket(config)) {
        (true, Some(socket)) => {
            let (ready, done) = (kernel_ready.clone(), storm_done.clone());
            Some(std::thread::spawn(move || nmi_storm(socket, ready, done)))
        }
        _ => None,
    };
    let last_progress = Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let (progress_prefix, progress_seen) = (config.progress_prefix, last_progress.clone());
    let (serial_sender, serial_receiver) = mpsc::channel();
    let serial_reader = std::thread::spawn(move || {
        let mut collected = String::new();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if echo {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
            if let Some(sink) = &line_sink {
                let _ = sink.send(text.trim_end_matches('\n').to_string());
            }
            if text.starts_with("extregs: mode=") {
                kernel_ready_flag.store(true, Ordering::SeqCst);
            }
            if progress_prefix.is_some_and(|prefix| text.starts_with(prefix)) {
                *progress_seen.lock().expect("progress lock") = std::time::Instant::now();
            }
            collected.push_str(&text);
            line.clear();
        }
        let _ = serial_sender.send(collected);
    });
    // KVM on some hosts cannot deliver guest exceptions: QEMU then prints
    // "KVM internal error" and stops the guest without exiting. Spot it and
    // end the boot at once instead of waiting for the timeout.
    let kvm_failed = Arc::new(AtomicBool::new(false));
    let kvm_failed_flag = kvm_failed.clone();
    let stderr_reader = std::thread::spawn(move || {
        let mut collected = String::new();
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line.contains("KVM internal error") {
                kvm_failed_flag.store(true, Ordering::SeqCst);
            }
            collected.push_str(&line);
            line.clear();
        }
        collected
    });

    let waited = loop {
        // Without a progress prefix the last progress is the start.
        let deadline = *last_progress.lock().expect("progress lock") + config.timeout;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let slice = left.min(Duration::from_millis(100));
        let exited =
            child.wait_timeout(slice).map_err(|error| Error::io("waiting for QEMU", error))?;
        let cancelled = config.cancel.as_ref().is_some_and(|flag| flag.load(Ordering::SeqCst));
        if exited.is_some() || left.is_zero() || cancelled || kvm_failed.load(Ordering::SeqCst) {
            break exited.ok_or(cancelled);
        }
    };
    let status = match waited {
        Ok(exit) => RunStatus::Exited(exit.code()),
        Err(cancelled) => {
            let _ = child.kill();
            let _ = child.wait();
            if kvm_failed.load(Ordering::SeqCst) {
                // Killed because KVM failed: a crash of the run, not a hang.
                RunStatus::Exited(None)
            } else if cancelled {
                RunStatus::Cancelled
            } else {
                RunStatus::TimedOut
            }
        }
    };
    storm_done.store(true, Ordering::SeqCst);
    let nmis_sent = storm.map(|thread| thread.join().unwrap_or(0));
    let _ = serial_reader.join();
    let serial = serial_receiver.recv().unwrap_or_default();
    let qemu_stderr = stderr_reader.join().unwrap_or_default();
    if config.nmi_storm && config.qmp.is_none() {
        if let Some(socket) = qmp_socket(config) {
            let _ = std::fs::remove_file(socket);
        }
    }
    let mut outcome = Outcome::new(status, serial, qemu_stderr);
    outcome.nmis_sent = nmis_sent;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_carry_the_contract() {
        let config = RunConfig { cmdline: "mode=selftest".into(), ..RunConfig::default() };
        let args = qemu_arguments(&config, Path::new("/tmp/x.img")).join(" ");
        assert!(args.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(args.contains("-fw_cfg name=opt/extregs/cmdline,string=mode=selftest"));
        assert!(args.contains("-cpu max"));
        assert!(args.contains("-accel tcg"));
        assert!(args.contains("-no-reboot"));
        assert!(!args.contains(OVMF_PATH));
        let with_qmp = RunConfig { qmp: Some("/tmp/q.sock".into()), ..config.clone() };
        assert!(qemu_arguments(&with_qmp, Path::new("/tmp/x.img"))
            .join(" ")
            .contains("-qmp unix:/tmp/q.sock,server=on,wait=off"));
        let uefi = RunConfig { firmware: Firmware::Uefi, ..config };
        assert!(qemu_arguments(&uefi, Path::new("/tmp/x.img")).join(" ").contains(OVMF_PATH));
    }

    #[test]
    fn commas_in_the_command_line_are_refused() {
        assert!(check_cmdline("mode=demo").is_ok());
        assert!(check_cmdline("mode=demo,x").is_err());
    }
}
