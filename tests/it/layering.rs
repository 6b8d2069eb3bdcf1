//! The layering of `src/`, read from its `crate::` paths: the top-level modules
//! form no import cycle, and the pure or protocol-only rooms import only what
//! their job allows (ARCHITECTURE.md). A new `use crate::…` that breaks it fails
//! here, naming the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;

/// Top-level module → (module it names → the first place it does).
type Imports = BTreeMap<String, BTreeMap<String, String>>;

fn imports() -> Imports {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Imports::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Comments may name any module.
                let code = line.split("//").next().unwrap_or_default();
                for (at, _) in code.match_indices("crate::") {
                    let name: String = code[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name.is_empty() || name == module {
                        continue;
                    }
                    out.entry(module.clone())
                        .or_default()
                        .entry(name)
                        .or_insert_with(|| format!("src/{}:{}", rel.display(), n + 1));
                }
            }
        }
    }
    out
}

#[test]
fn the_top_level_modules_form_no_import_cycle() {
    let imports = imports();
    let mut graph = DiGraphMap::<&str, ()>::new();
    for (from, tos) in &imports {
        graph.add_node(from);
        for to in tos.keys() {
            graph.add_edge(from, to, ());
        }
    }
    let cycles: Vec<String> = tarjan_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let members: BTreeSet<&str> = scc.iter().copied().collect();
            let edges: Vec<String> = members
                .iter()
                .flat_map(|from| {
                    imports[*from]
                        .iter()
                        .filter(|(to, _)| members.contains(to.as_str()))
                        .map(move |(to, at)| format!("{from} -> {to} ({at})"))
                })
                .collect();
            edges.join("; ")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_pure_and_protocol_rooms_import_only_what_their_job_allows() {
    let imports = imports();
    // module → what it may import (besides itself and external crates).
    let allowed: &[(&str, &[&str])] = &[
        // Pure logic: no I/O, no SQL, no protocol.
        ("engine", &["config", "text"]),
        // All SQL, plain rows in and out.
        ("store", &["config", "text"]),
        // The session rules: pure, over the engine's events.
        ("session", &["config", "engine", "text"]),
        ("text", &[]),
        ("config", &["text"]),
    ];
    let mut wrong = Vec::new();
    for (module, may) in allowed {
        for (to, at) in imports.get(*module).into_iter().flatten() {
            if !may.contains(&to.as_str()) {
                wrong.push(format!("{module} imports {to} at {at}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
