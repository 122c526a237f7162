//! Splitting a campaign across machines and joining the halves: `--shard
//! K/N` picks a deterministic slice of the seeds, and `fuzz merge` adds the
//! slices' JSON documents back up into one campaign.

use super::Totals;
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::ops::Range;

/// One of N deterministic slices of a seed range (`--shard K/N`, K from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// Parses `K/N` with 1 <= K <= N.
pub fn parse_shard(text: &str) -> Result<Shard> {
    let (index, count) =
        text.split_once('/').ok_or_else(|| Error::Usage(format!("shard '{text}' is not K/N")))?;
    let number = |part: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| Error::Usage(format!("'{part}' in shard '{text}' is not a number")))
    };
    let (index, count) = (number(index)?, number(count)?);
    if count == 0 {
        return Err(Error::Usage(format!("shard '{text}': N must be at least 1")));
    }
    if index == 0 || index > count {
        return Err(Error::Usage(format!("shard '{text}': K must be from 1 to {count}")));
    }
    Ok(Shard { index, count })
}

/// Parses `VAR/N` for `--shard-from-env`: the worker's index is the
/// 0-based value of the environment variable VAR, as a batch engine sets it
/// (Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX`; Slurm job arrays
/// submitted with `--array=0-(N-1)`: `SLURM_ARRAY_TASK_ID`).
pub fn parse_shard_from_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Shard> {
    let (variable, count) = text
        .split_once('/')
        .ok_or_else(|| Error::Usage(format!("shard-from-env '{text}' is not VAR/N")))?;
    let value = lookup(variable)
        .ok_or_else(|| Error::Usage(format!("shard-from-env '{text}': {variable} is not set")))?;
    let index = value.trim().parse::<u64>().map_err(|_| {
        Error::Usage(format!("shard-from-env '{text}': {variable}={value} is not a 0-based index"))
    })?;
    parse_shard(&format!("{}/{count}", index + 1))
}

/// The seeds of `shard` within `seeds`: the K-th of N contiguous slices
/// whose sizes differ by at most one. An empty slice is an error (more
/// shards than seeds).
pub fn shard_seeds(seeds: &Range<u64>, shard: Shard) -> Result<Range<u64>> {
    let length = u128::from(seeds.end - seeds.start);
    let bound = |k: u64| seeds.start + (length * u128::from(k) / u128::from(shard.count)) as u64;
    let slice = bound(shard.index - 1)..bound(shard.index);
    if slice.is_empty() {
        return Err(Error::Usage(format!(
            "shard {}/{} of seeds {}..{} is empty ({} seeds for {} shards)",
            shard.index, shard.count, seeds.start, seeds.end, length, shard.count
        )));
    }
    Ok(slice)
}

/// Marks a campaign document as shard `shard` of the range `of`.
pub fn mark_shard(document: &mut Value, shard: Shard, of: &Range<u64>) {
    document["shard"] = json!({
        "index": shard.index,
        "count": shard.count,
        "of": format!("{}..{}", of.start, of.end),
    });
}

/// The settings two documents must share to be merged.
const MERGE_SETTINGS: [&str; 8] = [
    "iterations",
    "max_depth",
    "deterministic",
    "cpu",
    "nmi_storm",
    "granular",
    "foreign_timer_hz",
    "smp",
];

