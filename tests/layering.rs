//! The library's files import each other without a circle: each file uses only files below it
//! (docs/architecture.md, "Layers"). Reads `src/` as text: every `crate::`, `super::` and
//! `self::` path and every use of a child module counts as an import of the file that defines
//! it, with the crate root's re-exports resolved to where the item lives.

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

#[test]
fn no_file_of_the_library_imports_itself_through_others() {
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

    let mut edges: BTreeMap<&PathBuf, BTreeSet<&PathBuf>> = BTreeMap::new();
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
        let deps = edges.entry(file).or_default();
        for target in targets {
            if let Some(t) = resolve(target) {
                if t != file && !t.ends_with("lib.rs") {
                    deps.insert(t);
                }
            }
        }
    }

    // Depth-first search for a back edge; report the circle it closes.
    fn visit<'a>(
        node: &'a PathBuf,
        edges: &BTreeMap<&'a PathBuf, BTreeSet<&'a PathBuf>>,
        stack: &mut Vec<&'a PathBuf>,
        done: &mut BTreeSet<&'a PathBuf>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| *n == node) {
            return Some(
                stack[i..]
                    .iter()
                    .chain([&node])
                    .map(|p| p.display().to_string())
                    .collect(),
            );
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for file in &files {
        let circle = visit(file, &edges, &mut Vec::new(), &mut done);
        assert!(
            circle.is_none(),
            "import circle: {}",
            circle.unwrap().join(" -> ")
        );
    }
    let count: usize = edges.values().map(BTreeSet::len).sum();
    assert!(count > 40, "found only {count} imports: the scan is broken");
}
