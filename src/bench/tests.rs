//! Host tests of the bench: statistics, tables, the size series.

use super::native::size_row_name;
use super::render::{row_json, size_table};
use super::statistics::{combine, combine_nesting, median};
use super::{NestRow, Repeats, Row, Summary};
use std::collections::BTreeMap;

fn row(name: &str, median: f64) -> Row {
    Row {
        name: name.into(),
        harness: "kernel".into(),
        summary: Some(Summary { min: median - 1.0, median, p99: median + 10.0, iqr: 2.0 }),
        stack_bytes: Some(192),
        iterations: 100,
        why: None,
        repeats: Repeats::default(),
        extension_bytes: None,
        placement: None,
    }
}

fn size_row(placement: &str, bytes: u64, median: f64, stack: u64) -> Row {
    Row {
        extension_bytes: Some(bytes),
        placement: Some(placement.into()),
        stack_bytes: Some(stack),
        ..row(&size_row_name(placement, bytes), median)
    }
}

#[test]
fn the_size_table_is_placement_by_size() {
    let mut rows = vec![row("floor", 100.0)];
    for (index, bytes) in [8, 16, 32, 64, 128].into_iter().enumerate() {
        rows.push(size_row("below", bytes, 700.0 + index as f64, 184 + bytes));
        rows.push(size_row("above", bytes, 710.0, 200 + bytes));
    }
    let runs = [rows.clone(), rows.clone()];
    let combined = combine(&runs);
    let text = size_table(&combined, "title");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "title");
    assert!(lines[1].contains("8 B") && lines[1].contains("128 B"), "{text}");
    // Medians with the (zero) spread of the two runs; a placement that
    // did not run shows dashes.
    assert!(lines[2].starts_with("  below") && lines[2].contains("704.0 (0.0)"), "{text}");
    assert!(lines[4].starts_with("  by-value") && lines[4].contains('-'), "{text}");
    let stack = lines.iter().position(|l| l.contains("stack bytes")).unwrap();
    assert!(lines[stack + 1].contains("192") && lines[stack + 1].contains("312"), "{text}");
    // The size rows stay out of the main table, and carry their fields.
    assert!(!super::render::table(&combined, "t").contains("size-below-8"));
    let json = row_json(&combined[1], &combined);
    assert_eq!(
        (json["extension_bytes"].as_u64(), json["placement"].as_str()),
        (Some(8), Some("below"))
    );
    assert_eq!(json["name"], "size-below-8");
}

#[test]
fn repeated_runs_take_ratios_run_by_run() {
    // Run 1: floor 100, by-value 200, extended 300 (3.0x, 1.5x);
    // run 2: floor 400, by-value 400, extended 400 (1.0x, 1.0x);
    // run 3: floor 100, by-value 100, extended 150 (1.5x, 1.5x).
    let runs = vec![
        vec![row("floor", 100.0), row("by-value", 200.0), row("extended", 300.0)],
        vec![row("floor", 400.0), row("by-value", 400.0), row("extended", 400.0)],
        vec![row("floor", 100.0), row("by-value", 100.0), row("extended", 150.0)],
    ];
    let combined = combine(&runs);
    let extended = &combined[2];
    assert_eq!(extended.repeats.medians, [300.0, 400.0, 150.0]);
    assert_eq!(extended.repeats.to_floor, [3.0, 1.0, 1.5]);
    assert_eq!(extended.repeats.to_by_value, [1.5, 1.0, 1.5]);
    let summary = extended.summary.unwrap();
    assert_eq!((summary.min, summary.median, summary.p99), (149.0, 300.0, 310.0));
    let json = row_json(extended, &combined);
    // The median of the run-by-run ratios (1.5), not the ratio of the
    // median medians (300 / 100 = 3.0).
    assert_eq!(json["ratio_to_floor"], 1.5);
    assert_eq!(json["ratio_to_by_value"], 1.5);
    assert_eq!(json["runs"], 3);
    assert_eq!(json["median_spread_cycles"], 250.0);
    assert_eq!(json["ratio_to_floor_runs"], serde_json::json!([3.0, 1.0, 1.5]));
}

#[test]
fn a_variant_missing_from_a_run_is_not_run() {
    let mut missing = row("extended", 300.0);
    missing.summary = None;
    missing.why = Some("needs PKS".into());
    let runs =
        vec![vec![row("floor", 100.0), row("extended", 300.0)], vec![row("floor", 100.0), missing]];
    let combined = combine(&runs);
    assert!(combined[1].summary.is_none());
    assert!(combined[1].repeats.medians.is_empty());
    assert_eq!(combined[0].repeats.medians, [100.0, 100.0]);
}

