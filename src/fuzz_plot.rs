//! Coverage pictures of a fuzz campaign (`extregs fuzz … --plot FILE`, or
//! `extregs fuzz plot DOCUMENT.json --plot FILE` from a `--json` document):
//! three heat maps in one SVG, drawn from the campaign document's totals.
//!
//! 1. Event kind × nesting depth: where in a program each kind was raised.
//! 2. Event kind × the context it interrupted: the fuzzer's task, user mode,
//!    or the handler of the kind below it (the pairs the design must handle).
//! 3. The entry text, one square per instruction in address order: the
//!    instructions a foreign event (an NMI storm, the foreign timer)
//!    interrupted, from the kernel ELF's decoded entry text.
//!
//! Cells are shaded on a log scale (white: none) and carry their count.

use crate::coverage::EntryText;
use crate::error::{Error, Result};
use extregs_cmdline::FuzzKind;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The event labels in the kernel's order: the kernel-mode kinds, then
/// the ring-3 ones (`user_<kind>`), from the kinds' one definition
/// (`extregs_cmdline::FuzzKind`). Anything else a document names follows,
/// sorted.
pub fn label_order() -> Vec<String> {
    let kernel = FuzzKind::KERNEL.iter().map(|kind| kind.name().to_string());
    let user = FuzzKind::USER.iter().map(|kind| format!("user_{}", kind.name()));
    kernel.chain(user).collect()
}

/// One heat map: `cells[row][column]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    pub cells: Vec<Vec<u64>>,
}

/// `names` in [`label_order`], then the rest sorted.
fn ordered<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let names: BTreeSet<&String> = names.collect();
    let order = label_order();
    let mut out: Vec<String> =
        order.iter().filter(|label| names.contains(label)).cloned().collect();
    out.extend(names.into_iter().filter(|name| !order.contains(name)).cloned());
    out
}

/// Event kind × depth, from `totals.kind_depth`.
pub fn kind_by_depth(totals: &Value) -> Heatmap {
    let map = totals["kind_depth"].as_object().cloned().unwrap_or_default();
    let rows = ordered(map.keys());
    let depth_of = |row: &String| map[row].as_array().map_or(0, Vec::len);
    // Depths up to the deepest one with any frame.
    let depths = rows
        .iter()
        .flat_map(|row| map[row].as_array().into_iter().flatten().enumerate())
        .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
        .map(|(depth, _)| depth + 1)
        .max()
        .unwrap_or(0)
        .min(rows.iter().map(depth_of).max().unwrap_or(0));
    let cells = rows
        .iter()
        .map(|row| (0..depths).map(|d| map[row][d].as_u64().unwrap_or(0)).collect())
        .collect();
    Heatmap {
        title: "frames by event kind and nesting depth".into(),
        rows,
        columns: (0..depths).map(|d| d.to_string()).collect(),
        cells,
    }
}

/// Event kind × interrupted context, from `totals.contexts`.
pub fn kind_by_context(totals: &Value) -> Heatmap {
    let map = totals["contexts"].as_object().cloned().unwrap_or_default();
    let rows = ordered(map.keys());
    let seen: BTreeSet<String> = map
        .values()
        .flat_map(|contexts| contexts.as_object().into_iter().flatten().map(|(k, _)| k.clone()))
        .collect();
    let mut columns: Vec<String> =
        ["task", "user"].iter().filter(|c| seen.contains(**c)).map(|c| c.to_string()).collect();
    columns.extend(ordered(seen.iter().filter(|c| *c != "task" && *c != "user")));
    let cells = rows
        .iter()
        .map(|row| columns.iter().map(|c| map[row][c].as_u64().unwrap_or(0)).collect())
        .collect();
    Heatmap {
        title: "frames by event kind (row) and the context it interrupted (column)".into(),
        rows,
        columns,
        cells,
    }
}

