//! Host tests of campaigns: batch output split into seeds, totals, merges.

use super::*;

#[test]
fn seed_ranges_parse_or_explain() {
    assert_eq!(parse_seed_range("0..10").unwrap(), 0..10);
    assert_eq!(parse_seed_range("5..=5").unwrap(), 5..6);
    assert!(parse_seed_range("3..3").unwrap_err().to_string().contains("empty"));
    assert!(parse_seed_range("a..3").unwrap_err().to_string().contains("not a number"));
    assert!(parse_seed_range("7").unwrap_err().to_string().contains("not A..B"));
}

#[test]
fn totals_add_up_results() {
    let report = |seed, frames, ok: bool| SeedReport {
        seed,
        exit: if ok { 0 } else { 1 },
        why: String::new(),
        result: Some(json!({"frames": frames, "iterations": 10, "max_depth_reached": seed,
            "violations": u64::from(!ok), "kinds": {"int3": 2, "ud2": 1},
            "foreign_nmis": 4, "cpu": seed % 2 + seed / 5})),
        serial: None,
        coverage_hits: BTreeSet::from([seed, 7]),
        coverage_hits_by_cpu: BTreeMap::from([(seed as u32 % 2, BTreeSet::from([seed]))]),
        coverage_unreachable: None,
        boot_breakdowns: None,
        breakdowns_lost: false,
    };
    let mut totals = Totals::default();
    totals.add(&report(3, 100, true));
    totals.add(&report(5, 50, false));
    assert_eq!((totals.seeds_run, totals.seeds_failed, totals.frames), (2, 1, 150));
    assert_eq!((totals.violations, totals.max_depth_reached, totals.iterations), (1, 5, 20));
    // Seed 3 ran on CPU 1, seed 5 on CPU 2: frames by kind and CPU, and
    // the entry points each CPU's NMIs hit.
    assert_eq!(totals.kind_cpu["int3"], BTreeMap::from([("cpu1".into(), 2), ("cpu2".into(), 2)]));
    assert_eq!(totals.coverage_hits_by_cpu[&1], BTreeSet::from([3, 5]));
    // Foreign NMIs add up; interrupt points are a union across seeds.
    assert_eq!(totals.foreign_nmis, 8);
    assert_eq!(totals.coverage_hits, BTreeSet::from([3, 5, 7]));
    assert_eq!(totals.kinds["int3"], 4);
}

fn fuzz_line(seed: u64) -> String {
    format!(
        "FUZZ {{\"seed\":{seed},\"frames\":{},\"frames_per_s\":100,\"digest\":\"{seed:016x}\",\"kinds\":{{\"int3\":{}}}}}",
        10 + seed,
        10 + seed
    )
}

