//! The library's files form one declared order of layers (`LAYERS`, top to bottom): a file
//! imports only files of lower layers, and of its own layer only where that layer is declared
//! mutual. `src/lib.rs`'s crate map and `docs/architecture.md` list the same order. Reads
//! `src/` as text: every `crate::`, `super::` and `self::` path and every use of a child module
//! counts as an import of the file that defines it, with the crate root's re-exports resolved
//! to where the item lives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["shard", "conn"]`) of a file under `src/`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix("src").unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path.to_string_lossy().ends_with("_tests.rs")
        {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its inline `mod tests`.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path that follows `prefix::` in `code`, with `{a, b::c}` groups expanded (one level
/// of nesting is enough for this crate).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let needle = format!("{prefix}::");
    let mut from = 0;
    while let Some(i) = code[from..].find(&needle) {
        let start = from + i;
        from = start + needle.len();
        if code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
        {
            continue;
        }
        expand(&code[from..], Vec::new(), &mut out);
    }
    out
}

fn expand(rest: &str, mut base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut rest = rest;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += (c == '{') as i32 - (c == '}') as i32;
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut item = String::new();
            let mut level = 0;
            for c in group[..end].chars().chain(std::iter::once(',')) {
                level += (c == '{') as i32 - (c == '}') as i32;
                if c == ',' && level == 0 {
                    let item_path = item.trim().split(" as ").next().unwrap_or("").to_string();
                    if item_path == "self" {
                        out.push(base.clone());
                    } else if !item_path.is_empty() {
                        expand(&item_path, base.clone(), out);
                    }
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            return;
        }
        let ident: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            out.push(base);
            return;
        }
        base.push(ident.clone());
        rest = &rest[ident.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.push(base);
                return;
            }
        }
    }
}

/// Every file of `src/` with the files it imports.
fn imports() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();

    // The crate root's re-exports: name -> module path it comes from.
    let root = code_of(&std::fs::read_to_string("src/lib.rs").unwrap());
    let mut reexports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in root.lines().filter(|l| l.starts_with("pub use ")) {
        for path in paths_after(&format!(" crate::{}", &line["pub use ".len()..]), "crate") {
            if let Some((name, module)) = path.split_last() {
                reexports.insert(name.clone(), module.to_vec());
            }
        }
    }
    let resolve = |mut path: Vec<String>| -> Option<&PathBuf> {
        if path.len() == 1 {
            if let Some(module) = reexports.get(&path[0]) {
                path = module.iter().cloned().chain(path).collect();
            }
        }
        (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
    };

    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let me = module_of(file);
        let is_dir_module = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let own = if is_dir_module {
            me.clone()
        } else {
            me[..me.len().saturating_sub(1)].to_vec()
        };
        let mut targets = Vec::new();
        for path in paths_after(&code, "crate") {
            targets.push(path);
        }
        for path in paths_after(&code, "super") {
            targets.push(own.iter().cloned().chain(path).collect());
        }
        for path in paths_after(&code, "self") {
            targets.push(me.iter().cloned().chain(path).collect());
        }
        // A child module named in a path (`conn::Conn`) from its parent.
        if is_dir_module {
            for child in modules
                .keys()
                .filter(|m| m.len() == me.len() + 1 && m.starts_with(&me))
            {
                let name = child.last().unwrap();
                for path in paths_after(&code, name) {
                    targets.push(child.iter().cloned().chain(path).collect());
                }
            }
        }
        let deps = edges.entry(file.clone()).or_default();
        for target in targets {
            if let Some(t) = resolve(target) {
                if t != file && !t.ends_with("lib.rs") {
                    deps.insert(t.clone());
                }
            }
        }
    }

    edges
}

