//! The layers of `src/` (docs/architecture.md), enforced: a module may not import one above
//! it. The test reads every file under `src/`, finds each path into the crate (`crate::x`,
//! `crate::{x, y}`, a `super::` chain that leaves the top module), and fails naming the file
//! and line of every import a rule forbids. Comments are skipped; code in `#[cfg(test)]`
//! counts (a test that needs a higher layer belongs with that layer).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// `(module, what it must not import)`. `*` means anything outside `ALWAYS`.
const RULES: &[(&str, &[&str])] = &[
    ("model", &["*"]),
    ("sys", &["*"]),
    ("http1", &["*"]),
    (
        "metrics",
        &[
            "dataplane",
            "control",
            "api",
            "client",
            "discovery",
            "watchdog",
            "gateway",
            "queue",
        ],
    ),
    (
        "client",
        &[
            "control",
            "dataplane",
            "api",
            "watchdog",
            "gateway",
            "queue",
        ],
    ),
    (
        "dataplane",
        &[
            "control",
            "client",
            "api",
            "discovery",
            "watchdog",
            "gateway",
            "queue",
        ],
    ),
    (
        "watchdog",
        &[
            "dataplane",
            "control",
            "client",
            "api",
            "discovery",
            "metrics",
            "gateway",
            "queue",
        ],
    ),
    (
        "discovery",
        &["api", "control", "watchdog", "gateway", "queue"],
    ),
    (
        "queue",
        &["api", "control", "discovery", "watchdog", "gateway"],
    ),
    ("control", &["api", "gateway"]),
    ("api", &["gateway"]),
];

/// What every module may import: the bottom layer.
const ALWAYS: &[&str] = &["model", "sys"];

/// What `*` still allows, per module.
fn star_allows(module: &str, target: &str) -> bool {
    ALWAYS.contains(&target) || (module == "http1" && target == "config")
}

fn forbidden(module: &str, target: &str) -> bool {
    if module == target || ALWAYS.contains(&target) && module != "model" && module != "sys" {
        return false;
    }
    let Some((_, denied)) = RULES.iter().find(|(m, _)| *m == module) else {
        return false;
    };
    if denied.contains(&"*") {
        // The two leaves import nothing of the crate at all.
        if module == "model" || module == "sys" {
            return true;
        }
        return !star_allows(module, target);
    }
    denied.contains(&target)
}

/// The module path of a file: `src/control/local/spec.rs` -> `[control, local, spec]`,
/// `src/http1/mod.rs` -> `[http1]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a line, without its `//` comment (string literals holding `//` are rare in
/// `src/` and only shorten what is checked).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a line of `file` (module path `path`) reaches into.
fn targets(path: &[String], line: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        // `faasgate::crate::` does not occur; `$crate::` is a macro's own.
        let before = &rest[..i];
        let after = &rest[i + "crate::".len()..];
        if !before.ends_with('$')
            && !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        {
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{a::x, b}`: each first segment at depth 0.
                let mut depth = 0;
                let mut start = true;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && !c.is_whitespace() => {
                            out.insert(ident_at(&group[j..]).to_string());
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                out.insert(ident_at(after).to_string());
            }
        }
        rest = after;
    }
    // `super::super::x` from deep enough leaves the top module. (A `super::` inside an
    // inline `mod tests` of a `mod.rs` is read one level too high: it then names an item of
    // the module itself, never a top module that a rule denies.)
    let mut rest = line;
    while let Some(i) = rest.find("super::") {
        let before = &rest[..i];
        let mut after = &rest[i..];
        let mut ups = 0;
        while let Some(a) = after.strip_prefix("super::") {
            ups += 1;
            after = a;
        }
        if !before.ends_with("::") && ups >= path.len() {
            // Above the top module: `after` starts at the crate root.
            out.insert(ident_at(after).to_string());
        }
        rest = &rest[i + "super::".len()..];
    }
    out.retain(|t| !t.is_empty() && t != "self");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every forbidden import under `src`, as `file:line: module imports target`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let path = module_path(src, &file);
        let Some(module) = path.first() else { continue };
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for target in targets(&path, code(line)) {
                if forbidden(module, &target) {
                    found.push(format!(
                        "{}:{}: `{module}` must not import `{target}`: {}",
                        file.strip_prefix(src.parent().unwrap()).unwrap().display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "{} forbidden import(s) (see docs/architecture.md):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_each_form_of_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("model")).unwrap();
    fs::create_dir_all(src.join("http1")).unwrap();
    fs::create_dir_all(src.join("dataplane/deep")).unwrap();
    fs::write(
        src.join("model/types.rs"),
        "use crate::api::x;\n// use crate::control::y;\n",
    )
    .unwrap();
    fs::write(
        src.join("http1/pool.rs"),
        "use crate::{config::X, dataplane::{a, b}};\nuse crate::model::names;\nlet _ = crate::sys::clock::now_ms();\n",
    )
    .unwrap();
    fs::write(
        src.join("dataplane/deep/leaf.rs"),
        "use super::super::super::control::Scaler;\nuse super::super::table;\nfn f() { $crate::api::x }\n",
    )
    .unwrap();
    let found = violations(&src);
    let lines: Vec<&str> = found
        .iter()
        .map(|f| f.split(": `").next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "src/dataplane/deep/leaf.rs:1",
            "src/http1/pool.rs:1",
            "src/model/types.rs:1"
        ],
        "{found:#?}"
    );
    assert!(
        found[1].contains("must not import `dataplane`"),
        "{}",
        found[1]
    );
    assert!(
        !found.iter().any(|f| f.contains("`config`")),
        "http1 may read config"
    );
}
