//! Semantic versions and constraints as skopeo's `images-by-semver` reads them
//! (Masterminds/semver v3): a tag is a version when it parses loosely (`v` prefix allowed,
//! minor and patch optional), and a constraint is `||`-separated groups of comparisons
//! joined by `,` or spaces (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `~>`, `^`, `x`/`*`
//! wildcards, `A - B` ranges). A version with a pre-release matches only a comparison that
//! names a pre-release itself, as in Masterminds.
//!
//! Written here rather than taken from the `semver` crate: that crate reads Cargo's
//! requirement syntax (`1.2` means `^1.2`), where Masterminds reads `1.2` as `1.2.x`, and the
//! YAML must mean what skopeo makes of it.

use std::cmp::Ordering;

/// A parsed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Major, minor, patch.
    pub nums: [u64; 3],
    /// Pre-release identifiers (after `-`), empty for a release.
    pub pre: Vec<String>,
}

impl Version {
    /// Parse like Masterminds' `NewVersion`: `v1`, `1.2`, `1.2.3-rc.1+build`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let (s, _meta) = match s.split_once('+') {
            Some((a, m)) if valid_idents(m) => (a, Some(m)),
            Some(_) => return None,
            None => (s, None),
        };
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) if valid_idents(p) => (c, p.split('.').map(str::to_string).collect::<Vec<_>>()),
            Some(_) => return None,
            None => (s, vec![]),
        };
        if pre.iter().any(|p| p.len() > 1 && p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        let mut nums = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            nums[i] = p.parse().ok()?;
        }
        Some(Version { nums, pre })
    }

    fn cmp_pre(a: &[String], b: &[String]) -> Ordering {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Greater,
            (false, true) => return Ordering::Less,
            _ => {}
        }
        for (x, y) in a.iter().zip(b) {
            let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                (Ok(i), Ok(j)) => i.cmp(&j),
                (Ok(_), Err(_)) => Ordering::Less,
                (Err(_), Ok(_)) => Ordering::Greater,
                _ => x.cmp(y),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.len().cmp(&b.len())
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Self) -> Ordering {
        self.nums.cmp(&o.nums).then_with(|| Version::cmp_pre(&self.pre, &o.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

fn valid_idents(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// One comparison: operator, version (wildcards as 0) and which parts were wildcards.
#[derive(Clone, Debug)]
struct Cmp {
    op: Op,
    v: Version,
    /// Parts given (1..=3); the rest were missing or `x`.
    given: usize,
}

/// A constraint: any group matches when all its comparisons do.
#[derive(Clone, Debug)]
pub struct Constraint {
    groups: Vec<Vec<Cmp>>,
}

impl Constraint {
    /// Parse a constraint; an error says which part is wrong.
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let mut groups = Vec::new();
        for g in s.split("||") {
            let g = g.trim();
            if g.is_empty() {
                return Err(format!("empty alternative in {s:?}"));
            }
            groups.push(parse_group(g).map_err(|e| format!("{e} in {s:?}"))?);
        }
        Ok(Constraint { groups })
    }

    /// Whether `v` satisfies the constraint.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| g.iter().all(|c| c.matches(v)))
    }
}

fn parse_group(g: &str) -> Result<Vec<Cmp>, String> {
    // hyphen ranges first: "A - B"
    let tokens: Vec<&str> = g.split([',', ' ']).map(str::trim).filter(|t| !t.is_empty()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if i + 2 < tokens.len() && tokens[i + 1] == "-" {
            let (a, ga) = parse_loose(t)?;
            let (b, gb) = parse_loose(tokens[i + 2])?;
            out.push(Cmp { op: Op::Ge, v: a, given: ga });
            out.push(Cmp { op: Op::Le, v: b, given: gb });
            i += 3;
            continue;
        }
        // an operator alone, followed by its version: ">= 1.2"
        let t = if is_op(t) && i + 1 < tokens.len() {
            i += 1;
            format!("{t}{}", tokens[i])
        } else {
            t.to_string()
        };
        out.push(parse_cmp(&t)?);
        i += 1;
    }
    if out.is_empty() {
        return Err("no comparison".into());
    }
    Ok(out)
}

fn is_op(t: &str) -> bool {
    matches!(t, "=" | "!=" | ">" | "<" | ">=" | "=>" | "<=" | "=<" | "~" | "~>" | "^")
}

fn parse_cmp(t: &str) -> Result<Cmp, String> {
    let ops: [(&str, Op); 11] = [
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("=>", Op::Ge),
        ("<=", Op::Le),
        ("=<", Op::Le),
        ("~>", Op::Tilde),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("~", Op::Tilde),
        ("^", Op::Caret),
        ("=", Op::Eq),
    ];
    let (op, rest) = ops.iter().find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r))).unwrap_or((Op::Eq, t));
    let (v, given) = parse_loose(rest.trim())?;
    Ok(Cmp { op, v, given })
}

/// A version in a constraint: parts may be missing or `x`/`X`/`*`.
fn parse_loose(s: &str) -> Result<(Version, usize), String> {
    let bad = || format!("{s:?} is not a version");
    let s = s.strip_prefix('v').unwrap_or(s);
    if s.is_empty() {
        return Err(bad());
    }
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) if valid_idents(p.split('+').next().unwrap_or(p)) => {
            (c, p.split('+').next().unwrap_or(p).split('.').map(str::to_string).collect())
        }
        Some(_) => return Err(bad()),
        None => (s.split('+').next().unwrap_or(s), vec![]),
    };
    let mut nums = [0u64; 3];
    let mut given = 0;
    for (i, p) in core.split('.').enumerate() {
        if i >= 3 {
            return Err(bad());
        }
        if matches!(p, "x" | "X" | "*") {
            break;
        }
        nums[i] = p.parse().map_err(|_| bad())?;
        given = i + 1;
    }
    Ok((Version { nums, pre }, given))
}

