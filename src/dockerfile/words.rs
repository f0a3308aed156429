//! BuildKit's shell lexer for instruction arguments: variable expansion (`$V`, `${V}`,
//! `${V:-x}`, `${V-x}`, `${V:+x}`, `${V+x}`), quotes (single quotes keep everything, double
//! quotes expand) and the escape character, then splitting into words on unquoted blanks.

/// Variables visible to an instruction.
pub trait Vars {
    /// Value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expand and split `text` into words (quotes removed).
pub fn words(text: &str, vars: &dyn Vars, escape: char) -> Result<Vec<String>, String> {
    process(text, vars, escape, true)
}

/// Expand `text` as one word (quotes removed, blanks kept).
pub fn word(text: &str, vars: &dyn Vars, escape: char) -> Result<String, String> {
    Ok(process(text, vars, escape, false)?.concat())
}

/// Expand a heredoc's content as BuildKit does (its lexer with quotes kept): `$V` and
/// `${V...}` expand, a backslash takes the next character literally, quotes stay.
pub fn heredoc(text: &str, vars: &dyn Vars) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '$' => i = dollar(&chars, i, vars, '\\', &mut out)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn process(text: &str, vars: &dyn Vars, escape: char, split: bool) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if split && c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
            i += 1;
            continue;
        }
        in_word = true;
        if c == escape {
            if let Some(&n) = chars.get(i + 1) {
                cur.push(n);
                i += 2;
            } else {
                cur.push(c);
                i += 1;
            }
        } else if c == '\'' {
            let end = find(&chars, i + 1, '\'').ok_or("unmatched single quote")?;
            cur.extend(&chars[i + 1..end]);
            i = end + 1;
        } else if c == '"' {
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else { return Err("unmatched double quote".into()) };
                if d == '"' {
                    i += 1;
                    break;
                }
                if d == escape && matches!(chars.get(i + 1), Some('"' | '$') | Some('\\') | Some('`')) {
                    cur.push(chars[i + 1]);
                    i += 2;
                } else if d == '$' {
                    i = dollar(&chars, i, vars, escape, &mut cur)?;
                } else {
                    cur.push(d);
                    i += 1;
                }
            }
        } else if c == '$' {
            i = dollar(&chars, i, vars, escape, &mut cur)?;
        } else {
            cur.push(c);
            i += 1;
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn find(chars: &[char], from: usize, c: char) -> Option<usize> {
    (from..chars.len()).find(|&j| chars[j] == c)
}

/// Expand the `$…` at `chars[i]` into `out`; returns the index after it.
fn dollar(chars: &[char], i: usize, vars: &dyn Vars, escape: char, out: &mut String) -> Result<usize, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let mut j = i + 2;
            let s = j;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[s..j].iter().collect();
            if name.is_empty() {
                return Err("bad substitution: ${} needs a name".into());
            }
            match chars.get(j) {
                Some('}') => {
                    out.push_str(&vars.get(&name).unwrap_or_default());
                    Ok(j + 1)
                }
                Some(&op) => {
                    let colon = op == ':';
                    let k = if colon { j + 1 } else { j };
                    let kind = *chars.get(k).ok_or("bad substitution")?;
                    if !matches!(kind, '-' | '+' | '?') {
                        return Err(format!("unsupported substitution ${{{name}{op}…}}"));
                    }
                    // the word runs to the matching `}`
                    let mut depth = 1;
                    let mut e = k + 1;
                    while e < chars.len() {
                        match chars[e] {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        e += 1;
                    }
                    if e >= chars.len() {
                        return Err("missing } in substitution".into());
                    }
                    let inner: String = chars[k + 1..e].iter().collect();
                    let val = vars.get(&name);
                    let set = if colon { val.as_deref().is_some_and(|v| !v.is_empty()) } else { val.is_some() };
                    match kind {
                        '-' if set => out.push_str(&val.unwrap_or_default()),
                        '-' => out.push_str(&word(&inner, vars, escape)?),
                        '+' if set => out.push_str(&word(&inner, vars, escape)?),
                        '+' => {}
                        _ if set => out.push_str(&val.unwrap_or_default()),
                        _ => return Err(format!("{name}: {}", word(&inner, vars, escape)?)),
                    }
                    Ok(e + 1)
                }
                None => Err("missing } in substitution".into()),
            }
        }
        Some(&c) if is_name(c) => {
            let mut j = i + 1;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            out.push_str(&vars.get(&name).unwrap_or_default());
            Ok(j)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "A" => Some("1".into()),
            "E" => Some(String::new()),
            "S" => Some("x y".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_forms() {
        let w = |s| word(s, &env, '\\').unwrap();
        assert_eq!(w("$A-${A}-${B:-d}-${E:-d}-${E-d}-${A:+p}-${B:+p}-${E+p}"), "1-1-d-d--p--p");
        assert_eq!(w("'$A' \"$A\" \\$A $"), "$A 1 $A $");
        assert_eq!(w("${B:-${A}x}"), "1x");
        assert!(word("${A", &env, '\\').is_err());
        assert!(word("'x", &env, '\\').is_err());
    }

    #[test]
    fn heredoc_content_keeps_quotes() {
        assert_eq!(heredoc("\"q $A\" '$A'\n", &env).unwrap(), "\"q 1\" '1'\n");
        assert_eq!(heredoc("\\\n\\\\\n\\$\n", &env).unwrap(), "\n\\\n$\n");
    }

    #[test]
    fn splitting_keeps_quoted_blanks_and_expanded_values() {
        assert_eq!(words("a \"b c\" $S 'd e'", &env, '\\').unwrap(), vec!["a", "b c", "x y", "d e"]);
        assert_eq!(words("K=\"v w\" L=1", &env, '\\').unwrap(), vec!["K=v w", "L=1"]);
        assert_eq!(words("a` b", &env, '`').unwrap(), vec!["a b"]);
    }
}
