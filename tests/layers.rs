//! The kernel's folders are layers: a module uses only its own folder and
//! the folders below it. This test reads the layer order from the diagram
//! in `crates/kernel/src/main.rs`'s `//!` doc, finds every `crate::` path
//! (`use` lines, groups, inline paths, `$crate::` in macros) and `super::`
//! path that leaves a folder in the kernel's sources, and fails on any
//! edge that points up, on any path that names no folder (a flat
//! re-export), and on a folder the diagram leaves out.
//!
//! A second test runs the same checker over a small tree with one upward
//! edge on purpose, so the checker itself is shown to fail.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One use of another folder: `from` (a file) names `to` (a folder).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// What the checker found wrong.
#[derive(Debug, Default)]
struct Findings {
    upward: Vec<Edge>,
    flat: Vec<String>,
    unlisted: Vec<String>,
}

impl Findings {
    fn is_clean(&self) -> bool {
        self.upward.is_empty() && self.flat.is_empty() && self.unlisted.is_empty()
    }
}

/// The layers, lowest first, from the `text` block of `main.rs`'s crate
/// doc: every row whose first word is a folder of `src`.
fn layer_order(src: &Path) -> Vec<String> {
    let main = fs::read_to_string(src.join("main.rs")).expect("reading main.rs");
    let mut in_diagram = false;
    let mut top_down = Vec::new();
    for line in main.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        if doc.trim() == "```text" {
            in_diagram = true;
            continue;
        }
        if in_diagram && doc.trim() == "```" {
            break;
        }
        if !in_diagram || !doc.starts_with("   ") || doc.starts_with("    ") {
            continue;
        }
        let Some(word) = doc.split_whitespace().next() else { continue };
        if src.join(word).is_dir() && !top_down.contains(&word.to_string()) {
            top_down.push(word.to_string());
        }
    }
    top_down.reverse();
    top_down
}

/// `source` with comments and the contents of string and char literals
/// blanked (newlines kept, so line numbers stay right).
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut index = 0;
    while index < bytes.len() {
        let rest = &source[index..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            index += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |end| end + 2);
            out.extend(rest[..end].chars().filter(|&c| c == '\n'));
            index += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let closing = format!("\"{}", "#".repeat(hashes));
            let body_start = 2 + hashes;
            let end = rest[body_start..]
                .find(&closing)
                .map_or(rest.len(), |at| body_start + at + closing.len());
            out.push_str("\"\"");
            out.extend(rest[..end].chars().filter(|&c| c == '\n'));
            index += end;
        } else if rest.starts_with('"') {
            let mut end = 1;
            let rest_bytes = rest.as_bytes();
            while end < rest_bytes.len() && rest_bytes[end] != b'"' {
                end += if rest_bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = (end + 1).min(rest.len());
            out.push_str("\"\"");
            out.extend(rest[..end].chars().filter(|&c| c == '\n'));
            index += end;
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            index += c.len_utf8();
        }
    }
    out
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The identifier starting at `text[at..]`.
fn ident_at(text: &str, at: usize) -> &str {
    let end = text[at..].bytes().position(|b| !is_ident_byte(b)).map_or(text.len(), |n| at + n);
    &text[at..end]
}

/// The first segment after each `crate::` (and `$crate::`) in `code`, with
/// its line; a `crate::{a, b::c}` group gives each item's first segment.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut search_from = 0;
    while let Some(offset) = code[search_from..].find("crate::") {
        let at = search_from + offset;
        search_from = at + "crate::".len();
        if at > 0 && is_ident_byte(code.as_bytes()[at - 1]) {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let after = &code[search_from..];
        if after.starts_with('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (position, c) in after.char_indices() {
                match c {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        found.push((line, ident_at(after, position).to_string()));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(after, 0);
            if !name.is_empty() {
                found.push((line, name.to_string()));
            }
        }
    }
    found
}

/// Where `super::` paths in a file of module path `module` lead: the first
/// segment after the last `super::`, when the path climbs to the crate
/// root (e.g. `super::apic` in `arch/mod.rs`).
fn super_paths_to_root(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut search_from = 0;
    while let Some(offset) = code[search_from..].find("super::") {
        let at = search_from + offset;
        if at > 0 && (is_ident_byte(code.as_bytes()[at - 1]) || code.as_bytes()[at - 1] == b':') {
            search_from = at + 1;
            continue;
        }
        let mut climbs = 0;
        let mut cursor = at;
        while code[cursor..].starts_with("super::") {
            climbs += 1;
            cursor += "super::".len();
        }
        search_from = cursor;
        if climbs >= module.len() {
            let line = code[..at].matches('\n').count() + 1;
            found.push((line, ident_at(code, cursor).to_string()));
        }
    }
    found
}

/// The folders' `#[macro_export]` macros: the macro's name to its folder.
fn exported_macros(files: &[(PathBuf, String)], src: &Path) -> BTreeMap<String, String> {
    let mut macros = BTreeMap::new();
    for (path, source) in files {
        let Some(folder) = folder_of(path, src) else { continue };
        let mut lines = source.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim() == "#[macro_export]" {
                if let Some(name) =
                    lines.peek().and_then(|next| next.trim().strip_prefix("macro_rules! "))
                {
                    macros.insert(name.trim_end_matches(" {").to_string(), folder.clone());
                }
            }
        }
    }
    macros
}

