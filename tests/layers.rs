//! The layers only point down (docs/architecture.md, "Layers"): each
//! top-level module of `src/` has a rank, and its code may name only modules
//! of a lower rank. A use of a module at the same or a higher rank (which is
//! what every import cycle needs) fails here, naming the file and the use.
//! Unit tests at the end of a file (`#[cfg(test)] mod tests`) may use any
//! module, as a dev-dependency would.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

/// Bottom first. A new top-level module must be added here.
const LAYERS: &[(&str, u8)] = &[
    // Plumbing every layer may use.
    ("proto", 0),
    ("retry", 0),
    ("shutdown", 0),
    ("logging", 0),
    ("config", 1),
    // The transaction: fields, schema, decoding, the CSV layout.
    ("record", 1),
    // Pure definitions over records, and a generator of records.
    ("features", 2),
    ("security", 2),
    ("kafka", 2),
    ("simulate", 3),
    // What a card and a merchant did before: definitions and keyed state.
    ("history", 3),
    // A batch of transactions in, a batch of outcomes out.
    ("score", 4),
    // Counted, and measured.
    ("metrics", 5),
    ("quality", 5),
    // Where outcomes go: the interfaces the core owns, and memory.
    ("store", 6),
    ("sink", 7),
    // The core every front end calls.
    ("app", 8),
    // Front ends.
    ("source", 9),
    ("flight", 9),
    ("http", 9),
    ("retrain", 9),
    ("demo", 10),
    ("serve", 10),
    ("cli", 11),
];

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, r)| *r)
}

/// The text of a file without its trailing unit-test module.
fn production_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Every `crate::name` a text mentions, including inside `use crate::{a, b::c}`.
fn crate_uses(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group into its items at its own depth; each item's
            // first identifier is a module.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(first_identifier(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push(first_identifier(&item));
        } else {
            names.push(first_identifier(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn first_identifier(text: &str) -> String {
    text.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(&support::manifest_dir()).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = rank(&top) else {
            wrong.entry(relative.display().to_string()).or_default().push(format!("`{top}` has no layer in LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in crate_uses(production_code(&text)) {
            if used == top {
                continue;
            }
            match rank(&used) {
                Some(r) if r < own => {}
                Some(r) => wrong
                    .entry(relative.display().to_string())
                    .or_default()
                    .push(format!("`{top}` (layer {own}) uses `{used}` (layer {r}): not below it")),
                None => wrong.entry(relative.display().to_string()).or_default().push(format!("`{used}` has no layer")),
            }
        }
    }
    let report: Vec<String> = wrong.iter().map(|(file, problems)| format!("{file}: {}", problems.join("; "))).collect();
    assert!(report.is_empty(), "layers pointing up or sideways:\n{}", report.join("\n"));
}

#[test]
fn the_scanner_sees_grouped_and_plain_uses() {
    let text =
        "use crate::{app::{App, B}, sink};\nfn f() { crate::score::x(); }\n#[cfg(test)]\nmod tests { use crate::cli; }";
    assert_eq!(crate_uses(production_code(text)), ["app", "sink", "score"]);
}
