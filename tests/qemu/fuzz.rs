//! The fuzzer: single seeds, storms at every instruction boundary,
//! campaigns (short, deterministic, batched, sharded), replay, Ctrl-C.

use crate::common::*;
use extregs::campaign::{self, CampaignConfig};
use extregs::exit_codes::{EXIT_SUCCESS, EXIT_USAGE};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn fuzz_under_an_nmi_storm_at_every_instruction_boundary_has_no_violations() {
    // Foreign NMIs (QMP inject-nmi, back to back) and a foreign timer IRQ
    // with one instruction per translation block: they land anywhere, the
    // entry text included; the fuzzer must tell them from its own events
    // and validate them.
    let config = CampaignConfig {
        seeds: 0..2,
        iterations: 150,
        max_depth: 8,
        jobs: 2,
        deterministic: false,
        cpu: "max".into(),
        timeout: Duration::from_secs(400),
        inject: None,
        nmi_storm: true,
        granular: true,
        foreign_timer_hz: 1000,
        smp: 1,
        seeds_per_boot: 0,
    };
    let (reports, totals, interrupted) =
        campaign::run_campaign(&config, Arc::new(AtomicBool::new(false)), |_, _| {});
    assert!(!interrupted);
    for report in &reports {
        assert!(report.ok(), "seed {} failed: {}\n{:?}", report.seed, report.why, report.serial);
        let result = report.result.as_ref().expect("a RESULT");
        assert_eq!(result["violations"], 0);
        assert_eq!(result["frame_errors"], 0);
        assert!(result["foreign_nmis"].as_u64().unwrap() > 0, "no foreign NMI arrived: {result}");
        assert!(result["foreign_irqs"].as_u64().unwrap() > 0, "no foreign IRQ arrived: {result}");
    }
    assert_eq!(totals.seeds_failed, 0);
}

fn campaign_config(
    seeds: std::ops::Range<u64>,
    iterations: u64,
    deterministic: bool,
) -> CampaignConfig {
    CampaignConfig {
        seeds,
        iterations,
        max_depth: 8,
        jobs: 2,
        deterministic,
        cpu: "max".into(),
        timeout: BOOT_TIMEOUT,
        inject: None,
        nmi_storm: false,
        granular: false,
        foreign_timer_hz: 0,
        smp: 1,
        seeds_per_boot: 0,
    }
}

/// Runs `config`'s campaign to the end; every seed must pass.
fn run_clean_campaign(config: &CampaignConfig) -> (Vec<campaign::SeedReport>, campaign::Totals) {
    let (reports, totals, interrupted) =
        campaign::run_campaign(config, Arc::new(AtomicBool::new(false)), |_, _| {});
    assert!(!interrupted);
    for report in &reports {
        assert!(
            report.ok(),
            "{} CPUs, seed {}: {}\n{}",
            config.smp,
            report.seed,
            report.why,
            report.serial.clone().unwrap_or_default()
        );
    }
    (reports, totals)
}

#[test]
fn short_fuzz_campaign_finds_no_violations() {
    let config = campaign_config(0..4, 200, false);
    let (_, totals) = run_clean_campaign(&config);
    assert_eq!(totals.seeds_run, 4);
    assert_eq!(totals.violations, 0);
    assert_eq!(totals.iterations, 800);
    assert_eq!(totals.max_depth_reached, 8, "programs reach the full depth");
    // Every kind of event was raised, and NMIs were latched inside NMIs
    // (the kernel-mode kinds, then the outermost level in ring 3).
    for kind in &extregs::fuzz_plot::label_order() {
        assert!(
            totals.kinds.get(kind.as_str()).copied().unwrap_or(0) > 0,
            "no {kind} events: {:?}",
            totals.kinds
        );
    }
    assert!(totals.latched_nmis > 0);
}