/// The top-level folder a file is in (`None` for `main.rs`).
fn folder_of(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).expect("under src");
    let mut parts = relative.components();
    let first = parts.next()?.as_os_str().to_string_lossy().into_owned();
    parts.next().map(|_| first)
}

/// The module path of a file (`modes/selftest/mod.rs` → `[modes, selftest]`).
fn module_path(path: &Path, src: &Path) -> Vec<String> {
    let relative = path.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> =
        relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|last| last == "mod" || last == "main") {
        parts.pop();
    }
    parts
}

fn rust_files(directory: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = fs::read_dir(directory)
        .expect("reading the kernel sources")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let source = fs::read_to_string(&path).expect("reading a source file");
            out.push((path, source));
        }
    }
}

/// Checks the tree under `src` against the diagram in its `main.rs`.
fn check_layers(src: &Path) -> (Vec<String>, Vec<Edge>, Findings) {
    let order = layer_order(src);
    let rank = |folder: &str| order.iter().position(|layer| layer == folder);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let macros = exported_macros(&files, src);
    let mut findings = Findings::default();
    let mut edges = Vec::new();
    let mut folders: Vec<String> = fs::read_dir(src)
        .expect("reading src")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .map(|path| path.file_name().expect("a name").to_string_lossy().into_owned())
        .collect();
    folders.sort();
    for folder in &folders {
        if rank(folder).is_none() {
            findings.unlisted.push(folder.clone());
        }
    }
    for (path, source) in &files {
        let Some(from) = folder_of(path, src) else { continue };
        let code = code_only(source);
        let module = module_path(path, src);
        let display = path.strip_prefix(src).expect("under src").display().to_string();
        let mut names = crate_paths(&code);
        names.extend(super_paths_to_root(&code, &module));
        for (line, name) in names {
            let to = if folders.contains(&name) {
                name
            } else if let Some(folder) = macros.get(&name) {
                folder.clone()
            } else {
                findings.flat.push(format!(
                    "{display}:{line}: crate::{name} names no folder (write crate::<folder>::…)"
                ));
                continue;
            };
            if to == from {
                continue;
            }
            let edge = Edge { file: display.clone(), line, from: from.clone(), to: to.clone() };
            if let (Some(from_rank), Some(to_rank)) = (rank(&from), rank(&to)) {
                if to_rank > from_rank {
                    findings.upward.push(edge.clone());
                }
            }
            edges.push(edge);
        }
    }
    (order, edges, findings)
}

fn report(findings: &Findings, order: &[String]) -> String {
    let mut text = format!("layers, lowest first: {}\n", order.join(" < "));
    for edge in &findings.upward {
        text += &format!(
            "upward: {}:{}: {} uses {} (a layer above it)\n",
            edge.file, edge.line, edge.from, edge.to
        );
    }
    for flat in &findings.flat {
        text += &format!("flat path: {flat}\n");
    }
    for folder in &findings.unlisted {
        text += &format!("folder {folder} is not in main.rs's layer diagram\n");
    }
    text
}

#[test]
fn kernel_folders_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/kernel/src");
    let (order, edges, findings) = check_layers(&src);
    assert!(order.len() >= 6, "the layer diagram in main.rs lists too few folders: {order:?}");
    assert!(!edges.is_empty(), "no edges found: the checker reads nothing");
    assert!(findings.is_clean(), "{}", report(&findings, &order));
}

/// A tree with `low` below `high`, where one file of `low` imports `high`
/// (in a `use` group, the way real code does) and one names a flat module.
#[test]
fn the_checker_fails_on_an_upward_edge_and_a_flat_path() {
    let root = std::env::temp_dir().join(format!("extregs-layers-{}", std::process::id()));
    let src = root.join("src");
    fs::create_dir_all(src.join("low")).expect("creating the tree");
    fs::create_dir_all(src.join("high")).expect("creating the tree");
    fs::write(
        src.join("main.rs"),
        "//! ```text\n//!   high   the top\n//!   low    the bottom\n//! ```\nmod high;\nmod low;\n",
    )
    .expect("writing main.rs");
    fs::write(src.join("low/mod.rs"), "pub mod a;\n").expect("writing");
    fs::write(
        src.join("low/a.rs"),
        "// crate::high in a comment does not count\n\
         use crate::{low::b, high::thing};\nfn f() { let _ = \"crate::high\"; crate::apic::x(); }\n",
    )
    .expect("writing");
    fs::write(src.join("high/mod.rs"), "use crate::low::a;\nuse super::low::a as b;\n")
        .expect("writing");
    let (order, edges, findings) = check_layers(&src);
    fs::remove_dir_all(&root).expect("removing the tree");
    assert_eq!(order, ["low", "high"]);
    assert_eq!(findings.upward.len(), 1, "{}", report(&findings, &order));
    assert_eq!(
        findings.upward[0],
        Edge { file: "low/a.rs".into(), line: 2, from: "low".into(), to: "high".into() }
    );
    assert_eq!(findings.flat.len(), 1, "{}", report(&findings, &order));
    assert!(findings.flat[0].starts_with("low/a.rs:3: crate::apic"));
    // high → low twice (crate:: and super::), low → high once.
    assert_eq!(edges.len(), 3, "{edges:?}");
}
