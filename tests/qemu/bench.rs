//! The bench: both harnesses, every variant and size row.

use crate::common::*;
use extregs::exit_codes::EXIT_SUCCESS;

#[test]
fn bench_runs_both_harnesses_and_reports_every_variant() {
    let dir = std::env::temp_dir();
    let json = dir.join(format!("extregs-{}-bench.json", std::process::id()));
    let svg = dir.join(format!("extregs-{}-bench.svg", std::process::id()));
    let output = extregs_cli(&[
        "bench",
        "--harness",
        "both",
        "--iterations",
        "20000",
        "--runs",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(EXIT_SUCCESS),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The table names the harness, the CPU and the accelerator.
    assert!(stdout.contains("native harness: ring 3 on "), "{stdout}");
    assert!(stdout.contains("kernel harness: QEMU TCG on "), "{stdout}");
    assert!(stdout.contains("nesting: extended"), "{stdout}");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let plot = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    assert!(plot.contains("<svg") && plot.contains("extended"), "not an SVG chart");
    assert!(plot.contains("extension bytes"), "the size series is drawn");
    let rows = document["rows"].as_array().unwrap();
    for harness in ["native", "kernel"] {
        let of: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["harness"] == harness && r["extension_bytes"].is_null())
            .collect();
        let names: Vec<&str> = of.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "floor",
                "x86-interrupt",
                "by-value",
                "by-reference",
                "extended",
                "extended+pks-hit",
                "extended+pks-write",
                "yield",
                "yield+pkrs-switch",
                "syscall-by-value",
                "syscall-extended",
                "syscall"
            ],
            "{harness}: every variant, each either measured or with a reason"
        );
        // The floor's lowest round trip over both runs: a slow stretch of
        // the TCG host during one run's floor row raises that run's median
        // (and so the merged one) but not the other run's minimum.
        let floor = of[0]["min_cycles"].as_f64().unwrap();
        for row in &of {
            if row["ran"] == true {
                for key in ["min_cycles", "median_cycles", "p99_cycles"] {
                    assert!(row[key].as_f64().unwrap() > 0.0, "{harness} {}: {key}", row["name"]);
                }
                assert!(row["iqr_cycles"].as_f64().unwrap() >= 0.0);
                // Two runs, each with its own median and ratio to its own
                // floor; the row's ratio is the median (mean of two) of those.
                assert_eq!(row["runs"], 2, "{row}");
                assert_eq!(row["run_median_cycles"].as_array().unwrap().len(), 2);
                assert!(row["median_spread_cycles"].as_f64().unwrap() >= 0.0);
                let per_run: Vec<f64> = row["ratio_to_floor_runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_f64().unwrap())
                    .collect();
                assert_eq!(per_run.len(), 2, "{row}");
                let expected = (per_run[0] + per_run[1]) / 2.0;
                let reported = row["ratio_to_floor"].as_f64().unwrap();
                assert!((reported - expected).abs() < 1e-9, "{row}");
                assert!(row["stack_bytes"].as_u64().unwrap() > 0);
                assert!(row["iterations"].as_u64().unwrap() >= 20000);
                // The floor is an `int`/`iretq` round trip; the syscall
                // rows enter by SYSCALL, which has its own (lower) floor.
                // No variant's fastest round trip beats the floor's.
                // `x86-interrupt` is within about 5% of the floor under TCG,
                // so one noisy run can put it a little below: a tenth of
                // slack for it, none for the rest.
                let name = row["name"].as_str().unwrap();
                let slack = if name == "x86-interrupt" { 0.9 } else { 1.0 };
                assert!(
                    name.starts_with("syscall")
                        || row["min_cycles"].as_f64().unwrap() >= floor * slack,
                    "{harness}: {name} is cheaper than the floor: {row}"
                );
            } else {
                assert!(row["why_not_run"].as_str().is_some_and(|why| !why.is_empty()));
            }
        }
    }
    // The size series: in both harnesses, every placement at every size,
    // measured twice; the stack per frame grows with the state: by its
    // 120 more bytes from 8 to 128, less what 16-byte rounding of the
    // frames absorbed at the small end.
    for harness in ["native", "kernel"] {
        let sized: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["harness"] == harness && !r["extension_bytes"].is_null())
            .collect();
        assert_eq!(sized.len(), 20, "{harness}: 4 placements x 5 sizes");
        for placement in ["below", "above", "by-value", "by-reference"] {
            let series: Vec<(u64, u64, f64)> = sized
                .iter()
                .filter(|r| r["placement"] == placement)
                .map(|r| {
                    assert_eq!(r["ran"], true, "{r}");
                    assert_eq!(r["runs"], 2, "{r}");
                    (
                        r["extension_bytes"].as_u64().unwrap(),
                        r["stack_bytes"].as_u64().unwrap(),
                        r["median_cycles"].as_f64().unwrap(),
                    )
                })
                .collect();
            let sizes: Vec<u64> = series.iter().map(|s| s.0).collect();
            assert_eq!(sizes, [8, 16, 32, 64, 128], "{harness} {placement}");
            assert!(series.windows(2).all(|w| w[1].1 >= w[0].1), "{harness} {placement}");
            assert!(series[4].1 - series[0].1 >= 120 - 16, "{harness} {placement}: {series:?}");
            assert!(series.iter().all(|s| s.2 > 0.0));
        }
    }
    // The native harness runs the four it can; the kernel runs all twelve
    // (with PKS, which -cpu max has); both run the 20 rows of the series.
    assert_eq!(rows.iter().filter(|r| r["harness"] == "native" && r["ran"] == true).count(), 24);
    assert_eq!(rows.iter().filter(|r| r["harness"] == "kernel" && r["ran"] == true).count(), 32);
    // The SYSCALL round trips: the extended frame costs its 8 bytes of
    // stack more than pt_regs alone (with the pad word: the same), and the
    // real path (entry checks and the table) more than both.
    let kernel_row = |name: &str| {
        rows.iter().find(|r| r["harness"] == "kernel" && r["name"] == name).unwrap().clone()
    };
    let real = kernel_row("syscall");
    assert!(
        real["stack_bytes"].as_u64().unwrap()
            > kernel_row("syscall-extended")["stack_bytes"].as_u64().unwrap(),
        "{real}"
    );
    let nesting = document["nesting"].as_array().unwrap();
    // Both builds are named: the kernel's (from its BENCH_BUILD line) and the
    // native harness's, with the same opt-level in every profile.
    assert_eq!(document["kernel_build"]["opt_level"], "2", "{document}");
    assert_eq!(document["native_build"]["opt_level"], "3", "{document}");
    assert!(stdout.contains("kernel profile "), "{stdout}");
    let depths: Vec<u64> = nesting.iter().map(|n| n["depth"].as_u64().unwrap()).collect();
    assert_eq!(depths, [1, 2, 4, 8]);
    let stacks: Vec<u64> = nesting.iter().map(|n| n["stack_bytes"].as_u64().unwrap()).collect();
    assert!(stacks.windows(2).all(|pair| pair[1] > pair[0]), "stack grows with depth: {stacks:?}");
}

