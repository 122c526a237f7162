//! The peer section of `extregs bench` (`--peer`): one static program,
//! `tests/linux/peer_bench.c`, run under `extregs exec` and under Debian's
//! Linux 6.1 kernel, booted by the same QEMU (`-kernel`/`-initrd`, the
//! program as `/init`), one after the other, `--runs` times each. The
//! program times, with RDTSC in user mode and in batches of 16, a getpid
//! loop and a `raise()` → handler → `rt_sigreturn` loop, and prints one
//! `PEER {json}` line with the medians.
//!
//! What it needs, and gets when missing: `musl-gcc` (the `musl-tools`
//! package, which `make linux-deps` installs) builds the program; the
//! Linux kernel is the `vmlinuz` of the package `linux-image-amd64`
//! depends on, fetched with `apt-get download` and unpacked with
//! `dpkg-deb` into `target/peer/` (never installed on the host). The
//! initramfs is written here, in the kernel's `newc` cpio format.

use super::statistics::median;
use crate::error::{Error, Result};
use crate::qemu::{self, RunConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use wait_timeout::ChildExt;

/// Where the program, the initramfs and the Linux kernel are kept.
pub fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peer")
}

/// The two medians one run of the program prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerFigures {
    /// TSC ticks per getpid round trip.
    pub getpid_ticks: u64,
    /// TSC ticks per `raise()` → handler → `rt_sigreturn`.
    pub signal_ticks: u64,
}

/// Parses the program's `PEER {json}` line out of a console transcript.
pub fn parse_peer_line(serial: &str) -> Result<PeerFigures> {
    let line = serial
        .lines()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix("PEER "))
        .ok_or_else(|| Error::Kernel("the peer program printed no PEER line".into()))?;
    let value: Value = serde_json::from_str(line).map_err(|error| {
        Error::Kernel(format!("a PEER line that is not JSON ({error}): {line}"))
    })?;
    if value["ok"] != true {
        return Err(Error::Kernel(format!("the peer program's handlers did not all run: {line}")));
    }
    let field = |name: &str| {
        value[name]
            .as_u64()
            .ok_or_else(|| Error::Kernel(format!("the PEER line lacks {name}: {line}")))
    };
    Ok(PeerFigures { getpid_ticks: field("getpid_ticks")?, signal_ticks: field("signal_ticks")? })
}

/// A `newc` cpio archive holding one executable file, `name`.
pub fn cpio_with_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    fn entry(archive: &mut Vec<u8>, name: &str, mode: u32, contents: &[u8], inode: u32) {
        let header = format!(
            "070701{inode:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            contents.len(),
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            name.len() + 1,
            0, // check
        );
        archive.extend_from_slice(header.as_bytes());
        archive.extend_from_slice(name.as_bytes());
        archive.push(0);
        while !archive.len().is_multiple_of(4) {
            archive.push(0);
        }
        archive.extend_from_slice(contents);
        while !archive.len().is_multiple_of(4) {
            archive.push(0);
        }
    }
    let mut archive = Vec::new();
    entry(&mut archive, name, 0o100_755, contents, 1);
    entry(&mut archive, "TRAILER!!!", 0, &[], 0);
    archive
}

/// Builds the peer program, its initramfs, and finds (or fetches) the
/// Linux kernel: (program, vmlinuz, initramfs).
pub fn prepare() -> Result<(PathBuf, PathBuf, PathBuf)> {
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(|error| Error::io(work.display().to_string(), error))?;
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/linux/peer_bench.c");
    let program = work.join("peer_bench");
    let status = Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&program)
        .arg(&source)
        .status()
        .map_err(|error| Error::io("musl-gcc (make linux-deps installs musl-tools)", error))?;
    if !status.success() {
        return Err(Error::Setup(format!("musl-gcc could not build {}", source.display())));
    }
    let contents =
        std::fs::read(&program).map_err(|error| Error::io(program.display().to_string(), error))?;
    let initramfs = work.join("peer-initramfs.cpio");
    std::fs::write(&initramfs, cpio_with_one_file("init", &contents))
        .map_err(|error| Error::io(initramfs.display().to_string(), error))?;
    let vmlinuz = match find_vmlinuz(&work) {
        Some(found) => found,
        None => fetch_linux(&work)?,
    };
    Ok((program, vmlinuz, initramfs))
}