/// Event kind × the CPU whose lane ran the seed, from `totals.kind_cpu`
/// (None for a campaign of one-CPU boots: one column says nothing).
pub fn kind_by_cpu(totals: &Value) -> Option<Heatmap> {
    let map = totals["kind_cpu"].as_object().cloned().unwrap_or_default();
    let rows = ordered(map.keys());
    let mut columns: Vec<String> = map
        .values()
        .flat_map(|cpus| cpus.as_object().into_iter().flatten().map(|(k, _)| k.clone()))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    // cpu2 before cpu10.
    columns
        .sort_by_key(|column| column.trim_start_matches("cpu").parse::<u32>().unwrap_or(u32::MAX));
    if columns.len() < 2 {
        return None;
    }
    let cells = rows
        .iter()
        .map(|row| columns.iter().map(|c| map[row][c].as_u64().unwrap_or(0)).collect())
        .collect();
    Some(Heatmap {
        title: "frames by event kind (row) and the CPU whose lane ran the seed (column)".into(),
        rows,
        columns,
        cells,
    })
}

/// `12345` as `12.3k`, so a count fits its cell.
fn short(count: u64) -> String {
    match count {
        0..=9_999 => count.to_string(),
        10_000..=999_999 => format!("{}k", count / 1000),
        _ => format!("{:.1}M", count as f64 / 1e6),
    }
}

/// White for 0, then pale yellow to dark red on a log scale up to `max`.
fn shade(count: u64, max: u64) -> RGBColor {
    if count == 0 {
        return WHITE;
    }
    let t = ((count as f64).ln_1p() / (max.max(1) as f64).ln_1p()).clamp(0.0, 1.0);
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(mix(255, 189), mix(237, 0), mix(160, 38))
}

const CELL_WIDTH: i32 = 46;
const CELL_HEIGHT: i32 = 18;
const ROW_LABEL_WIDTH: i32 = 150;
const TITLE_HEIGHT: i32 = 26;

/// Room for the column labels (written upwards): the longest one.
fn column_label_height(map: &Heatmap) -> i32 {
    map.columns.iter().map(|name| name.len() as i32 * 7 + 10).max().unwrap_or(0)
}

fn heatmap_height(map: &Heatmap) -> i32 {
    TITLE_HEIGHT + column_label_height(map) + CELL_HEIGHT * map.rows.len().max(1) as i32 + 16
}

