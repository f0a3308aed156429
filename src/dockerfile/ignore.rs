//! `.dockerignore` (and `COPY --exclude`) rules as BuildKit reads them: which file is read,
//! its patterns (Go's `filepath.Match` per component, `**`), and "the last matching rule
//! wins", with `!` re-including.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Largest `.dockerignore` read.
const MAX_DOCKERIGNORE: u64 = 1 << 20;

/// One `.dockerignore` line.
#[derive(Clone, Debug)]
pub(crate) struct IgnoreRule {
    /// A `!` rule: re-includes what it matches.
    pub negate: bool,
    parts: Vec<String>,
}

/// The ignore file: `<Dockerfile>.dockerignore` beside the Dockerfile when there is one
/// (BuildKit), else the context's `.dockerignore`. A symlink is not followed (it could
/// point outside the context): it is taken as absent.
pub(crate) fn load_dockerignore(dockerfile: &Path, context: &Path) -> Result<Vec<IgnoreRule>> {
    let mut beside = dockerfile.as_os_str().to_owned();
    beside.push(".dockerignore");
    let beside = PathBuf::from(beside);
    let p = if beside.symlink_metadata().is_ok_and(|m| m.is_file()) { beside } else { context.join(".dockerignore") };
    read_ignore_file(&p)
}

/// The rules of the ignore file `p` (none when it is missing or not a regular file: a
/// symlink is never followed).
pub(crate) fn read_ignore_file(p: &Path) -> Result<Vec<IgnoreRule>> {
    let p = p.to_path_buf();
    if !p.symlink_metadata().is_ok_and(|m| m.is_file()) {
        return Ok(vec![]);
    }
    let Ok(f) = fs::File::open(&p) else { return Ok(vec![]) };
    let mut s = String::new();
    f.take(MAX_DOCKERIGNORE).read_to_string(&mut s).at(&p)?;
    if s.lines().any(|l| l.trim() == "!") {
        return Err(Error::malformed(".dockerignore", p.display().to_string(), "illegal exclusion pattern: \"!\""));
    }
    Ok(parse_ignore(&s))
}

impl IgnoreRule {
    /// One pattern taken as it is (no `!`, no comment): `COPY --parents`' include pattern.
    pub(crate) fn pattern(p: &str) -> IgnoreRule {
        IgnoreRule {
            negate: false,
            parts: p.split('/').filter(|c| !c.is_empty() && *c != ".").map(String::from).collect(),
        }
    }
}

pub(crate) fn parse_ignore(s: &str) -> Vec<IgnoreRule> {
    let mut out = Vec::new();
    for l in s.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (negate, pat) = match l.strip_prefix('!') {
            Some(p) => (true, p.trim()),
            None => (false, l),
        };
        let parts: Vec<String> = pat.split('/').filter(|c| !c.is_empty() && *c != ".").map(String::from).collect();
        if !parts.is_empty() {
            out.push(IgnoreRule { negate, parts });
        }
    }
    out
}

/// Whether context path `rel` is excluded: the last matching rule decides; a rule matching
/// a parent directory matches everything under it.
pub(crate) fn ignored(rules: &[IgnoreRule], rel: &str) -> bool {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut out = false;
    for r in rules {
        let hit = (1..=comps.len()).any(|n| match_parts(&r.parts, &comps[..n]));
        if hit {
            out = !r.negate;
        }
    }
    out
}

fn match_parts(pat: &[String], comps: &[&str]) -> bool {
    match pat.first() {
        None => comps.is_empty(),
        Some(p) if p == "**" => (0..=comps.len()).any(|k| match_parts(&pat[1..], &comps[k..])),
        Some(p) => !comps.is_empty() && fnmatch(p, comps[0]) && match_parts(&pat[1..], &comps[1..]),
    }
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]` (with `^`/`!`), `\\`.
pub(crate) fn fnmatch(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| rec(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some('[') => {
                let Some(&c) = n.first() else { return false };
                let mut i = 1;
                let neg = matches!(p.get(1), Some('^') | Some('!'));
                if neg {
                    i += 1;
                }
                let mut hit = false;
                let start = i;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
                        if p[i] <= c && c <= p[i + 2] {
                            hit = true;
                        }
                        i += 3;
                    } else {
                        if p[i] == c {
                            hit = true;
                        }
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false; // unterminated class
                }
                hit != neg && rec(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && rec(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && rec(&p[1..], &n[1..]),
        }
    }
    rec(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let r = parse_ignore("# c\n*.log\nbuild/\n!build/keep\n**/tmp\n");
        assert!(ignored(&r, "a.log"));
        assert!(!ignored(&r, "d/a.log"));
        assert!(ignored(&r, "build/x"));
        assert!(!ignored(&r, "build/keep"));
        assert!(ignored(&r, "x/y/tmp/z"));
        assert!(!ignored(&r, "src/main.rs"));
    }

    #[test]
    fn fnmatch_classes() {
        assert!(fnmatch("a*[0-9].t?t", "abc7.txt"));
        assert!(!fnmatch("[!a]x", "ax"));
        assert!(fnmatch("\\*", "*"));
        assert!(!fnmatch("[a", "a"));
    }
}