/// Merges campaign documents (`--json` of shards, or of any campaigns with
/// the same settings) into one: runs sorted by seed, totals added up.
/// Refused: different settings, different shardings, a seed in two
/// documents. The merged `wall_seconds` is the longest document's (shards
/// run side by side on different machines), so `frames_per_s` is the
/// rate of the whole fleet. Interrupt points: the hit offsets are joined
/// (`entry_points_hit_offsets`); the counts, which need the kernel's entry
/// text decoded, are null (`fuzz plot` decodes it).
pub fn merge(documents: &[(String, Value)]) -> Result<Value> {
    let Some((first_name, first)) = documents.first() else {
        return Err(Error::Usage("nothing to merge".into()));
    };
    let mut runs: BTreeMap<u64, Value> = BTreeMap::new();
    let mut totals = Totals::default();
    let mut interrupted = false;
    for (name, document) in documents {
        if document["runs"].as_array().is_none() || document["totals"].is_null() {
            return Err(Error::Usage(format!("{name}: not an extregs fuzz campaign document")));
        }
        for key in MERGE_SETTINGS {
            if document[key] != first[key] {
                return Err(Error::Usage(format!(
                    "{name} and {first_name} differ in {key} ({} vs {}): not slices of one campaign",
                    document[key], first[key]
                )));
            }
        }
        let sharding = |d: &Value| (d["shard"]["count"].clone(), d["shard"]["of"].clone());
        if sharding(document) != sharding(first) {
            return Err(Error::Usage(format!(
                "{name} and {first_name} are shards of different campaigns ({} vs {})",
                document["shard"], first["shard"]
            )));
        }
        for run in document["runs"].as_array().into_iter().flatten() {
            let seed = run["seed"]
                .as_u64()
                .ok_or_else(|| Error::Usage(format!("{name}: a run without a seed")))?;
            if run["ok"].as_bool().unwrap_or(false) {
                if let Some(rate) = run["frames_per_s"].as_u64() {
                    totals.kernel_frames_per_s.push(rate);
                }
            }
            if runs.insert(seed, run.clone()).is_some() {
                return Err(Error::Usage(format!(
                    "seed {seed} is in {name} and in another document: overlapping slices"
                )));
            }
        }
        let t = &document["totals"];
        let number = |key: &str| t[key].as_u64().unwrap_or(0);
        totals.seeds_run += number("seeds_run");
        totals.seeds_failed += number("seeds_failed");
        totals.seeds_without_breakdowns += number("seeds_without_breakdowns");
        totals.iterations += number("iterations");
        totals.frames += number("frames");
        totals.kernel_microseconds +=
            (t["kernel_seconds"].as_f64().unwrap_or(0.0) * 1e6).round() as u64;
        totals.violations += number("violations");
        totals.latched_nmis += number("latched_nmis");
        totals.foreign_nmis += number("foreign_nmis");
        totals.foreign_user_nmis += number("foreign_user_nmis");
        totals.foreign_irqs += number("foreign_irqs");
        totals.cross_cpu_nmis += number("cross_cpu_nmis");
        totals.migrations += number("migrations");
        totals.max_depth_reached = totals.max_depth_reached.max(number("max_depth_reached"));
        totals.wall_seconds = totals.wall_seconds.max(t["wall_seconds"].as_f64().unwrap_or(0.0));
        totals.add_counts(t);
        let offsets = t["entry_points_hit_offsets"].as_array().into_iter().flatten();
        totals.coverage_hits.extend(offsets.filter_map(Value::as_u64));
        for (cpu, offsets) in t["entry_points_hit_offsets_by_cpu"].as_object().into_iter().flatten()
        {
            if let Ok(cpu) = cpu.parse::<u32>() {
                let offsets = offsets.as_array().into_iter().flatten().filter_map(Value::as_u64);
                totals.coverage_hits_by_cpu.entry(cpu).or_default().extend(offsets);
            }
        }
        interrupted |= document["interrupted"].as_bool().unwrap_or(false);
    }
    // The seeds as ranges: one `A..B` when the slices tile it.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seed in runs.keys() {
        match ranges.last_mut() {
            Some((_, end)) if *end == seed => *end += 1,
            _ => ranges.push((seed, seed + 1)),
        }
    }
    let seeds: Vec<String> = ranges.iter().map(|(start, end)| format!("{start}..{end}")).collect();
    let mut merged = Map::new();
    merged.insert("seeds".into(), json!(seeds.join(",")));
    for key in MERGE_SETTINGS {
        merged.insert(key.into(), first[key].clone());
    }
    merged.insert("interrupted".into(), json!(interrupted));
    merged.insert(
        "merged_from".into(),
        json!(documents.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>()),
    );
    if let Some(of) = first["shard"]["of"].as_str() {
        let complete = seeds.len() == 1 && seeds[0] == of;
        merged.insert("complete".into(), json!(complete));
    }
    merged.insert("totals".into(), totals.to_json());
    merged.insert("runs".into(), Value::Array(runs.into_values().collect()));
    Ok(Value::Object(merged))
}
