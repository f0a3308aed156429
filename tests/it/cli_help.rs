//! The `--help` of every command against a golden file (`tests/golden/help.txt`), so a
//! changed flag, default or example shows in review as a diff of what users read, and the
//! help cannot drift unnoticed (the JSON shapes have their golden check in `json_docs`, the
//! help's examples are run by `.ci/help-examples.sh`). After an intended change:
//! `HOIST_BLESS=1 cargo test --test it -- cli_help::` rewrites the file; commit it with the
//! change.

use std::path::PathBuf;

use crate::common::*;

/// `hoist PATH --help` at a fixed width.
fn help(path: &[String]) -> String {
    let out = hoist_cmd().env("COLUMNS", "100").args(path).arg("--help").output().expect("run hoist");
    assert!(out.status.success(), "hoist {} --help: {}", path.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// Every command path under `path`, depth first, in the order the help lists them.
fn commands(path: Vec<String>, into: &mut Vec<(Vec<String>, String)>) {
    let text = help(&path);
    let subs: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  ") || l.is_empty())
        .filter_map(|l| l.strip_prefix("  ").and_then(|l| l.split_whitespace().next()))
        .filter(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && *s != "help")
        .map(str::to_string)
        .collect();
    into.push((path.clone(), text));
    for sub in subs {
        let mut p = path.clone();
        p.push(sub);
        commands(p, into);
    }
}

#[test]
fn every_help_text_matches_the_golden_file() {
    let mut all = Vec::new();
    commands(Vec::new(), &mut all);
    assert!(all.len() > 40, "only {} commands found: the Commands: lists were not parsed", all.len());
    let mut got = String::new();
    for (path, text) in &all {
        let name = if path.is_empty() { "hoist".to_string() } else { format!("hoist {}", path.join(" ")) };
        got.push_str(&format!("===== {name} --help\n{text}\n"));
    }
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/help.txt");
    if std::env::var_os("HOIST_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    if got != want {
        let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
        let first = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
        let section = g[..first.min(g.len())].iter().rev().find(|l| l.starts_with("===== ")).unwrap_or(&"");
        panic!(
            "the help differs from tests/golden/help.txt at line {} (in {section}):\n  golden: {:?}\n  now:    {:?}\n\
             If the change is intended: HOIST_BLESS=1 cargo test --test it -- cli_help:: and commit the file.",
            first + 1,
            w.get(first).unwrap_or(&"<end>"),
            g.get(first).unwrap_or(&"<end>"),
        );
    }
}