#[test]
fn a_batch_splits_into_its_seeds() {
    // All passed: one report per FUZZ line, in seed order.
    let serial = [fuzz_line(5), "noise".into(), fuzz_line(6), fuzz_line(7)].join("\n");
    let ok = json!({"ok": true});
    let (reports, unrun) = split_batch(5..8, 0, "ok".into(), Some(ok.clone()), serial);
    assert!(unrun.is_empty());
    assert_eq!(reports.iter().map(|r| r.seed).collect::<Vec<_>>(), [5, 6, 7]);
    assert!(reports.iter().all(|r| r.ok() && r.serial.is_none()));
    assert_eq!(reports[1].frames(), 16);
    // A violation in seed 6: 5 passed, 6 failed with the boot's RESULT
    // and output, 7..9 go back in the queue.
    let violation = json!({"ok": false, "seed": 6, "invariant": "gprs"});
    let serial = format!("{}\nextregs: fuzz: VIOLATION gprs\nRESULT {violation}", fuzz_line(5));
    let (reports, unrun) =
        split_batch(5..9, 1, "kernel reported failure".into(), Some(violation), serial);
    assert_eq!(unrun, vec![7..9]);
    assert_eq!(reports.len(), 2);
    assert!(reports[0].ok());
    assert_eq!((reports[1].seed, reports[1].exit), (6, 1));
    assert_eq!(reports[1].invariant(), Some("gprs"));
    assert!(reports[1].serial.as_deref().unwrap().contains("VIOLATION"));
    // Every seed printed its line, then the boot failed (an idle task's
    // frame error): the last seed is charged with it but keeps its line's
    // counts, and the boot's RESULT, whose sums over the boot the totals
    // must not add again, gives only the split the lines leave out.
    let boot_result = json!({"ok": false, "seeds": "5..8", "frames": 999, "microseconds": 999,
        "iterations": 999, "kinds": {"int3": 999}, "kind_depth": {"int3": [40, 8]},
        "contexts": {"int3": {"task": 48}}});
    let serial = [fuzz_line(5), fuzz_line(6), fuzz_line(7)].join("\n");
    let (reports, unrun) = split_batch(5..8, 1, "failed".into(), Some(boot_result), serial);
    assert!(unrun.is_empty());
    assert_eq!((reports[2].seed, reports[2].ok(), reports[2].frames()), (7, false, 17));
    let mut totals = Totals::default();
    reports.iter().for_each(|report| totals.add(report));
    assert_eq!((totals.seeds_failed, totals.frames, totals.kernel_microseconds), (1, 48, 0));
    assert_eq!((totals.iterations, totals.kinds["int3"]), (0, 48));
    assert_eq!(totals.kind_depth["int3"], [40, 8]);
    assert_eq!(totals.seeds_without_breakdowns, 0);
    // A hang in the first seed: no line at all.
    let (reports, unrun) = split_batch(5..8, 124, "timeout".into(), None, String::new());
    assert_eq!((reports.len(), reports[0].seed, reports[0].exit), (1, 5, 124));
    assert_eq!(unrun, vec![6..8]);
    // Every line printed, but the boot failed after them (frame_errors
    // in RESULT): the last seed carries the failure, nothing reruns.
    let serial = [fuzz_line(5), fuzz_line(6)].join("\n");
    let (reports, unrun) = split_batch(5..7, 1, "frame errors".into(), None, serial);
    assert!(unrun.is_empty());
    assert!(reports[0].ok() && !reports[1].ok());
    // A success verdict with a seed missing is still a failure.
    let (reports, _) = split_batch(5..7, 0, "ok".into(), Some(ok), fuzz_line(5));
    assert_eq!((reports[1].seed, reports[1].exit), (6, 1));
    assert!(reports[1].why.contains("no FUZZ line"));
}