impl Cmp {
    /// Masterminds v3's comparison functions (constraints.go), one for one: `con` is the
    /// constraint's version with wildcards as 0; `given` says which parts were wildcards
    /// (`dirty`: some; `minor_dirty`: minor and patch; `patch_dirty`: patch).
    fn matches(&self, v: &Version) -> bool {
        let c = &self.v;
        let dirty = self.given < 3;
        let minor_dirty = self.given == 1;
        let patch_dirty = self.given == 2;
        let [vmaj, vmin, vpat] = v.nums;
        let [cmaj, cmin, cpat] = c.nums;
        // a pre-release matches only a comparison that names one (Masterminds issue 21)
        let pre_refused = !v.pre.is_empty() && c.pre.is_empty();
        let tilde = || {
            if pre_refused || v < c {
                return false;
            }
            if c.nums == [0, 0, 0] && !minor_dirty && !patch_dirty {
                return true;
            }
            vmaj == cmaj && (vmin == cmin || minor_dirty)
        };
        match self.op {
            Op::Ne => {
                if dirty {
                    if pre_refused {
                        return false;
                    }
                    if cmaj != vmaj {
                        return true;
                    }
                    if cmin != vmin && !minor_dirty {
                        return true;
                    } else if minor_dirty {
                        return false;
                    } else if cpat != vpat && !patch_dirty {
                        return true;
                    } else if patch_dirty {
                        if !v.pre.is_empty() || !c.pre.is_empty() {
                            return Version::cmp_pre(&v.pre, &c.pre) != Ordering::Equal;
                        }
                        return false;
                    }
                }
                v.cmp(c) != Ordering::Equal
            }
            Op::Gt => {
                if pre_refused {
                    false
                } else if !dirty {
                    v > c
                } else if vmaj != cmaj {
                    vmaj > cmaj
                } else if minor_dirty {
                    false
                } else if patch_dirty {
                    vmin > cmin
                } else {
                    v > c
                }
            }
            Op::Lt => !pre_refused && v < c,
            Op::Ge => !pre_refused && v >= c,
            Op::Le => {
                if pre_refused {
                    false
                } else if !dirty {
                    v <= c
                } else {
                    !(vmaj > cmaj || (vmaj == cmaj && vmin > cmin && !minor_dirty))
                }
            }
            Op::Tilde => tilde(),
            Op::Eq => {
                if pre_refused {
                    false
                } else if dirty {
                    tilde()
                } else {
                    v.cmp(c) == Ordering::Equal
                }
            }
            Op::Caret => {
                if pre_refused || v < c {
                    return false;
                }
                if cmaj > 0 || minor_dirty {
                    return vmaj == cmaj;
                }
                if vmaj > 0 {
                    return false;
                }
                if cmin > 0 || patch_dirty {
                    return vmin == cmin;
                }
                if vmin > 0 {
                    return false;
                }
                cpat == vpat
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: &str, v: &str) -> bool {
        Constraint::parse(c).unwrap().matches(&Version::parse(v).unwrap())
    }

    #[test]
    fn versions_parse_loosely() {
        assert_eq!(Version::parse("v1.2").unwrap().nums, [1, 2, 0]);
        assert_eq!(Version::parse("3").unwrap().nums, [3, 0, 0]);
        assert_eq!(Version::parse("1.2.3-rc.1+b5").unwrap().pre, ["rc", "1"]);
        for bad in ["latest", "1.2.3.4", "", "1..2", "v", "1.2-", "sha256-abc.sig"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
        assert!(Version::parse("1.2.3-rc.1").unwrap() < Version::parse("1.2.3").unwrap());
        assert!(Version::parse("1.2.3-rc.2").unwrap() < Version::parse("1.2.3-rc.10").unwrap());
    }

    #[test]
    fn constraints_as_masterminds_reads_them() {
        assert!(m(">= 1.1.0, < 2", "1.5.0"));
        assert!(!m(">= 1.1.0, < 2", "2.0.0"));
        assert!(!m(">= 1.1.0, < 2", "1.0.9"));
        assert!(m(">=1.1 <2", "v1.1"));
        assert!(m("1.2", "1.2.7") && !m("1.2", "1.3.0"));
        assert!(m("1.2.x", "1.2.0") && !m("1.2.x", "1.1.9"));
        assert!(m("~1.2.3", "1.2.9") && !m("~1.2.3", "1.3.0"));
        assert!(m("^1.2.3", "1.9.0") && !m("^1.2.3", "2.0.0"));
        assert!(m("^0.2.3", "0.2.9") && !m("^0.2.3", "0.3.0"));
        assert!(m("1.0 - 1.4", "1.4.9") && !m("1.0 - 1.4", "1.5.0"));
        assert!(m("<1 || >=3", "0.5.0") && m("<1 || >=3", "3.1.0") && !m("<1 || >=3", "2.0.0"));
        assert!(m(">1.2", "1.3.0") && !m(">1.2", "1.2.9"));
        assert!(m("!=1.2.3", "1.2.4") && !m("!=1.2.3", "1.2.3"));
        assert!(m("*", "4.0.0"));
        // pre-releases only when the constraint names one
        assert!(!m(">=1.0.0", "1.5.0-rc.1"));
        assert!(m(">=1.5.0-rc.0", "1.5.0-rc.1"));
        assert!(Constraint::parse(">= nope").is_err());
    }
}
