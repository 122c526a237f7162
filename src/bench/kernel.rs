//! The kernel harness: boots `mode=bench` and reads its `BENCH` lines.

use super::*;
use crate::error::{Error, Result};
use crate::qemu::{self, Accel, RunConfig};
use extregs_bench::Summary;
use serde_json::Value;
use std::time::Duration;

/// The kernel harness: boots `mode=bench` and reads its `BENCH` lines.
/// What the kernel harness measured: rows, the nesting table, the CPU
/// model, and the kernel's build (`profile`, `opt_level`,
/// `debug_assertions`, from its `BENCH_BUILD` line).
pub type KernelBench = (Vec<Row>, Vec<NestRow>, String, Value);

pub fn kernel(iterations: u64, accel: Accel) -> Result<KernelBench> {
    let config = RunConfig {
        accel,
        cmdline: format!("mode=bench iterations={iterations}"),
        timeout: Duration::from_secs(900),
        ..RunConfig::default()
    };
    let outcome = qemu::run(&config)?;
    if outcome.qemu_stderr.contains("KVM internal error") {
        return Err(Error::Setup("KVM cannot deliver guest exceptions on this host (\"KVM internal error\"): use --accel tcg".into()));
    }
    let (code, why) = outcome.verdict();
    if code != 0 {
        let tail: Vec<&str> = outcome.serial.lines().rev().take(15).collect();
        return Err(Error::Kernel(format!(
            "the kernel harness failed: {why}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    let mut rows = Vec::new();
    let mut nesting = Vec::new();
    let mut build = Value::Null;
    for line in outcome.serial.lines() {
        if let Some(json) = line.strip_prefix("BENCH_BUILD ") {
            build = serde_json::from_str(json)
                .map_err(|e| Error::json(format!("the BENCH_BUILD line {line}"), e))?;
        } else if let Some(json) = line.strip_prefix("BENCH ") {
            let value: Value = serde_json::from_str(json)
                .map_err(|e| Error::json(format!("the BENCH line {line}"), e))?;
            let summary = value["median"].as_f64().map(|median| Summary {
                min: value["min"].as_f64().unwrap_or(0.0),
                median,
                p99: value["p99"].as_f64().unwrap_or(0.0),
                iqr: value["iqr"].as_f64().unwrap_or(0.0),
            });
            rows.push(Row {
                name: value["name"].as_str().unwrap_or("?").into(),
                harness: "kernel".into(),
                summary,
                stack_bytes: value["stack_bytes"].as_u64(),
                iterations: value["iterations"].as_u64().unwrap_or(0),
                why: value["why"].as_str().map(String::from),
                repeats: Repeats::default(),
                extension_bytes: value["extension_bytes"].as_u64(),
                placement: value["placement"].as_str().map(String::from),
            });
        } else if let Some(json) = line.strip_prefix("BENCH_NEST ") {
            let value: Value = serde_json::from_str(json)
                .map_err(|e| Error::json(format!("the BENCH_NEST line {line}"), e))?;
            nesting.push(NestRow {
                depth: value["depth"].as_u64().unwrap_or(0),
                summary: Summary {
                    min: value["min"].as_f64().unwrap_or(0.0),
                    median: value["median"].as_f64().unwrap_or(0.0),
                    p99: value["p99"].as_f64().unwrap_or(0.0),
                    iqr: value["iqr"].as_f64().unwrap_or(0.0),
                },
                stack_bytes: value["stack_bytes"].as_u64().unwrap_or(0),
                medians: Vec::new(),
            });
        }
    }
    let cpu = outcome
        .serial
        .lines()
        .find_map(|line| line.strip_prefix("extregs: cpu: "))
        .map(|text| text.split(": pks=").next().unwrap_or(text).to_string())
        .unwrap_or_else(|| "unknown".into());
    if build.is_null() {
        return Err(Error::Kernel("the kernel printed no BENCH_BUILD line".into()));
    }
    Ok((rows, nesting, cpu, build))
}