#[test]
fn the_depth_and_context_split_comes_from_the_boot_and_is_never_lost_silently() {
    // A batch's lines leave the split out; its RESULT sums it over the
    // boot, and it is added once.
    let result = json!({"ok": true, "seeds": "5..7", "frames": 31, "kinds": {"int3": 31},
        "kind_depth": {"int3": [30, 1]}, "contexts": {"int3": {"task": 30, "int3": 1}}});
    let serial = [fuzz_line(5), fuzz_line(6)].join("\n");
    let (reports, _) = split_batch(5..7, 0, "ok".into(), Some(result), serial);
    let mut totals = Totals::default();
    reports.iter().for_each(|report| totals.add(report));
    assert_eq!((totals.frames, totals.kinds["int3"]), (31, 31));
    assert_eq!(totals.kind_depth["int3"], [30, 1]);
    assert_eq!(totals.contexts["int3"], BTreeMap::from([("task".into(), 30), ("int3".into(), 1)]));
    assert_eq!(totals.seeds_without_breakdowns, 0);
    // A violation ends the boot before any RESULT of its seeds: the seed
    // that passed and the violating one (its RESULT has frames, no split)
    // are counted as left out.
    let violation = json!({"ok": false, "seed": 6, "invariant": "gprs", "frames": 3});
    let (reports, _) = split_batch(5..8, 1, "failed".into(), Some(violation), fuzz_line(5));
    let mut totals = Totals::default();
    reports.iter().for_each(|report| totals.add(report));
    assert_eq!((totals.frames, totals.seeds_without_breakdowns), (15 + 3, 2));
    assert!(totals.kind_depth.is_empty());
    assert_eq!(totals.to_json()["seeds_without_breakdowns"], 2);
    // A one-seed boot's RESULT is the seed's own, split included.
    let whole = json!({"ok": true, "seed": 4, "frames": 2, "kind_depth": {"ud2": [2]}});
    let report = SeedReport::of_one_seed_boot(4, 0, "ok".into(), Some(whole), String::new());
    let mut totals = Totals::default();
    totals.add(&report);
    assert_eq!((totals.kind_depth["ud2"].clone(), totals.seeds_without_breakdowns), (vec![2], 0));
    let violation = json!({"ok": false, "seed": 4, "frames": 2});
    let report =
        SeedReport::of_one_seed_boot(4, 1, "failed".into(), Some(violation), String::new());
    assert!(report.breakdowns_lost);
    // A seed's line unreadable (another CPU's output inside it) though the
    // boot summed every seed: that split holds frames no line counted, so
    // it is not used, and the seeds that printed go without it. Its depth,
    // a maximum, still counts.
    let result = json!({"ok": true, "seeds": "5..7", "kind_depth": {"int3": [31]}, "contexts": {},
        "max_depth_reached": 9});
    let (reports, _) = split_batch(5..7, 0, "ok".into(), Some(result), fuzz_line(5));
    let mut totals = Totals::default();
    reports.iter().for_each(|report| totals.add(report));
    assert_eq!((totals.frames, totals.seeds_without_breakdowns), (15, 1));
    assert!(totals.kind_depth.is_empty());
    assert_eq!(totals.max_depth_reached, 9);
    // A batch RESULT without the split lends none.
    let result = json!({"ok": true, "seeds": "5..7"});
    let serial = [fuzz_line(5), fuzz_line(6)].join("\n");
    let (reports, _) = split_batch(5..7, 0, "ok".into(), Some(result), serial);
    assert!(reports
        .iter()
        .all(|report| report.boot_breakdowns.is_none() && report.breakdowns_lost));
    // A boot that printed every line and its RESULT, then was killed for
    // Ctrl-C: the seed it is charged to, which carries the split, is no
    // result, and the others are counted as without the split.
    let result = json!({"ok": true, "seeds": "5..7", "kind_depth": {"int3": [31]}, "contexts": {}});
    let serial = [fuzz_line(5), fuzz_line(6)].join("\n");
    let (reports, _) = split_batch(5..7, 130, "cancelled".into(), Some(result), serial);
    assert!(reports[1].boot_breakdowns.is_some());
    let finished = finished_before_cancel(reports);
    assert_eq!(
        finished.iter().map(|r| (r.seed, r.breakdowns_lost)).collect::<Vec<_>>(),
        [(5, true)]
    );
    // A boot that failed on its own before the Ctrl-C keeps its failure.
    let violation = json!({"ok": false, "seed": 6, "invariant": "gprs", "frames": 3});
    let (reports, _) = split_batch(5..8, 1, "failed".into(), Some(violation), fuzz_line(5));
    let finished = finished_before_cancel(reports);
    assert_eq!(
        finished.iter().map(|r| (r.seed, r.ok())).collect::<Vec<_>>(),
        [(5, true), (6, false)]
    );
    // A line with no frames has no split to lose.
    let idle = "FUZZ {\"seed\":5,\"frames\":0}";
    let (reports, _) = split_batch(5..7, 124, "timeout".into(), None, idle.into());
    assert_eq!((reports[0].breakdowns_lost, reports[1].breakdowns_lost), (false, false));
}

#[test]
fn a_batch_on_several_cpus_splits_out_of_order() {
    // Four lanes print their seeds' lines as they finish; the RESULT of
    // the violation names its seed (7), which is not the first without a
    // line (6, still running on another lane): 7 failed, 6 and 10 rerun.
    let serial = [fuzz_line(9), fuzz_line(5), fuzz_line(8)].join("\n");
    let violation = json!({"ok": false, "seed": 7, "invariant": "migrated"});
    let (reports, unrun) =
        split_batch(5..11, 1, "kernel reported failure".into(), Some(violation), serial);
    assert_eq!(
        reports.iter().map(|r| (r.seed, r.ok())).collect::<Vec<_>>(),
        [(5, true), (7, false), (8, true), (9, true)]
    );
    assert_eq!(reports[1].invariant(), Some("migrated"));
    assert_eq!(unrun, vec![6..7, 10..11]);
    // All lines, out of order, and a success: every seed passed.
    let serial = [fuzz_line(6), fuzz_line(5)].join("\n");
    let (reports, unrun) = split_batch(5..7, 0, "ok".into(), Some(json!({"ok": true})), serial);
    assert!(unrun.is_empty());
    assert_eq!(reports.iter().map(|r| r.seed).collect::<Vec<_>>(), [5, 6]);
}

