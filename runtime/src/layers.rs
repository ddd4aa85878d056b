//! Checks the crate's layering (DESIGN.md, "the rooms"): the top-level modules import one
//! another without circles, and the protocol core (`proto`) imports no other module of the
//! crate but the store's types, and does no IO of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read the source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a source file belongs to (`node` for `node/host.rs`).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under the root");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// For each top-level module, the other top-level modules its files name (`crate::x`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&root);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&root, f)).collect();
    let prefix = concat!("crate", "::");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let module = module_of(&root, file);
        if module == "layers" || module == "lib" || module == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        // Unit tests may use whatever helps them.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let named = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            let used: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if used != module && modules.contains(&used) {
                named.insert(used);
            }
            if let Some(list) = rest.strip_prefix('{') {
                let list = &list[..list.find('}').unwrap_or(0)];
                for word in list.split(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
                    if word != module && modules.contains(word) {
                        named.insert(word.to_string());
                    }
                }
            }
        }
    }
    graph
}

/// A circle through `from`, if there is one: the modules along it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == from {
                let mut found = path.clone();
                found.push(next.clone());
                return Some(found);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_without_circles() {
    let graph = imports();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    for module in graph.keys() {
        if let Some(found) = circle(&graph, module) {
            panic!("an import circle: {}", found.join(" -> "));
        }
    }
}

#[test]
fn proto_imports_only_the_stores_types_and_does_no_io() {
    let graph = imports();
    let proto = graph.get("proto").expect("a proto module");
    // The owner holds the objects the shell mapped (`store::ObjectBytes`); it never reads or
    // writes them through the store's IO. The seeded random source (`rng`) is arithmetic
    // alone, with no imports of its own: a node's peers are drawn from it.
    let allowed = BTreeSet::from(["store".to_string(), "rng".to_string()]);
    assert!(proto.is_subset(&allowed), "proto imports {proto:?}");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Unit tests (`#[cfg(test)]` blocks and `tests.rs` modules) may read the clock.
    let files = sources(&src.join("proto"));
    for file in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for banned in [
            "tokio",
            "std::fs",
            "std::net",
            "Instant::now",
            "SystemTime::now",
        ] {
            assert!(
                !code.contains(banned),
                "{} uses {banned}: proto does no IO and reads no clock",
                file.display()
            );
        }
    }
}

#[test]
fn a_circle_is_found() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    graph.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        circle(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(circle(&graph, "d"), None);
}