/// The layers, top to bottom, as module paths (`""` is never used: `lib.rs` only re-exports).
/// `true` marks the one layer whose files import each other: the shard's connection, its slab
/// and the handles users hold refer to one another through `Rc`.
const LAYERS: &[(&[&str], bool)] = &[
    (&["server"], false),
    (&["cluster::link", "backend::nats"], false),
    (&["cluster::streams"], false),
    (&["shard"], false),
    (&["shard::io"], false),
    (&["shard::transport"], false),
    (&["websocket"], false),
    (&["shard::dispatch"], false),
    (&["shard::state"], false),
    (&["shard::shared"], false),
    (&["tls"], false),
    (
        &["shard::conn", "shard::connections", "shard::handle"],
        true,
    ),
    (&["handshake"], false),
    (&["upgrade"], false),
    (&["backend::link"], false),
    (&["runtime"], false),
    (&["backend"], false),
    (&["backend::client"], false),
    (&["cluster::handle"], false),
    (&["shard::link"], false),
    (
        &["shard::readiness", "shard::timers", "shard::socket"],
        false,
    ),
    (&["shard::notify", "shard::coalescing"], false),
    (&["topics"], false),
    (&["history"], false),
    (&["metrics"], false),
    (&["backend::outbox", "backend::wire"], false),
    (&["auth"], false),
    (&["cluster", "cluster::wire"], false),
    (&["config"], false),
    (&["error"], false),
    (&["event", "registry", "units", "limits"], false),
    (&["ws"], false),
    (&["ws::session"], false),
    (&["ws::deflate"], false),
    (&["ws::frame", "ws::queue", "ws::liveness"], false),
    (&["ws::inflate", "ws::stamp"], false),
    (&["http"], false),
    (&["http::upgrade"], false),
    (&["http::head"], false),
    (
        &[
            "http::query",
            "http::tokens",
            "http::response",
            "http::route",
        ],
        false,
    ),
];

fn module_name(file: &Path) -> String {
    module_of(file).join("::")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(mods, _)| mods.contains(&module))
}

#[test]
fn each_file_imports_only_the_layers_below_it() {
    let edges = imports();
    let mut wrong = Vec::new();
    for (file, deps) in &edges {
        let me = module_name(file);
        if me.is_empty() {
            continue;
        }
        let Some(mine) = layer_of(&me) else {
            wrong.push(format!(
                "{me} is in no layer: add it to LAYERS (and to the maps)"
            ));
            continue;
        };
        for dep in deps {
            let them = module_name(dep);
            let theirs = layer_of(&them).unwrap_or(usize::MAX);
            let mutual = LAYERS[mine].1;
            if theirs < mine || (theirs == mine && !mutual) {
                wrong.push(format!("{me} imports {them}, which is not below it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let count: usize = edges.values().map(BTreeSet::len).sum();
    assert!(count > 40, "found only {count} imports: the scan is broken");
}

#[test]
fn every_layer_names_files_that_exist() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_name(f)).collect();
    for (mods, _) in LAYERS {
        for m in *mods {
            assert!(modules.contains(*m), "LAYERS names {m}, which has no file");
        }
    }
}

/// The modules a map lists, in order: the backticked names of each row's first column.
fn listed(rows: impl Iterator<Item = String>) -> Vec<String> {
    rows.flat_map(|first| {
        first
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    })
    .collect()
}

fn declared() -> Vec<String> {
    LAYERS
        .iter()
        .flat_map(|(mods, _)| mods.iter().map(|m| m.to_string()))
        .collect()
}

#[test]
fn the_crate_map_lists_the_layers_in_order() {
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    let map = lib
        .split("# Map of the crate")
        .nth(1)
        .expect("src/lib.rs has a '# Map of the crate' section");
    let rows = map
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("//!"))
        .filter_map(|l| l.strip_prefix("//! | "))
        .map(|l| l.split(" | ").next().unwrap_or("").to_string());
    assert_eq!(
        listed(rows),
        declared(),
        "src/lib.rs's map and LAYERS differ"
    );
}

#[test]
fn the_architecture_page_lists_the_layers_in_order() {
    let page = std::fs::read_to_string("docs/architecture.md").unwrap();
    let block = page
        .split("## Layers")
        .nth(1)
        .and_then(|s| s.split("```text").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("docs/architecture.md has a ```text block under '## Layers'");
    // Each line: the layer's files (`src/` paths in backticks), then what they are.
    let rows = block.lines().filter(|l| l.starts_with('`')).map(|l| {
        l.split("  ")
            .next()
            .unwrap_or("")
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|file| format!("`{}`", module_name(Path::new(&format!("src/{file}")))))
            .collect::<String>()
    });
    assert_eq!(
        listed(rows),
        declared(),
        "docs/architecture.md and LAYERS differ"
    );
}