/// `bench --boot` boots each image and times it: it answers with a row per
/// firmware, each boot's kernel line before its RESULT (the times
/// themselves are the bench's to report, not a test's to judge).
#[test]
fn bench_boot_times_every_firmware() {
    let json = std::env::temp_dir().join(format!("extregs-{}-boot.json", std::process::id()));
    let output = extregs_cli(&["bench", "--boot", "--runs", "1", "--json", json.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(EXIT_SUCCESS), "{stdout}");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON")).unwrap();
    let _ = std::fs::remove_file(&json);
    let rows = document["boot"].as_array().expect("boot rows");
    let firmware: Vec<&str> = rows.iter().map(|row| row["firmware"].as_str().unwrap()).collect();
    assert_eq!(firmware, ["bios", "uefi"]);
    for row in rows {
        let line = row["first_kernel_line_s"]["median"].as_f64().unwrap();
        let result = row["result_s"]["median"].as_f64().unwrap();
        assert!(0.0 < line && line < result, "{row}");
        assert_eq!(row["boots"], 1);
    }
    // Another image to compare must exist.
    let output =
        extregs_cli(&["bench", "--boot", "--runs", "1", "--also-bios", "/nonexistent.img"]);
    assert_eq!(output.status.code(), Some(extregs::exit_codes::EXIT_USAGE));
}