#[test]
fn deterministic_fuzz_gives_the_same_digest_twice() {
    let config = campaign_config(11..12, 100, true);
    let digest = |seed| {
        let (mut reports, unrun) = campaign::run_batch(&config, seed..seed + 1, None);
        assert!(unrun.is_empty());
        let report = reports.remove(0);
        assert!(report.ok(), "{}", report.why);
        report.result.unwrap()["digest"].as_str().unwrap().to_string()
    };
    let first = digest(11);
    assert_eq!(first, digest(11), "same seed, same digest");
    assert_ne!(first, digest(12), "another seed, another trace");
    // With a second CPU online (idle, taking no part in the program) icount
    // still replays the boot exactly: the same digest twice, and the same
    // as on one CPU.
    let config = CampaignConfig { smp: 2, ..config };
    let on_two_cpus = |seed| {
        let (mut reports, unrun) = campaign::run_batch(&config, seed..seed + 1, None);
        assert!(unrun.is_empty());
        let report = reports.remove(0);
        assert!(report.ok(), "{}", report.why);
        let result = report.result.unwrap();
        assert_eq!(result["cpus"], 2);
        result["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(on_two_cpus(11), first, "two CPUs: the same digest as one");
    assert_eq!(on_two_cpus(11), first, "two CPUs, twice");
}

#[test]
fn fuzz_runs_a_lane_on_every_cpu_with_cross_cpu_nmis_and_migrations() {
    // A short SMP campaign: boots of 2 CPUs, then of 4 under a QMP NMI
    // storm, each running a seed on every CPU at once; the lanes send each
    // other NMIs, and `migrate` levels resume on another CPU.
    for (smp, nmi_storm) in [(2, false), (4, true)] {
        let config = CampaignConfig {
            smp,
            nmi_storm,
            jobs: 1,
            ..campaign_config(0..u64::from(2 * smp), 200, false)
        };
        let (reports, totals) = run_clean_campaign(&config);
        assert_eq!(totals.seeds_run, u64::from(2 * smp));
        assert_eq!(totals.violations, 0);
        assert!(totals.cross_cpu_nmis > 0, "{smp} CPUs: no NMI between CPUs");
        assert!(totals.migrations > 0, "{smp} CPUs: no level migrated");
        let cpus: std::collections::BTreeSet<u64> = reports.iter().map(|r| r.cpu()).collect();
        assert_eq!(cpus, (0..u64::from(smp)).collect(), "a lane on every CPU");
        // The heat map's CPU columns: every CPU raised every-day kinds.
        let int3 = &totals.kind_cpu["int3"];
        assert_eq!(int3.len(), smp as usize, "{int3:?}");
        if nmi_storm {
            assert!(totals.foreign_nmis > 0);
        }
    }
}

#[test]
fn several_seeds_in_one_boot_give_each_seed_its_own_digest() {
    // One boot per seed, then all five in one boot (`seeds=20..25`): every
    // seed starts from a fresh state, so the digests and counts agree.
    let digests_on = |smp: u32, seeds_per_boot| {
        let config = CampaignConfig {
            seeds_per_boot,
            smp,
            jobs: if smp > 1 { 1 } else { 2 },
            ..campaign_config(20..25, 60, true)
        };
        let (reports, totals, _) =
            campaign::run_campaign(&config, Arc::new(AtomicBool::new(false)), |_, _| {});
        assert_eq!(totals.seeds_run, 5);
        let mut cpus = std::collections::BTreeSet::new();
        let rows: Vec<(u64, String, u64)> = reports
            .iter()
            .map(|report| {
                assert!(report.ok(), "seed {}: {}", report.seed, report.why);
                cpus.insert(report.cpu());
                let result = report.result.as_ref().expect("a summary");
                (
                    report.seed,
                    result["digest"].as_str().expect("a digest").to_string(),
                    result["frames"].as_u64().expect("frames"),
                )
            })
            .collect();
        (rows, totals, cpus)
    };
    let digests = |seeds_per_boot| digests_on(1, seeds_per_boot);
    let (one_per_boot, _, _) = digests(1);
    let (batched, totals, _) = digests(5);
    assert_eq!(one_per_boot, batched);
    // Four lanes of a 4-CPU boot run the five seeds at once, under
    // icount's one virtual clock: each seed's digest is still its own,
    // the same on whichever CPU it ran as on CPU 0 of a 1-CPU boot.
    let (on_four_cpus, _, cpus) = digests_on(4, 5);
    assert_eq!(on_four_cpus, one_per_boot, "4 CPUs: the same digests as 1");
    assert_eq!(cpus.len(), 4, "every CPU ran a seed: {cpus:?}");
    // The campaign reports its wall rate against the kernels' own.
    assert!(totals.kernel_median_frames_per_second().unwrap() > 0.0);
    assert!(totals.wall_to_kernel_ratio().unwrap() > 0.0);
    // (Under icount the kernels' clock is the instruction count, so the
    // share is no fraction of the wall clock here; the arithmetic is a
    // host test's.)
    assert!(totals.kernel_time_share().unwrap() > 0.0);
}

#[test]
fn cli_fuzz_replays_a_seed_and_rejects_bad_arguments() {
    let replay_json =
        std::env::temp_dir().join(format!("extregs-{}-replay.json", std::process::id()));
    let replay = extregs_cli(&[
        "fuzz",
        "--seed",
        "3",
        "--iterations",
        "20",
        "--json",
        replay_json.to_str().unwrap(),
    ]);
    assert_eq!(
        replay.status.code(),
        Some(EXIT_SUCCESS),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(stdout.contains("RESULT {\"mode\":\"fuzz\",\"ok\":true"), "{stdout}");
    assert!(stdout.contains("\"seed\":3,\"iterations\":20"), "{stdout}");
    // --json is honoured for a replay too: a one-seed campaign document.
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&replay_json).expect("replay JSON written"))
            .unwrap();
    let _ = std::fs::remove_file(&replay_json);
    assert_eq!(document["runs"][0]["seed"], 3, "{document}");
    assert!(document["totals"]["frames"].as_u64().unwrap() > 0, "{document}");
    for bad in [
        &["fuzz", "--seeds", "5..5"][..],
        &["fuzz", "--seed", "3", "--jobs", "2"],
        &["fuzz", "--seeds", "0..2", "--max-depth", "13"],
        &["fuzz"],
        &["fuzz", "--seeds", "0..2", "--seed", "1"],
        &["fuzz", "--seeds", "0..6", "--shard", "0/3"],
        &["fuzz", "--seeds", "0..6", "--shard", "4/3"],
        &["fuzz", "--seeds", "0..6", "--shard", "1/0"],
        &["fuzz", "--seeds", "0..2", "--shard", "1/3"],
        &["fuzz", "--seed", "1", "--shard", "1/2"],
        &["fuzz", "--seeds", "0..2", "--seeds-per-boot", "0"],
        &["fuzz", "--seeds", "0..2", "--seeds-per-boot", "100001"],
        &["fuzz", "--seed", "1", "--seeds-per-boot", "2"],
    ] {
        assert_eq!(extregs_cli(bad).status.code(), Some(EXIT_USAGE), "{bad:?}");
    }
    let json = std::env::temp_dir().join(format!("extregs-{}-campaign.json", std::process::id()));
    let svg = std::env::temp_dir().join(format!("extregs-{}-campaign.svg", std::process::id()));
    let missed = std::env::temp_dir().join(format!("extregs-{}-missed.txt", std::process::id()));
    // Two batches of two seeds: a batch's FUZZ lines leave the depth and
    // context split out, and its RESULT gives it.
    let campaign = extregs_cli(&[
        "fuzz",
        "--seeds",
        "0..4",
        "--seeds-per-boot",
        "2",
        "--iterations",
        "10",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--coverage",
        missed.to_str().unwrap(),
    ]);
    assert_eq!(campaign.status.code(), Some(EXIT_SUCCESS));
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(document["runs"].as_array().unwrap().len(), 4);
    assert_eq!(document["totals"]["violations"], 0);
    // --coverage added a selftest boot's walks to the fuzzer's hits, and
    // split the entry text by reachability.
    let totals = &document["totals"];
    let number = |key: &str| totals[key].as_u64().unwrap_or_else(|| panic!("{key}: {totals}"));
    assert!(number("entry_points_reachable_hit") > number("entry_points_hit"), "{totals}");
    assert_eq!(number("entry_points_user_paths_hit"), number("entry_points_user_paths"));
    // The goal, kept: at least 95 % of the reachable instructions.
    assert!(
        number("entry_points_reachable_hit") * 100 >= 95 * number("entry_points_reachable"),
        "{totals}"
    );
    assert_eq!(number("entry_points_not_raised_hit"), 0);
    assert_eq!(number("entry_points_nmi_blocked_hit"), 0);
    let listing = std::fs::read_to_string(&missed).expect("--coverage wrote its listing");
    let (reachable, rest) = listing
        .split_once(extregs::coverage::NOT_RAISED_HEADING)
        .expect("the listing's part for the stubs nothing raises");
    let (not_raised, nmi_blocked) = rest
        .split_once(extregs::coverage::NMI_BLOCKED_HEADING)
        .expect("the listing's part for the NMI stub's blocked part");
    assert_eq!(
        reachable.lines().count() as u64,
        number("entry_points_reachable") - number("entry_points_reachable_hit")
    );
    assert_eq!(not_raised.lines().count() as u64, number("entry_points_not_raised"));
    assert_eq!(nmi_blocked.lines().count() as u64, number("entry_points_nmi_blocked"));
    let _ = std::fs::remove_file(&missed);
    // The coverage pictures, drawn live and again from the document; the
    // kernels' per-depth and per-context counts add up to the frames.
    let frames = document["totals"]["frames"].as_u64().unwrap();
    let by_depth: u64 = document["totals"]["kind_depth"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|row| row.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()))
        .sum();
    let by_context: u64 = document["totals"]["contexts"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|row| row.as_object().unwrap().values().map(|c| c.as_u64().unwrap()))
        .sum();
    assert_eq!((by_depth, by_context), (frames, frames));
    assert_eq!(document["totals"]["seeds_without_breakdowns"], 0);
    let live = std::fs::read_to_string(&svg).expect("--plot wrote an SVG");
    assert!(live.contains("nesting depth") && live.contains("entry text"), "three heat maps");
    let _ = std::fs::remove_file(&svg);
    let replot =
        extregs_cli(&["fuzz", "plot", json.to_str().unwrap(), "--plot", svg.to_str().unwrap()]);
    assert_eq!(replot.status.code(), Some(EXIT_SUCCESS));
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), live, "the same picture from the JSON");
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    // Not a campaign document, or no document at all.
    let not_json = std::env::temp_dir().join(format!("extregs-{}-not.json", std::process::id()));
    std::fs::write(&not_json, "[1, 2]").unwrap();
    let bad = extregs_cli(&["fuzz", "plot", not_json.to_str().unwrap(), "--plot", "/tmp/x.svg"]);
    assert_eq!(bad.status.code(), Some(EXIT_USAGE));
    let _ = std::fs::remove_file(&not_json);
    let missing = extregs_cli(&["fuzz", "plot", "/nonexistent.json", "--plot", "/tmp/x.svg"]);
    assert_eq!(missing.status.code(), Some(EXIT_USAGE));
}

