//! The dependency rule of `src/lib.rs` ("Layers"), checked on the source text: a module
//! imports only from layers below its own, and no two files import each other through any
//! chain. Test code (`mod tests`, `tests.rs`) and doc comments are left out: they may look
//! at anything.
//!
//! The check reads `use` declarations and inline `crate::…`/`super::…` paths and resolves each
//! to the longest module path that is a file under `src/`. It cannot follow re-exports, so a
//! lower layer must name the file it imports from (`crate::schema::table_ref::TableRef`), which
//! keeps the edges visible to a reader too. An edge between a module and its own submodules
//! (`super::…` from a child, a parent reaching into its child) is internal to that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module, lowest first. An import may only point to a lower layer;
/// modules of layer 0 (plain data and the vocabulary every layer shares) may import each other.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("retry", 0),
    ("position", 0),
    ("schema", 0),
    ("event", 0),
    ("table_options", 0),
    ("table_filter", 0),
    ("check", 0),
    ("telemetry", 0),
    ("shutdown", 0),
    ("failpoint", 0),
    ("status", 0),
    ("drift", 0),
    ("config", 1),
    ("connection", 2),
    ("mysql_codec", 2),
    ("bigquery_api", 2),
    ("buffer", 3),
    ("source", 4),
    ("sink", 4),
    ("alerts", 4),
    ("writer", 5),
    ("pipeline", 6),
];

type Module = Vec<String>;

fn layer(m: &Module) -> Option<u8> {
    let top = m.first()?;
    LAYERS.iter().find(|(name, _)| name == top).map(|(_, l)| *l)
}

/// Every non-test source file of the library, by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            if parts == ["main"] || parts.last().is_some_and(|p| p == "tests") {
                continue;
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The text without comments and without the trailing `#[cfg(test)] mod tests { … }`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string literal is rare in this code base and only drops an edge.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").trim().to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .flat_map(expand)
        .map(|i| if prefix.is_empty() { i } else { format!("{prefix}::{i}") })
        .collect()
}

/// Every `crate::`/`super::`/`self::` path the code mentions.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            out.extend(expand(&rest[..end]));
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// The file a path from module `from` lands in.
fn resolve(from: &Module, path: &str, modules: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut parts = path.split("::").filter(|p| !p.is_empty()).peekable();
    let mut full: Module = match parts.peek().copied() {
        Some("crate") => {
            parts.next();
            Vec::new()
        }
        Some("super" | "self") => {
            let mut base = from.clone();
            while let Some(p @ ("super" | "self")) = parts.peek().copied() {
                if p == "super" {
                    base.pop();
                }
                parts.next();
            }
            base
        }
        _ => return None,
    };
    full.extend(parts.map(str::to_string));
    (0..=full.len()).rev().map(|n| full[..n].to_vec()).find(|m| modules.contains_key(m))
}

fn edges(src: &Path) -> (BTreeMap<Module, PathBuf>, BTreeMap<Module, BTreeSet<Module>>) {
    let modules = modules(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, file) in &modules {
        let text = std::fs::read_to_string(file).expect("read source file");
        for path in paths(&code(&text)) {
            let Some(to) = resolve(m, &path, &modules) else { continue };
            let nested =
                to.len() <= m.len() && m[..to.len()] == to[..] || m.len() <= to.len() && to[..m.len()] == m[..];
            if !nested {
                edges.entry(m.clone()).or_default().insert(to);
            }
        }
    }
    (modules, edges)
}

fn name(m: &Module) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, edges) = edges(&src);
    let mut wrong = Vec::new();
    for m in modules.keys().filter(|m| !m.is_empty()) {
        let Some(from) = layer(m) else {
            wrong.push(format!("{} is in no layer: add it to LAYERS here and to the map in lib.rs", name(m)));
            continue;
        };
        for to in edges.get(m).into_iter().flatten() {
            let Some(target) = layer(to) else { continue };
            let allowed = target < from || (target == 0 && from == 0);
            if !allowed && to[0] != m[0] {
                wrong.push(format!("{} (layer {from}) imports {} (layer {target})", name(m), name(to)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layering of src/lib.rs:\n{}", wrong.join("\n"));
}

#[test]
fn no_two_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, edges) = edges(&src);
    // Tarjan's strongly connected components, iteratively small enough to recurse.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        cycles: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        let i = s.index.len();
        s.index.insert(v.clone(), i);
        s.low.insert(v.clone(), i);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                s.cycles.push(component);
            }
        }
    }
    let mut s = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for m in modules.keys() {
        if !s.index.contains_key(m) {
            visit(&mut s, m);
        }
    }
    let report: Vec<String> = s
        .cycles
        .iter()
        .map(|c| {
            let members: BTreeSet<&Module> = c.iter().collect();
            let lines: Vec<String> = c
                .iter()
                .map(|m| {
                    let to: Vec<String> = edges[m].iter().filter(|t| members.contains(t)).map(name).collect();
                    format!("  {} -> {}", name(m), to.join(", "))
                })
                .collect();
            format!("cycle of {} files:\n{}", c.len(), lines.join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_check_sees_imports() {
    // The parser is what makes the two tests above able to fail: prove it on known text.
    let code =
        code("use crate::a::{b::{C, D}, e};\nuse super::f as g; // use crate::ignored;\nfn x() { crate::h::i(); }\n");
    let found: BTreeSet<String> = paths(&code).into_iter().collect();
    for want in ["crate::a::b::C", "crate::a::b::D", "crate::a::e", "super::f", "crate::h::i"] {
        assert!(found.contains(want), "{want} not in {found:?}");
    }
    assert!(!found.iter().any(|p| p.contains("ignored")));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, edges) = edges(&src);
    assert!(modules.len() > 40, "{} files found", modules.len());
    assert!(edges.get(&vec!["writer".to_string()]).is_some_and(|e| e.contains(&vec!["error".to_string()])));
}