fn find_vmlinuz(work: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(work.join("boot"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// `apt-get download` of the kernel package `linux-image-amd64` depends
/// on, unpacked (only its `vmlinuz`) into `work`.
fn fetch_linux(work: &Path) -> Result<PathBuf> {
    let depends =
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]).output().map_err(
            |error| Error::io("apt-cache (the Linux kernel comes from Debian's packages)", error),
        )?;
    let package = String::from_utf8_lossy(&depends.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("Depends: ").map(str::to_string))
        .filter(|name| name.starts_with("linux-image-"))
        .ok_or_else(|| {
            Error::Setup(
                "apt-cache names no kernel for linux-image-amd64 (run apt-get update)".into(),
            )
        })?;
    eprintln!("extregs: bench --peer: fetching {package} (apt-get download)");
    let downloaded =
        Command::new("apt-get").arg("download").arg(&package).current_dir(work).status();
    if !downloaded.is_ok_and(|status| status.success()) {
        return Err(Error::Setup(format!(
            "apt-get download {package} failed (run apt-get update)"
        )));
    }
    let deb = std::fs::read_dir(work)
        .map_err(|error| Error::io(work.display().to_string(), error))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(&package))
        })
        .ok_or_else(|| Error::Setup(format!("apt-get download left no {package} package")))?;
    let unpacked = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(work).status();
    if !unpacked.is_ok_and(|status| status.success()) {
        return Err(Error::Setup(format!("dpkg-deb could not unpack {}", deb.display())));
    }
    let _ = std::fs::remove_file(&deb);
    // Only the kernel image is needed; the modules are dropped.
    let _ = std::fs::remove_dir_all(work.join("lib"));
    let _ = std::fs::remove_dir_all(work.join("usr"));
    find_vmlinuz(work).ok_or_else(|| Error::Setup(format!("{} holds no vmlinuz", deb.display())))
}

/// One run of the program under extregs (`mode=exec`, as `extregs exec`).
pub fn run_on_extregs(program: &Path) -> Result<PeerFigures> {
    let argv = work_dir().join("peer_bench.argv");
    std::fs::write(&argv, b"peer_bench\0")
        .map_err(|error| Error::io(argv.display().to_string(), error))?;
    let config =
        RunConfig { timeout: Duration::from_secs(180), ..qemu::exec_config(program, &argv) };
    let outcome = qemu::run(&config)?;
    let (code, why) = outcome.verdict();
    if code != 0 {
        return Err(Error::Kernel(format!("the peer program under extregs: {why}")));
    }
    parse_peer_line(&outcome.serial)
}

/// The QEMU arguments that boot Linux with the program as `/init`: the
/// machine, memory, CPU and accelerator of `extregs run`.
pub fn linux_arguments(vmlinuz: &Path, initramfs: &Path) -> Vec<String> {
    let mut args = qemu::machine_arguments(&RunConfig::default());
    args.extend([
        "-kernel".into(),
        vmlinuz.display().to_string(),
        "-initrd".into(),
        initramfs.display().to_string(),
        "-append".into(),
        "console=ttyS0 quiet panic=-1".into(),
    ]);
    args
}

/// One run of the program as Linux's `/init` (it powers off at the end).
pub fn run_on_linux(vmlinuz: &Path, initramfs: &Path) -> Result<PeerFigures> {
    let mut child = Command::new(qemu::qemu_binary())
        .args(linux_arguments(vmlinuz, initramfs))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| Error::io(format!("starting {}", qemu::qemu_binary().display()), error))?;
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let reader = std::thread::spawn(move || {
        let mut serial = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut serial);
        String::from_utf8_lossy(&serial).into_owned()
    });
    let timeout = Duration::from_secs(180);
    let exited =
        child.wait_timeout(timeout).map_err(|error| Error::io("waiting for QEMU", error))?;
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let serial = reader.join().expect("the serial reader does not panic");
    parse_peer_line(&serial).map_err(|error| match exited {
        None => Error::Kernel(format!("Linux with the peer program timed out after {timeout:?}")),
        Some(_) => error,
    })
}

/// The runs of both kernels, alternating.
#[derive(Clone, Debug, Default)]
pub struct PeerSeries {
    pub extregs: Vec<PeerFigures>,
    pub linux: Vec<PeerFigures>,
    pub linux_kernel: String,
}

/// `runs` runs on each kernel, one after the other.
pub fn measure(runs: u32) -> Result<PeerSeries> {
    let (program, vmlinuz, initramfs) = prepare()?;
    let mut series = PeerSeries {
        linux_kernel: vmlinuz
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..PeerSeries::default()
    };
    for _ in 0..runs {
        series.extregs.push(run_on_extregs(&program)?);
        series.linux.push(run_on_linux(&vmlinuz, &initramfs)?);
    }
    Ok(series)
}