#[test]
fn sharded_campaign_merged_equals_the_unsharded_one() {
    let dir = std::env::temp_dir();
    let path = |name: &str| dir.join(format!("extregs-{}-{name}.json", std::process::id()));
    let (full, first, second, merged) =
        (path("full"), path("shard1"), path("shard2"), path("merged"));
    let campaign = |extra: &[&str], json: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_extregs"));
        command.args(["fuzz", "--seeds", "0..5", "--iterations", "30", "--deterministic"]);
        command.args(extra).arg("--json").arg(json);
        let output = command.output().expect("extregs runs");
        assert_eq!(output.status.code(), Some(EXIT_SUCCESS), "{extra:?}: {output:?}");
    };
    campaign(&[], &full);
    campaign(&["--shard", "1/2"], &first);
    // The second slice as the Slurm array task with index 1 runs it: the
    // job script in docs/, with the 0-based index in SLURM_ARRAY_TASK_ID.
    let out_dir = dir.join(format!("extregs-{}-slurm", std::process::id()));
    let script = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/extregs-fuzz.sbatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SLURM_SUBMIT_DIR")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SEEDS", "0..5")
        .env("SHARDS", "2")
        .env("ITERATIONS", "30")
        .env("EXTRA", "--deterministic")
        .env("OUT", &out_dir)
        .output()
        .expect("bash runs the Slurm job script");
    assert_eq!(script.status.code(), Some(EXIT_SUCCESS), "{script:?}");
    std::fs::rename(out_dir.join("shard-1.json"), &second).expect("the script wrote shard-1.json");
    let _ = std::fs::remove_dir(&out_dir);
    let merge = extregs_cli(&[
        "fuzz",
        "merge",
        second.to_str().unwrap(),
        first.to_str().unwrap(),
        "--json",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(merge.status.code(), Some(EXIT_SUCCESS), "{merge:?}");
    let overlap = extregs_cli(&[
        "fuzz",
        "merge",
        first.to_str().unwrap(),
        first.to_str().unwrap(),
        "--json",
        merged.with_extension("overlap").to_str().unwrap(),
    ]);
    assert_eq!(overlap.status.code(), Some(EXIT_USAGE), "overlapping slices must be refused");
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (full_doc, first_doc, merged_doc) = (read(&full), read(&first), read(&merged));
    for path in [&full, &first, &second, &merged] {
        let _ = std::fs::remove_file(path);
    }
    assert_eq!(first_doc["shard"]["of"], "0..5");
    assert_eq!(first_doc["seeds"], "0..2", "slice 1 of 2 of five seeds");
    assert_eq!(merged_doc["seeds"], "0..5");
    assert_eq!(merged_doc["complete"], true);
    let digests = |doc: &serde_json::Value| -> Vec<(u64, String)> {
        doc["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| (run["seed"].as_u64().unwrap(), run["digest"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(digests(&merged_doc), digests(&full_doc), "per-seed digests");
    for key in ["seeds_run", "iterations", "frames", "violations", "latched_nmis", "kinds"] {
        assert_eq!(merged_doc["totals"][key], full_doc["totals"][key], "totals.{key}");
    }
}

/// Ctrl-C in the middle of a campaign: the runner stops its QEMUs, prints
/// the totals of the seeds that finished, and exits 130. The signal is
/// sent once the first seed has finished (its progress line on stderr),
/// never after a fixed sleep.
#[test]
fn cli_fuzz_campaign_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_extregs"))
        .args(["fuzz", "--seeds", "0..1000", "--iterations", "210", "--jobs", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a campaign");
    let stderr = child.stderr.take().expect("piped stderr");
    let (first_seed_done, seed_done) = std::sync::mpsc::channel();
    let stderr_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("extregs: fuzz: seed ") && line.contains(" done: ") {
                let _ = first_seed_done.send(());
            }
            lines.push(line);
        }
        lines.join("\n")
    });
    // Ctrl-C (SIGINT) as a terminal would, once a seed has finished (or
    // the campaign ended without one: then the asserts below say why).
    let finished = seed_done.recv_timeout(BOOT_TIMEOUT).is_ok();
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    assert!(interrupted.unwrap().success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = stderr_reader.join().expect("the stderr reader");
    assert!(finished, "no seed finished within {BOOT_TIMEOUT:?}: {stderr}");
    assert_eq!(output.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(stderr.contains("extregs: fuzz: interrupted"), "{stderr}");
    // The totals of what did finish, and no QEMU left behind.
    let totals =
        stdout.lines().find(|l| l.contains(" seeds before Ctrl-C (")).expect("totals line");
    assert!(totals.contains("0 failed"), "{totals}");
    assert!(!totals.starts_with("extregs: fuzz: 0 seeds"), "{totals}");
    // The runner kills its QEMUs before it exits; a QEMU that outlives it
    // would still be listed (no other test uses 210 iterations).
    let leftover = Command::new("pgrep").args(["-f", "iterations=210 max-depth"]).output().unwrap();
    assert!(leftover.stdout.is_empty(), "QEMU still running after Ctrl-C");
}