#[test]
fn automatic_batches_are_even_and_bounded() {
    assert_eq!(auto_seeds_per_boot(&(0..1000), 2), 125); // 8 boots of 125
    assert_eq!(auto_seeds_per_boot(&(0..200), 2), 100);
    assert_eq!(auto_seeds_per_boot(&(0..5), 2), 3);
    assert_eq!(auto_seeds_per_boot(&(7..8), 4), 1);
    // On N CPUs a boot runs N seeds at once: whole rounds of them.
    assert_eq!(whole_lanes(3, 2, 100), 4);
    assert_eq!(whole_lanes(125, 4, 1000), 128);
    assert_eq!(whole_lanes(3, 4, 3), 3, "never past the campaign");
    assert_eq!(whole_lanes(6, 1, 100), 6);
    for (length, jobs) in [(1u64, 1usize), (64, 1), (65, 1), (129, 2), (10_000, 3)] {
        let size = auto_seeds_per_boot(&(0..length), jobs);
        assert!((1..=MAX_AUTO_SEEDS_PER_BOOT).contains(&size), "{length} {jobs}: {size}");
    }
}

#[test]
fn median_and_ratio_of_the_kernel_rates() {
    let mut totals = Totals { jobs: 2, wall_seconds: 1.0, frames: 300, ..Totals::default() };
    assert_eq!(totals.wall_to_kernel_ratio(), None);
    totals.kernel_frames_per_s = vec![400, 100, 200];
    assert_eq!(totals.kernel_median_frames_per_second(), Some(200.0));
    assert_eq!(totals.wall_to_kernel_ratio(), Some(0.75));
    // One job of two CPUs: two lanes, the same ideal.
    let one_job_of_two = Totals { jobs: 1, cpus_per_boot: 2, ..totals.clone() };
    assert_eq!(one_job_of_two.wall_to_kernel_ratio(), Some(0.75));
    totals.kernel_frames_per_s.push(300);
    assert_eq!(totals.kernel_median_frames_per_second(), Some(250.0));
}

#[test]
fn kernel_time_share_is_fuzzing_time_over_lane_time() {
    let mut totals = Totals { jobs: 2, wall_seconds: 10.0, ..Totals::default() };
    assert_eq!(totals.kernel_time_share(), None);
    totals.kernel_microseconds = 18_000_000;
    assert_eq!(totals.kernel_time_share(), Some(0.9));
    // One job of two CPUs: two lanes, the same share.
    let one_job_of_two = Totals { jobs: 1, cpus_per_boot: 2, ..totals.clone() };
    assert_eq!(one_job_of_two.kernel_time_share(), Some(0.9));
    // A merge does not know its jobs: no share.
    assert_eq!(Totals { jobs: 0, ..totals }.kernel_time_share(), None);
}

#[test]
fn shards_parse_or_explain() {
    assert_eq!(parse_shard("1/3").unwrap(), Shard { index: 1, count: 3 });
    assert_eq!(parse_shard("3/3").unwrap(), Shard { index: 3, count: 3 });
    for bad in ["0/3", "4/3", "1/0", "x/2", "2", "1/-1"] {
        assert!(parse_shard(bad).is_err(), "{bad}");
    }
    let env = |value: &'static str| move |name: &str| (name == "IDX").then(|| value.to_string());
    assert_eq!(parse_shard_from_env("IDX/4", env("0")).unwrap(), Shard { index: 1, count: 4 });
    assert_eq!(parse_shard_from_env("IDX/4", env("3")).unwrap(), Shard { index: 4, count: 4 });
    assert!(parse_shard_from_env("IDX/4", env("4")).is_err());
    assert!(parse_shard_from_env("IDX/4", env("one")).is_err());
    assert!(parse_shard_from_env("OTHER/4", env("1")).unwrap_err().to_string().contains("not set"));
}

#[test]
fn shards_tile_the_range_without_overlap() {
    for (start, end) in [(0u64, 10u64), (5, 6), (100, 1107), (7, 10)] {
        for count in 1..=(end - start).min(9) {
            let mut next = start;
            for index in 1..=count {
                let slice = shard_seeds(&(start..end), Shard { index, count }).unwrap();
                assert_eq!(slice.start, next, "{start}..{end} {index}/{count}");
                assert!(!slice.is_empty());
                next = slice.end;
            }
            assert_eq!(next, end);
        }
    }
    assert!(shard_seeds(&(0..2), Shard { index: 1, count: 3 })
        .unwrap_err()
        .to_string()
        .contains("empty"));
}