/// Picks one loop's figure out of a run.
type Pick = fn(&PeerFigures) -> u64;

/// The two loops, by name, with their picker.
const LOOPS: [(&str, Pick); 2] = [
    ("getpid", |figures| figures.getpid_ticks),
    ("raise -> handler -> rt_sigreturn", |figures| figures.signal_ticks),
];

impl PeerSeries {
    /// The median over the runs of one loop on one kernel.
    fn median_of(runs: &[PeerFigures], pick: Pick) -> f64 {
        let values: Vec<f64> = runs.iter().map(|figures| pick(figures) as f64).collect();
        median(&values).unwrap_or(f64::NAN)
    }

    /// Per loop: (name, extregs median, Linux median, extregs / Linux).
    pub fn summary(&self) -> Vec<(&'static str, f64, f64, f64)> {
        LOOPS
            .iter()
            .map(|(name, pick)| {
                let ours = Self::median_of(&self.extregs, *pick);
                let theirs = Self::median_of(&self.linux, *pick);
                (*name, ours, theirs, ours / theirs)
            })
            .collect()
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut text = format!(
            "peer: tests/linux/peer_bench.c (musl, static) under extregs and under Linux {} as /init\n\
             (QEMU TCG, -cpu max; TSC ticks per round trip, medians of 16-call batches, median of {} runs each)\n",
            self.linux_kernel,
            self.extregs.len()
        );
        text += &format!(
            "{:<34} {:>12} {:>12} {:>14}\n",
            "loop", "extregs", "Linux 6.1", "extregs/Linux"
        );
        for (name, ours, theirs, ratio) in self.summary() {
            text += &format!("{name:<34} {ours:>12.0} {theirs:>12.0} {ratio:>14.2}\n");
        }
        text
    }

    /// The JSON section.
    pub fn to_json(&self) -> Value {
        let runs = |figures: &[PeerFigures]| {
            figures
                .iter()
                .map(|f| json!({"getpid_ticks": f.getpid_ticks, "signal_ticks": f.signal_ticks}))
                .collect::<Vec<_>>()
        };
        json!({
            "program": "tests/linux/peer_bench.c",
            "linux_kernel": self.linux_kernel,
            "loops": self.summary().iter().map(|(name, ours, theirs, ratio)| json!({
                "name": name, "extregs_ticks": ours, "linux_ticks": theirs, "ratio": ratio,
            })).collect::<Vec<_>>(),
            "extregs_runs": runs(&self.extregs),
            "linux_runs": runs(&self.linux),
        })
    }

    /// The SVG: per loop, the two kernels' medians side by side, each
    /// run's figure as a dot, the ratio above.
    pub fn plot(&self, path: &Path) -> Result<()> {
        use plotters::prelude::*;
        let summary = self.summary();
        let area = SVGBackend::new(path, (900, 420)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| Error::draw("the peer chart", e))?;
        let panels = area.split_evenly((1, summary.len()));
        let colours = [RGBColor(52, 101, 164), RGBColor(204, 0, 0)];
        for ((panel, (name, ours, theirs, ratio)), (_, pick)) in
            panels.iter().zip(&summary).zip(LOOPS.iter())
        {
            let top = ours.max(*theirs) * 1.35;
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{name}: extregs/Linux {ratio:.2}"), ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..2f64, 0f64..top)
                .map_err(|e| Error::draw("the peer chart", e))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(2)
                .x_label_formatter(&|x| {
                    if *x < 1.0 {
                        "extregs".into()
                    } else {
                        "Linux 6.1".into()
                    }
                })
                .y_desc("TSC ticks per round trip")
                .draw()
                .map_err(|e| Error::draw("the peer chart", e))?;
            for (index, (value, runs)) in
                [(*ours, &self.extregs), (*theirs, &self.linux)].iter().enumerate()
            {
                let x = index as f64;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x + 0.2, 0.0), (x + 0.8, *value)],
                        colours[index].mix(0.6).filled(),
                    )))
                    .map_err(|e| Error::draw("the peer chart", e))?;
                chart
                    .draw_series(runs.iter().map(|figures| {
                        Circle::new((x + 0.5, pick(figures) as f64), 3, BLACK.filled())
                    }))
                    .map_err(|e| Error::draw("the peer chart", e))?;
            }
        }
        area.present().map_err(|e| Error::draw("the peer chart", e))?;
        Ok(())
    }
}
