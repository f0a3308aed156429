//! `COPY --chmod` / `ADD --chmod` values as BuildKit reads them (Dockerfile frontend 1.14+):
//! an octal mode up to `07777` replaces each copied file's mode; anything else is a symbolic
//! mode of chmod(1) (`u+x`, `go-w`, `a=rX`, `u=rw,g=r,o=`, `g=u`, `+t`), applied to each
//! copied file's own mode, with BSD `setmode` semantics and no umask (BuildKit uses
//! `dchapes/mode` with umask 0): `X` sets execute bits on directories and on files that
//! already have one, and a clause without a who (`+x`) means everyone.

use std::fmt;

/// Set-user-ID, set-group-ID and sticky.
const SUID: u32 = 0o4000;
const SGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
/// What `a` names (every bit but sticky), as BSD's `STANDARD_BITS`.
const STANDARD: u32 = SUID | SGID | 0o777;

/// One command of a parsed symbolic mode, applied in order.
#[derive(Clone, PartialEq, Eq)]
enum Cmd {
    /// Set these bits.
    Set(u32),
    /// Clear these bits.
    Clear(u32),
    /// Set these bits when the file is a directory or has an execute bit (`X`).
    SetX(u32),
    /// Copy the permission class `from` (`u`, `g` or `o`) onto the classes of `to` (bits of
    /// `0o444` saying u, g, o), clearing them first (`clear`) and/or setting (`set`).
    Copy { from: u8, to: u32, clear: bool, set: bool },
}

/// A `--chmod` value.
#[derive(Clone, PartialEq, Eq)]
pub struct Chmod(Value);

#[derive(Clone, PartialEq, Eq)]
enum Value {
    /// An octal mode: every copied file gets it.
    Octal(u32),
    /// A symbolic mode (its text, its commands), applied to each copied file's mode.
    Symbolic(String, Vec<Cmd>),
}

/// The step key spells an octal mode as before symbolic modes existed (`Some(420)`), so
/// cached `--chmod` steps keep their keys; a symbolic mode is its text.
impl fmt::Debug for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Value::Octal(m) => write!(f, "{m}"),
            Value::Symbolic(s, _) => write!(f, "{s:?}"),
        }
    }
}

impl Chmod {
    /// Read a `--chmod` value (not empty: an empty one is no `--chmod`). The error is
    /// BuildKit's message.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        let octal_err = || format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777");
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            // BuildKit: a value that looks numeric is octal or refused as such
            return match u32::from_str_radix(s, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod(Value::Octal(m))),
                _ => Err(octal_err()),
            };
        }
        parse_symbolic(s).map(|cmds| Chmod(Value::Symbolic(s.to_string(), cmds))).ok_or_else(|| {
            format!(
                "invalid chmod parameter: '{s}': invalid syntax (an octal mode, or a symbolic one such as u+x or go-w)"
            )
        })
    }

    /// The mode (permission bits, `0o7777`) a copied file of mode `mode` gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let cmds = match &self.0 {
            Value::Octal(m) => return *m,
            Value::Symbolic(_, cmds) => cmds,
        };
        let old = mode & 0o7777;
        let mut new = old;
        for c in cmds {
            match *c {
                Cmd::Set(b) => new |= b,
                Cmd::Clear(b) => new &= !b,
                Cmd::SetX(b) => {
                    if is_dir || old & 0o111 != 0 {
                        new |= b
                    }
                }
                Cmd::Copy { from, to, clear, set } => {
                    let value = match from {
                        b'u' => (new >> 6) & 7,
                        b'g' => (new >> 3) & 7,
                        _ => new & 7,
                    };
                    for (class, shift) in [(0o400, 6), (0o040, 3), (0o004, 0)] {
                        if to & class == 0 {
                            continue;
                        }
                        if clear {
                            // `=`: the class is emptied before the copy
                            new &= !((if set { 7 } else { value }) << shift);
                        }
                        if set {
                            new |= value << shift;
                        }
                    }
                }
            }
        }
        new & 0o7777
    }
}