#[test]
fn medians_and_nesting_merge() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    let nest = |median: f64| NestRow {
        depth: 2,
        summary: Summary { min: median, median, p99: median, iqr: 0.0 },
        stack_bytes: 384,
        medians: Vec::new(),
    };
    let merged = combine_nesting(&[vec![nest(10.0)], vec![nest(30.0)], vec![nest(20.0)]]);
    assert_eq!(merged[0].summary.median, 20.0);
    assert_eq!(merged[0].summary.min, 10.0);
    assert_eq!(merged[0].medians, [10.0, 30.0, 20.0]);
}

/// `[profile.<profile>.package.<name>]` sections of the workspace
/// manifest: package name -> its settings, in order.
fn package_overrides(manifest: &str, profile: &str) -> BTreeMap<String, Vec<String>> {
    let header = format!("[profile.{profile}.package.");
    let mut overrides = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line
                .strip_prefix(header.as_str())
                .and_then(|rest| rest.strip_suffix(']'))
                .map(String::from);
            if let Some(name) = &current {
                overrides.insert(name.clone(), Vec::new());
            }
        } else if let Some(name) = &current {
            if !line.is_empty() && !line.starts_with('#') {
                overrides.get_mut(name).expect("inserted").push(line.to_string());
            }
        }
    }
    overrides
}

/// `cargo run --release -- bench` must measure the kernel and handlers
/// that `cargo run -- bench` does: every measured package has the same
/// code-generation settings in both profiles (an override applies to
/// one profile only, which once made the release kernel a different
/// one: 208 vs 192 bytes of stack, 3.95x vs 1.79x the floor).
#[test]
fn dev_and_release_build_the_measured_code_alike() {
    let manifest = include_str!("../../Cargo.toml");
    let dev = package_overrides(manifest, "dev");
    let release = package_overrides(manifest, "release");
    // Everything the kernel image and the native handlers are built
    // from: the workspace crates they link, and every dependency.
    for package in [
        "extregs-kernel",
        "extregs-regs",
        "extregs-entry",
        "extregs-entry-asm",
        "extregs-cmdline",
        "extregs-bench",
        "\"*\"",
    ] {
        let settings = dev.get(package).unwrap_or_else(|| panic!("no dev override for {package}"));
        for key in [
            "opt-level",
            "debug-assertions",
            "overflow-checks",
            "codegen-units",
            "incremental",
            "debug",
        ] {
            assert!(
                settings.iter().any(|line| line.starts_with(key)),
                "{package}: dev override does not pin {key}"
            );
        }
        assert_eq!(Some(settings), release.get(package), "{package}: dev and release differ");
    }
}

#[test]
fn summaries_resolve_below_one_tick_when_batched() {
    // 32 round trips per sample: 26-tick steps no longer quantise.
    let mut samples =
        vec![32 * 104 + 13, 32 * 104 + 13, 32 * 104 + 13, 32 * 104 + 26, 32 * 104 + 26];
    let summary = extregs_bench::summarize(&mut samples, 32);
    assert!((summary.median - (104.0 + 13.0 / 32.0)).abs() < 1e-9, "{summary:?}");
    assert!(summary.min < summary.p99);
}

#[test]
fn the_peer_initramfs_is_a_newc_archive_with_one_executable() {
    let archive = super::peer::cpio_with_one_file("init", b"\x7fELF1234");
    assert!(archive.starts_with(b"070701"), "newc magic");
    assert_eq!(archive.len() % 4, 0);
    // The header's mode and size fields (offsets 14 and 54, 8 hex digits).
    assert_eq!(&archive[14..22], b"000081ed", "a regular file, 0755");
    assert_eq!(&archive[54..62], b"00000008", "its size");
    let text = String::from_utf8_lossy(&archive);
    assert!(text.contains("init\0"));
    assert!(text.contains("TRAILER!!!\0"), "the archive ends with its trailer");
}

#[test]
fn peer_lines_are_parsed_and_a_failed_run_refused() {
    let serial =
        "boot noise\nPEER {\"getpid_ticks\":1083,\"signal_ticks\":77751,\"ok\":true}\r\nmore\n";
    let figures = super::peer::parse_peer_line(serial).unwrap();
    assert_eq!((figures.getpid_ticks, figures.signal_ticks), (1083, 77751));
    assert!(super::peer::parse_peer_line("no line here\n").is_err());
    assert!(super::peer::parse_peer_line(
        "PEER {\"getpid_ticks\":1,\"signal_ticks\":2,\"ok\":false}\n"
    )
    .is_err());
}
