//! Invariants of the runtime's layout that a reviewer would otherwise have
//! to remember (in the spirit of rust-analyzer's `tidy`): the modules import
//! each other without cycles, the leaf vocabulary imports nothing, storage
//! imports nothing but the vocabulary, and every path that
//! `docs/ARCHITECTURE.md` names exists.
//!
//! The import graph is read from the source text: every `crate::NAME` path
//! (in `use` trees too) of a file under `src/NAME…` is an edge between
//! top-level modules. It reads code only: comments and string literals are
//! removed first, so prose cannot add or hide an edge.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The leaf vocabulary: imports nothing of the crate.
const LEAF: &str = "vocab";
/// Storage, which may import the leaf and nothing else.
const STORE: &str = "store";

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, string and character literals.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if bytes.get(i + 1) == Some(&b'#') || bytes.get(i + 1) == Some(&b'"') => {
                // A raw string: r"…", r#"…"#, and so on.
                let start = i;
                i += 1;
                let mut hashes = 0;
                while bytes.get(i) == Some(&b'#') {
                    hashes += 1;
                    i += 1;
                }
                if bytes.get(i) != Some(&b'"') || (start > 0 && is_ident(bytes[start - 1])) {
                    out.push_str(&text[start..i]);
                    continue;
                }
                i += 1;
                let closing: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                while i < bytes.len() && !bytes[i..].starts_with(&closing) {
                    i += 1;
                }
                i += closing.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || bytes.get(i + 1) == Some(&b'\\') => {
                // A character literal (a lifetime has no closing quote).
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            _ => {
                let ch = text[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The top-level modules a file's code names through `crate::`, directly
/// (`crate::store::X`) or in a use tree (`use crate::{store::X, trace}`).
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = &rest.as_bytes()[..at];
        let preceded_by_ident = before.last().is_some_and(|b| is_ident(*b)) || before.ends_with(b"::");
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            // Top-level names of the group: split at commas outside braces.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            found.extend(first_ident(&item));
        } else {
            found.extend(first_ident(trimmed));
        }
    }
    found
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// The top-level module a file belongs to, or `None` for `lib.rs`.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src_dir()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_string()),
        None => Some(first),
    }
}

/// `module → {module it imports → files that import it}`.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn import_graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = module_of(&file) else { continue };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for imported in imported_modules(&code) {
            if imported != module {
                let name = file.strip_prefix(src_dir()).unwrap().display().to_string();
                edges.entry(imported).or_default().insert(name);
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g str) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        for target in state.graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            let target = target.as_str();
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_string());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

fn describe(graph: &Graph, component: &[String]) -> String {
    let mut lines = vec![format!("cycle among {}:", component.join(", "))];
    for from in component {
        for (to, files) in graph.get(from).into_iter().flatten() {
            if component.contains(to) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                lines.push(format!("  {from} → {to} (in {})", files.join(", ")));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn the_runtimes_modules_import_each_other_without_cycles() {
    let graph = import_graph();
    assert!(graph.len() > 10, "the graph was read: {:?}", graph.keys().collect::<Vec<_>>());
    let found: Vec<String> = cycles(&graph).iter().map(|c| describe(&graph, c)).collect();
    assert!(found.is_empty(), "the runtime's modules import each other in a cycle:\n{}", found.join("\n"));
}

#[test]
fn the_vocabulary_imports_nothing_and_storage_only_the_vocabulary() {
    let graph = import_graph();
    let leaf: Vec<_> = graph.get(LEAF).expect("the leaf vocabulary exists").iter().collect();
    assert!(leaf.is_empty(), "`{LEAF}` must import nothing of the crate; it imports {leaf:?}");
    let store: Vec<_> = graph.get(STORE).expect("storage exists").iter().filter(|(to, _)| *to != LEAF).collect();
    assert!(store.is_empty(), "`{STORE}` may import only `{LEAF}`; it imports {store:?}");
}

#[test]
fn the_reader_finds_edges_in_use_trees_and_ignores_prose() {
    let code = code_only(
        "use crate::{store::{A, B}, trace, self};\n// crate::policy in a comment\n\
         let s = \"crate::gate\"; let r = r#\"crate::hedge\"#; x::crate::nothing; crate::predict::f();",
    );
    let found: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(found, ["predict", "store", "trace"]);
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().entry(to.into()).or_default().insert(format!("{from}.rs"));
    }
    assert_eq!(cycles(&graph), [vec!["a".to_string(), "b".into(), "c".into()]]);
}

#[test]
fn every_path_the_architecture_document_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for quoted in text.split('`').skip(1).step_by(2) {
        let path = quoted.split_whitespace().next().unwrap_or_default();
        let is_path = ["runtime/", "service/", "cli/", "tests/", "wit/", "models/", "xtask/", "guest-sdk/", "benches/"]
            .iter()
            .any(|top| path.starts_with(top));
        if !is_path || path.contains(['*', '{', '…']) {
            continue;
        }
        named += 1;
        if !root.join(path).exists() {
            missing.push(path.to_string());
        }
    }
    assert!(named > 10, "the document names paths ({named} found)");
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md names paths that do not exist: {missing:?}");
}