fn draw_heatmap(area: &DrawingArea<SVGBackend, Shift>, map: &Heatmap) -> Result<()> {
    let error =
        |e: DrawingAreaErrorKind<_>| Error::draw(format!("the heat map '{}'", map.title), e);
    area.draw(&Text::new(map.title.clone(), (8, 6), ("sans-serif", 15))).map_err(error)?;
    if map.rows.is_empty() || map.columns.is_empty() {
        return area
            .draw(&Text::new("(no data)", (ROW_LABEL_WIDTH, TITLE_HEIGHT + 8), ("sans-serif", 12)))
            .map_err(error);
    }
    let max = map.cells.iter().flatten().copied().max().unwrap_or(0);
    let top = TITLE_HEIGHT + column_label_height(map);
    let upwards = ("sans-serif", 11).into_font().transform(FontTransform::Rotate270);
    for (column, name) in map.columns.iter().enumerate() {
        let x = ROW_LABEL_WIDTH + column as i32 * CELL_WIDTH + CELL_WIDTH / 2 - 5;
        area.draw(&Text::new(name.clone(), (x, top - 4), upwards.clone())).map_err(error)?;
    }
    let right =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let centre =
        TextStyle::from(("sans-serif", 9).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    for (row, name) in map.rows.iter().enumerate() {
        let y = top + row as i32 * CELL_HEIGHT;
        let label =
            Text::new(name.clone(), (ROW_LABEL_WIDTH - 6, y + CELL_HEIGHT / 2), right.clone());
        area.draw(&label).map_err(error)?;
        for (column, &count) in map.cells[row].iter().enumerate() {
            let x = ROW_LABEL_WIDTH + column as i32 * CELL_WIDTH;
            let colour = shade(count, max);
            let cell = [(x, y), (x + CELL_WIDTH - 1, y + CELL_HEIGHT - 1)];
            area.draw(&Rectangle::new(cell, colour.filled())).map_err(error)?;
            area.draw(&Rectangle::new(cell, RGBColor(220, 220, 220))).map_err(error)?;
            if count > 0 {
                let ink = if colour.1 < 110 { WHITE } else { BLACK };
                let text = Text::new(
                    short(count),
                    (x + CELL_WIDTH / 2, y + CELL_HEIGHT / 2),
                    centre.clone().color(&ink),
                );
                area.draw(&text).map_err(error)?;
            }
        }
    }
    Ok(())
}

const POINTS_PER_ROW: usize = 64;
const POINT_SIZE: i32 = 11;
const POINT_LABEL_WIDTH: i32 = 260;

fn points_height(points: usize) -> i32 {
    TITLE_HEIGHT + 20 + POINT_SIZE * points.div_ceil(POINTS_PER_ROW).max(1) as i32 + 16
}

fn draw_entry_points(
    area: &DrawingArea<SVGBackend, Shift>,
    text: &EntryText,
    hits: &BTreeSet<u64>,
) -> Result<()> {
    let error = |e: DrawingAreaErrorKind<_>| Error::draw("the entry-text picture", e);
    let hit = text.hit(hits);
    let title = format!(
        "entry text: {hit} of {} instructions interrupted by a foreign event (one square each, {} per row, in address order)",
        text.total(),
        POINTS_PER_ROW
    );
    area.draw(&Text::new(title, (8, 6), ("sans-serif", 15))).map_err(error)?;
    let top = TITLE_HEIGHT + 20;
    let right =
        TextStyle::from(("sans-serif", 10).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (index, point) in text.points.iter().enumerate() {
        let (row, column) = (index / POINTS_PER_ROW, index % POINTS_PER_ROW);
        let (x, y) =
            (POINT_LABEL_WIDTH + column as i32 * POINT_SIZE, top + row as i32 * POINT_SIZE);
        if column == 0 {
            // The function the row starts in (the IRQ stubs have no symbol
            // each: their offset, then).
            let mut name = match point.location.split_once('+') {
                Some(("entry_text", _)) | None => point.location.clone(),
                Some((function, _)) => function.to_string(),
            };
            if name.len() > 40 {
                name.truncate(40);
            }
            let label = Text::new(name, (POINT_LABEL_WIDTH - 6, y + POINT_SIZE / 2), right.clone());
            area.draw(&label).map_err(error)?;
        }
        let colour = if hits.contains(&point.offset) {
            RGBColor(0, 109, 44)
        } else {
            RGBColor(224, 224, 224)
        };
        let square = [(x, y), (x + POINT_SIZE - 2, y + POINT_SIZE - 2)];
        area.draw(&Rectangle::new(square, colour.filled())).map_err(error)?;
    }
    Ok(())
}

/// Draws the campaign document's pictures into `path`. `entry_text`: the
/// kernel's decoded entry text, for the third (left out when `None`).
pub fn plot(document: &Value, entry_text: Option<&EntryText>, path: &Path) -> Result<()> {
    let totals = &document["totals"];
    if !totals.is_object() {
        return Err(Error::Usage("not an extregs fuzz campaign document (no totals)".into()));
    }
    let maps: Vec<Heatmap> =
        [Some(kind_by_depth(totals)), Some(kind_by_context(totals)), kind_by_cpu(totals)]
            .into_iter()
            .flatten()
            .collect();
    let hits: BTreeSet<u64> = totals["entry_points_hit_offsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let widest = maps
        .iter()
        .map(|map| ROW_LABEL_WIDTH + CELL_WIDTH * map.columns.len() as i32 + 20)
        .chain(entry_text.map(|_| POINT_LABEL_WIDTH + POINT_SIZE * POINTS_PER_ROW as i32 + 20))
        .max()
        .unwrap_or(600)
        .max(900);
    let heights: Vec<i32> = maps
        .iter()
        .map(heatmap_height)
        .chain(entry_text.map(|text| points_height(text.points.len())))
        .collect();
    let total_height: i32 = heights.iter().sum::<i32>() + 40;
    let root = SVGBackend::new(path, (widest as u32, total_height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| Error::draw("the coverage chart", e))?;
    let caption = format!(
        "extregs fuzz: seeds {}, {} iterations, {} frames",
        document["seeds"].as_str().unwrap_or("?"),
        document["iterations"],
        totals["frames"]
    );
    root.draw(&Text::new(caption, (8, 10), ("sans-serif", 18)))
        .map_err(|e| Error::draw("the coverage chart", e))?;
    let mut top = 40;
    for map in &maps {
        let height = heatmap_height(map);
        let area = root.clone().shrink((0, top), (widest as u32, height as u32));
        draw_heatmap(&area, map)?;
        top += height;
    }
    if let Some(text) = entry_text {
        let height = points_height(text.points.len());
        let area = root.clone().shrink((0, top), (widest as u32, height as u32));
        draw_entry_points(&area, text, &hits)?;
    }
    root.present().map_err(|e| Error::draw("the coverage chart", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn totals() -> Value {
        json!({
            "kind_depth": {"user_int3": [4, 0, 0], "int3": [5, 2, 0], "timer": [0, 3, 1]},
            "contexts": {
                "int3": {"task": 5, "timer": 2},
                "timer": {"int3": 3, "user_int3": 1},
                "user_int3": {"user": 4}
            },
            "entry_points_hit_offsets": [0, 9],
            "frames": 15
        })
    }

    #[test]
    fn kind_by_depth_orders_rows_and_trims_empty_depths() {
        let map = kind_by_depth(&totals());
        assert_eq!(map.rows, ["int3", "timer", "user_int3"]);
        assert_eq!(map.columns, ["0", "1", "2"]);
        assert_eq!(map.cells, [vec![5, 2, 0], vec![0, 3, 1], vec![4, 0, 0]]);
        let shallow = kind_by_depth(&json!({"kind_depth": {"ud2": [1, 0, 0, 0]}}));
        assert_eq!(shallow.columns, ["0"], "depths past the deepest frame are left out");
    }

    #[test]
    fn kind_by_context_puts_task_and_user_first() {
        let map = kind_by_context(&totals());
        assert_eq!(map.rows, ["int3", "timer", "user_int3"]);
        assert_eq!(map.columns, ["task", "user", "int3", "timer", "user_int3"]);
        assert_eq!(map.cells[0], [5, 0, 0, 2, 0]);
        assert_eq!(map.cells[1], [0, 0, 3, 0, 1]);
        assert_eq!(map.cells[2], [0, 4, 0, 0, 0]);
    }

    #[test]
    fn kind_by_cpu_needs_two_cpus_and_orders_them() {
        assert!(kind_by_cpu(&json!({"kind_cpu": {"int3": {"cpu0": 3}}})).is_none());
        let map = kind_by_cpu(&json!({"kind_cpu": {
            "int3": {"cpu10": 1, "cpu2": 4},
            "migrate": {"cpu0": 2}
        }}))
        .expect("three CPUs");
        assert_eq!(map.columns, ["cpu0", "cpu2", "cpu10"]);
        assert_eq!(map.rows, ["int3", "migrate"]);
        assert_eq!(map.cells, [vec![0, 4, 1], vec![2, 0, 0]]);
    }

    #[test]
    fn counts_shorten_and_shades_scale() {
        assert_eq!(
            (short(999), short(12_345), short(2_345_678)),
            ("999".into(), "12k".into(), "2.3M".into())
        );
        assert_eq!(shade(0, 10), WHITE);
        assert_eq!(shade(10, 10), RGBColor(189, 0, 38));
        assert!(shade(1, 10).1 > shade(5, 10).1, "more frames, darker");
    }

    #[test]
    fn the_picture_has_all_three_maps() {
        let path = std::env::temp_dir().join(format!("extregs-{}-plot.svg", std::process::id()));
        let text = EntryText::from_elf(crate::images::kernel_elf()).expect("the kernel ELF");
        let mut totals = totals();
        totals["entry_points_hit_offsets"] = json!([text.points[0].offset, text.points[5].offset]);
        let document = json!({"seeds": "0..2", "iterations": 5, "totals": totals});
        plot(&document, Some(&text), &path).expect("drawn");
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("nesting depth") && svg.contains("interrupted"), "the two heat maps");
        assert!(svg.contains(&format!("2 of {} instructions", text.total())), "the entry text");
        assert!(plot(&json!({"runs": []}), None, &path).is_err(), "not a campaign document");
    }
}
