//! Boot time: QEMU started N times per firmware, timed from the spawn to
//! the kernel's first serial line and to its `RESULT` line (`mode=demo`),
//! on the same QEMU command line `extregs run` uses. Measured from the
//! outside, with the host's monotonic clock, as the serial bytes arrive.

use super::statistics::median;
use crate::error::{Error, Result};
use crate::qemu::{self, Firmware, RunConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

/// What the kernel prints first (the loader's lines come before it).
pub const FIRST_KERNEL_LINE: &str = "extregs: extended pt_regs kernel, booting";

/// One boot's times, in seconds from QEMU's spawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootTime {
    pub first_kernel_line: f64,
    pub result: f64,
}

/// Boots `image` with `firmware` once and times it. The boot must print
/// the kernel's first line and a `RESULT`, and exit, within `timeout`.
pub fn time_one_boot(firmware: Firmware, image: &Path, timeout: Duration) -> Result<BootTime> {
    let config = RunConfig { firmware, cmdline: "mode=demo".into(), ..RunConfig::default() };
    let mut command = Command::new(qemu::qemu_binary());
    command
        .args(qemu::qemu_arguments(&config, image))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|error| Error::io(format!("starting {}", qemu::qemu_binary().display()), error))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    // The serial lines are read and timed on a thread while this one
    // waits, with the timeout, for QEMU to exit.
    let reader = std::thread::spawn(move || {
        let (mut first_kernel_line, mut result) = (None, None);
        for line in BufReader::new(stdout).split(b'\n').map_while(std::io::Result::ok) {
            let seconds = started.elapsed().as_secs_f64();
            let line = String::from_utf8_lossy(&line);
            if first_kernel_line.is_none() && line.starts_with(FIRST_KERNEL_LINE) {
                first_kernel_line = Some(seconds);
            }
            if result.is_none() && line.starts_with("RESULT ") {
                result = Some(seconds);
            }
        }
        (first_kernel_line, result)
    });
    let exited =
        child.wait_timeout(timeout).map_err(|error| Error::io("waiting for QEMU", error))?;
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (first_kernel_line, result) = reader.join().expect("the serial reader does not panic");
    let status = match exited {
        Some(status) => status.to_string(),
        None => "killed at the timeout".to_string(),
    };
    match (first_kernel_line, result) {
        (Some(first_kernel_line), Some(result)) => Ok(BootTime { first_kernel_line, result }),
        _ => Err(Error::Kernel(format!(
            "a {firmware:?} boot of {} printed no {} within {timeout:?} ({status})",
            image.display(),
            if first_kernel_line.is_none() { "kernel line" } else { "RESULT" }
        ))),
    }
}

/// `runs` boots of one image and firmware.
#[derive(Clone, Debug)]
pub struct BootSeries {
    pub firmware: Firmware,
    pub image: String,
    pub times: Vec<BootTime>,
}

impl BootSeries {
    fn column(&self, pick: fn(&BootTime) -> f64) -> Vec<f64> {
        self.times.iter().map(pick).collect()
    }

    /// (median, min, max) of a column.
    fn summary(&self, pick: fn(&BootTime) -> f64) -> (f64, f64, f64) {
        let values = self.column(pick);
        let median = median(&values).unwrap_or(f64::NAN);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median, min, max)
    }

    /// The JSON row: medians and ranges in seconds, and every boot.
    pub fn to_json(&self) -> Value {
        let stat = |pick: fn(&BootTime) -> f64| {
            let (median, min, max) = self.summary(pick);
            json!({"median": median, "min": min, "max": max, "runs": self.column(pick)})
        };
        json!({
            "firmware": format!("{:?}", self.firmware).to_lowercase(),
            "image": self.image,
            "boots": self.times.len(),
            "first_kernel_line_s": stat(|time| time.first_kernel_line),
            "result_s": stat(|time| time.result),
        })
    }

    /// One table row.
    pub fn table_row(&self) -> String {
        let (line, line_min, line_max) = self.summary(|time| time.first_kernel_line);
        let (result, result_min, result_max) = self.summary(|time| time.result);
        format!(
            "{:<6} {:>5}  {line:>6.3} [{line_min:.3}, {line_max:.3}]  {result:>6.3} [{result_min:.3}, {result_max:.3}]",
            format!("{:?}", self.firmware).to_lowercase(),
            self.times.len()
        )
    }
}

/// The table's header.
pub fn table_header() -> String {
    format!("{:<6} {:>5}  {:<24}  {:<24}", "", "boots", "first kernel line (s)", "RESULT (s)")
        + "\n(median [min, max], seconds from QEMU's start; mode=demo, -cpu max, TCG)"
}

/// Boots `image` `runs` times with `firmware`.
pub fn measure(firmware: Firmware, image: &Path, runs: u32) -> Result<BootSeries> {
    if !image.is_file() {
        return Err(Error::Usage(format!("{} is not a boot image", image.display())));
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(time_one_boot(firmware, image, Duration::from_secs(120))?);
    }
    Ok(BootSeries { firmware, image: image.display().to_string(), times })
}