/// chmod(1)'s symbolic grammar: clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` separated by
/// commas, into the commands [`Chmod::apply`] runs (BSD `setmode`, umask 0). None: not
/// that grammar.
fn parse_symbolic(s: &str) -> Option<Vec<Cmd>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut cmds = Vec::new();
    loop {
        let mut who = 0u32;
        while let Some(&c) = b.get(i) {
            who |= match c {
                b'a' => STANDARD,
                b'u' => SUID | 0o700,
                b'g' => SGID | 0o070,
                b'o' => 0o007,
                _ => break,
            };
            i += 1;
        }
        // one or more actions
        loop {
            let op = *b.get(i)?;
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            i += 1;
            let mut who = who;
            let (mut perm, mut perm_x) = (0u32, 0u32);
            let mut copied = false;
            while let Some(&c) = b.get(i) {
                match c {
                    b'r' => perm |= 0o444,
                    b'w' => perm |= 0o222,
                    b'x' => perm |= 0o111,
                    b'X' if op == b'-' => perm |= 0o111,
                    b'X' => perm_x = 0o111,
                    // set-id and sticky only when the who names more than "other"
                    b's' if who == 0 || who & !0o007 != 0 => perm |= SUID | SGID,
                    b't' if who == 0 || who & !0o007 != 0 => {
                        who |= STICKY;
                        perm |= STICKY;
                    }
                    b's' | b't' => {}
                    b'u' | b'g' | b'o' => {
                        if perm != 0 {
                            cmds.extend(action(op, who, perm));
                            perm = 0;
                        }
                        if perm_x != 0 {
                            cmds.push(Cmd::SetX(masked(who, perm_x)));
                            perm_x = 0;
                        }
                        let to = if who == 0 { 0o444 } else { who & 0o444 };
                        cmds.push(Cmd::Copy { from: c, to, clear: op != b'+', set: op != b'-' });
                        copied = true;
                    }
                    _ => break,
                }
                i += 1;
            }
            // `u=` empties u; after a copy (`g=u`) the copy did that
            if perm != 0 || (op == b'=' && !copied) {
                cmds.extend(action(op, who, perm));
            }
            if perm_x != 0 {
                cmds.push(Cmd::SetX(masked(who, perm_x)));
            }
            match b.get(i) {
                None => return Some(cmds),
                Some(b',') => {
                    i += 1;
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

/// The bits of `perm` a clause for `who` touches (no who: all of them, umask 0).
fn masked(who: u32, perm: u32) -> u32 {
    if who == 0 {
        perm
    } else {
        who & perm
    }
}

/// `+`, `-` or `=` of `perm` for `who`.
fn action(op: u8, who: u32, perm: u32) -> Vec<Cmd> {
    match op {
        b'+' => vec![Cmd::Set(masked(who, perm))],
        b'-' => vec![Cmd::Clear(masked(who, perm))],
        _ => vec![Cmd::Clear(if who == 0 { STANDARD } else { who }), Cmd::Set(masked(who, perm))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).apply(mode, dir)
    }

    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-w", 0o666, false), 0o644);
        assert_eq!(m("+x", 0o644, false), 0o755);
        assert_eq!(m("a=rX", 0o640, false), 0o444);
        assert_eq!(m("a=rX", 0o700, false), 0o555);
        assert_eq!(m("a=rX", 0o700, true), 0o555);
        assert_eq!(m("a=rX", 0o600, true), 0o555);
        assert_eq!(m("u=rw,g=r,o=", 0o777, false), 0o640);
        assert_eq!(m("g=u", 0o750, false), 0o770);
        assert_eq!(m("o=g", 0o751, false), 0o755);
        assert_eq!(m("go=u-w", 0o755, false), 0o755);
        assert_eq!(m("go=u-w", 0o700, false), 0o755);
        assert_eq!(m("u+x-w", 0o644, false), 0o544);
        assert_eq!(m("u+s", 0o755, false), 0o4755);
        assert_eq!(m("g+s", 0o755, true), 0o2755);
        assert_eq!(m("+t", 0o777, true), 0o1777);
        assert_eq!(m("o+t", 0o777, true), 0o777, "o alone sets no sticky bit");
        assert_eq!(m("a-x", 0o4755, false), 0o4644);
        assert_eq!(m("=", 0o4755, false), 0);
        assert_eq!(m("u=", 0o755, false), 0o055);
        assert_eq!(m("ug+rw,o-rwx", 0o604, false), 0o660);
        assert_eq!(m("a+X", 0o644, false), 0o644, "X: no execute bit, not a directory");
        assert_eq!(m("a+X", 0o744, false), 0o755);
        assert_eq!(m("a-X", 0o755, false), 0o644);
    }

    #[test]
    fn octal_modes_replace_and_bad_ones_are_refused() {
        assert_eq!(m("755", 0o600, false), 0o755);
        assert_eq!(m("0644", 0o777, true), 0o644);
        assert_eq!(m("7777", 0, false), 0o7777);
        for bad in ["64a", "8", "17777", "u+z", "x", "u", "u+x,", ",u+x", "a+r g+w", "ug"] {
            let e = Chmod::parse(bad);
            assert!(e.is_err(), "{bad} accepted");
        }
        assert!(Chmod::parse("64a").unwrap_err().contains("octal string and between 0 and 07777"));
        assert_eq!(format!("{:?}", Some(Chmod::parse("755").unwrap())), "Some(493)");
        assert_eq!(format!("{:?}", Some(Chmod::parse("u+x").unwrap())), "Some(\"u+x\")");
    }
}
