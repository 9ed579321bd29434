//! The crate's top-level modules import one another in one direction only: no
//! circle through `crate::…` paths in non-test code (docs/architecture.md,
//! "Module map"). A new import that closes a circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
            let top = top.trim_end_matches(".rs").to_string();
            let name = path.file_name().unwrap().to_string_lossy();
            // The binary's commands sit on top of everything; tests may reach anywhere.
            if ["main", "lib", "cmd"].contains(&top.as_str()) || name == "tests.rs" || name == "mock.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let module: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !module.is_empty() && module != top {
                        g.entry(top.clone()).or_default().insert(module);
                    }
                }
            }
        }
    }
    g
}

/// A path from `from` back to `to`, if there is one.
fn path(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if from == to {
        return Some(vec![to.to_string()]);
    }
    if !seen.insert(from.to_string()) {
        return None;
    }
    for next in g.get(from).into_iter().flatten() {
        if let Some(mut p) = path(g, next, to, seen) {
            p.insert(0, from.to_string());
            return Some(p);
        }
    }
    None
}

#[test]
fn no_import_circles_between_top_level_modules() {
    let g = graph();
    assert!(
        g.contains_key("runner") && g["runner"].contains("controller"),
        "the scan sees imports: {g:?}"
    );
    for (module, uses) in &g {
        for used in uses {
            if let Some(back) = path(&g, used, module, &mut BTreeSet::new()) {
                panic!("import circle: {module} -> {}", back.join(" -> "));
            }
        }
    }
}