fn document(seeds: Range<u64>, iterations: u64, shard: Option<Shard>) -> Value {
    let runs: Vec<Value> = seeds
        .clone()
        .map(|seed| json!({"seed": seed, "frames": 10 * seed, "digest": format!("{seed:016x}")}))
        .collect();
    let mut document = json!({
        "seeds": format!("{}..{}", seeds.start, seeds.end),
        "iterations": iterations, "max_depth": 8, "deterministic": true, "cpu": "max",
        "nmi_storm": false, "granular": false, "foreign_timer_hz": 0, "smp": 1, "interrupted": false,
        "totals": {"seeds_run": seeds.end - seeds.start, "seeds_failed": 0,
            "iterations": iterations * (seeds.end - seeds.start),
            "frames": seeds.clone().map(|s| 10 * s).sum::<u64>(), "violations": 0,
            "latched_nmis": 1, "max_depth_reached": 8, "kinds": {"int3": 2},
            "kind_depth": {"int3": [1, 1]}, "contexts": {"int3": {"task": 1, "ud2": 1}},
            "entry_points_hit_offsets": [seeds.start, 100],
            "wall_seconds": 3.0},
        "runs": runs,
    });
    if let Some(shard) = shard {
        mark_shard(&mut document, shard, &(0..6));
    }
    document
}

#[test]
fn merged_slices_add_up_and_bad_merges_are_refused() {
    let a = ("a.json".to_string(), document(0..3, 50, Some(Shard { index: 1, count: 2 })));
    let b = ("b.json".to_string(), document(3..6, 50, Some(Shard { index: 2, count: 2 })));
    let merged = merge(&[b.clone(), a.clone()]).unwrap();
    assert_eq!(merged["seeds"], "0..6");
    assert_eq!(merged["complete"], true);
    assert_eq!(merged["totals"]["frames"], 150);
    assert_eq!(merged["totals"]["seeds_run"], 6);
    assert_eq!(merged["totals"]["kinds"]["int3"], 4);
    assert_eq!(merged["totals"]["kind_depth"]["int3"], json!([2, 2]));
    assert_eq!(merged["totals"]["contexts"]["int3"], json!({"task": 2, "ud2": 2}));
    assert_eq!(merged["totals"]["entry_points_hit_offsets"], json!([0, 3, 100]));
    let seeds: Vec<u64> =
        merged["runs"].as_array().unwrap().iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [0, 1, 2, 3, 4, 5]);
    // Overlap, other settings, other sharding.
    assert!(merge(&[a.clone(), a.clone()]).unwrap_err().to_string().contains("overlapping"));
    let other = ("c.json".to_string(), document(3..6, 60, Some(Shard { index: 2, count: 2 })));
    assert!(merge(&[a.clone(), other]).unwrap_err().to_string().contains("iterations"));
    let mut resharded = b.1.clone();
    resharded["shard"]["count"] = json!(3);
    assert!(merge(&[a.clone(), ("d.json".into(), resharded)])
        .unwrap_err()
        .to_string()
        .contains("shards of different"));
    // A missing slice: merged, but not complete.
    assert_eq!(merge(&[a]).unwrap()["complete"], false);
}

#[test]
fn replay_names_every_setting() {
    let config = CampaignConfig {
        seeds: 0..1,
        iterations: 1000,
        max_depth: 8,
        jobs: 2,
        deterministic: true,
        cpu: "max".into(),
        timeout: Duration::from_secs(1),
        inject: None,
        nmi_storm: false,
        granular: false,
        foreign_timer_hz: 0,
        seeds_per_boot: 0,
        smp: 1,
    };
    assert_eq!(
        replay_command(&config, 42),
        "extregs fuzz --seed 42 --iterations 1000 --max-depth 8 --deterministic"
    );
    let on_two_cpus = CampaignConfig { smp: 2, ..config };
    assert_eq!(
        replay_command(&on_two_cpus, 42),
        "extregs fuzz --seed 42 --iterations 1000 --max-depth 8 --deterministic --smp 2"
    );
}
