//! The module graph stays acyclic: the crate's top-level modules (`source`, `sink`,
//! `pipeline`, `service`, `ops`, `backfill`, `config`, …) may depend on each other only one
//! way. Read from the source files: every `crate::<module>` a module names outside comments
//! and outside its `#[cfg(test)]` part is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::name` references in code lines (comments and the test part left out).
fn references(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut refs = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
}

/// The module graph of the library crate (binary-only modules left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .chain(lib.lines().filter_map(|l| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    assert!(modules.len() > 10, "modules read from lib.rs: {modules:?}");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .unwrap_or_default();
        if !modules.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        let e = edges.entry(top.clone()).or_default();
        e.extend(
            references(&text)
                .into_iter()
                .filter(|m| modules.contains(m) && *m != top),
        );
    }
    edges
}

/// A path from `from` back to `to`, if there is one.
fn path_to(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if !seen.insert(from.to_owned()) {
        return None;
    }
    for next in g.get(from).into_iter().flatten() {
        if next == to {
            return Some(vec![from.to_owned(), next.clone()]);
        }
        if let Some(mut p) = path_to(g, next, to, seen) {
            p.insert(0, from.to_owned());
            return Some(p);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    let mut cycles = Vec::new();
    for m in g.keys() {
        if let Some(p) = path_to(&g, m, m, &mut BTreeSet::new()) {
            cycles.push(p.join(" -> "));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    // The check sees real edges (a reader that finds none would pass vacuously).
    assert!(g["service"].contains("pipeline"), "{g:?}");
    assert!(g["pipeline"].contains("sink"), "{g:?}");
}

/// The per-source state is a lower floor: the service, the pipeline and the admin endpoint
/// use it, never the other way round (issue 16).
#[test]
fn status_depends_on_no_upper_layer() {
    let g = graph();
    let status = g.get("status").cloned().unwrap_or_default();
    for upper in [
        "service", "pipeline", "admin", "metrics", "sink", "source", "backfill", "ops",
    ] {
        assert!(
            !status.contains(upper),
            "status imports crate::{upper}: {status:?}"
        );
    }
    assert!(g["admin"].contains("status"), "{g:?}");
}

#[test]
fn references_skip_comments_and_tests() {
    let text = "use crate::a::X;\n// crate::b\n/// see [`crate::c`]\nfn f() { crate::d::g(); }\n#[cfg(test)]\nmod tests { use crate::e; }\n";
    let want: BTreeSet<String> = ["a", "d"].iter().map(|s| s.to_string()).collect();
    assert_eq!(references(text), want);
}
