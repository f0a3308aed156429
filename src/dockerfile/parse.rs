//! Dockerfile text → instructions, following BuildKit's frontend parser: parser directives
//! (`# escape=`, `# syntax=` noted and ignored), comments, line continuations with the escape
//! character, heredocs (`<<EOF`, `<<-EOF`, quoted terminators), exec (JSON) vs shell form and
//! leading `--flag[=value]` options. Words are not expanded here: that needs the stage's
//! variables and is [`super::words`]'s job.

use crate::error::{Error, Result};

/// Largest Dockerfile read (BuildKit has no limit; 4 MiB is far beyond any real file).
pub const MAX_DOCKERFILE_SIZE: usize = 4 * 1024 * 1024;
/// Most instructions in one Dockerfile.
pub const MAX_INSTRUCTIONS: usize = 10_000;

/// The instructions the frontend knows. Evaluation matches on it with no catch-all arm, so
/// a new instruction fails to compile until every step handles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// `ADD`
    Add,
    /// `ARG`
    Arg,
    /// `CMD`
    Cmd,
    /// `COPY`
    Copy,
    /// `ENTRYPOINT`
    Entrypoint,
    /// `ENV`
    Env,
    /// `EXPOSE`
    Expose,
    /// `FROM`
    From,
    /// `HEALTHCHECK`
    Healthcheck,
    /// `LABEL`
    Label,
    /// `MAINTAINER`
    Maintainer,
    /// `ONBUILD`
    Onbuild,
    /// `RUN`
    Run,
    /// `SHELL`
    Shell,
    /// `STOPSIGNAL`
    Stopsignal,
    /// `USER`
    User,
    /// `VOLUME`
    Volume,
    /// `WORKDIR`
    Workdir,
}

impl Keyword {
    /// Every instruction.
    pub const ALL: [Keyword; 18] = [
        Keyword::Add,
        Keyword::Arg,
        Keyword::Cmd,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Env,
        Keyword::Expose,
        Keyword::From,
        Keyword::Healthcheck,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Onbuild,
        Keyword::Run,
        Keyword::Shell,
        Keyword::Stopsignal,
        Keyword::User,
        Keyword::Volume,
        Keyword::Workdir,
    ];

    /// The keyword as written in Dockerfiles, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Add => "ADD",
            Keyword::Arg => "ARG",
            Keyword::Cmd => "CMD",
            Keyword::Copy => "COPY",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Env => "ENV",
            Keyword::Expose => "EXPOSE",
            Keyword::From => "FROM",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Label => "LABEL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Run => "RUN",
            Keyword::Shell => "SHELL",
            Keyword::Stopsignal => "STOPSIGNAL",
            Keyword::User => "USER",
            Keyword::Volume => "VOLUME",
            Keyword::Workdir => "WORKDIR",
        }
    }

    /// The instruction `word` names, in any case.
    pub fn parse(word: &str) -> Option<Keyword> {
        Keyword::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(word))
    }

    /// Its arguments may be written in exec (JSON array) form.
    fn json_form(self) -> bool {
        use Keyword::*;
        matches!(self, Run | Cmd | Entrypoint | Shell | Copy | Add | Volume | Healthcheck)
    }

    /// It may carry heredocs.
    fn heredoc_form(self) -> bool {
        matches!(self, Keyword::Run | Keyword::Copy | Keyword::Add)
    }

    /// It takes leading `--flag` options.
    fn flag_form(self) -> bool {
        use Keyword::*;
        matches!(self, From | Run | Copy | Add | Healthcheck)
    }
}

impl std::fmt::Display for Keyword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The arguments of an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// Exec form: `["a", "b"]`.
    Exec(Vec<String>),
    /// Shell form: the rest of the line as written (continuations joined).
    Shell(String),
}

/// A heredoc attached to an instruction (`<<EOF` … `EOF`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word (`EOF`).
    pub name: String,
    /// Content, ending in a newline unless empty.
    pub content: String,
    /// Variables are expanded in it (unquoted terminator).
    pub expand: bool,
}

/// One instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// The instruction (`COPY`).
    pub keyword: Keyword,
    /// `--name[=value]` options, in order.
    pub flags: Vec<(String, Option<String>)>,
    /// Everything after the flags.
    pub args: Args,
    /// Heredocs named in the arguments, in order.
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// Value of flag `name` (last one wins); `Some("")` for a bare `--name`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Every value of a repeatable flag (`--mount`).
    pub fn flag_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Refuse flags other than `allowed`.
    pub fn check_flags(&self, allowed: &[&str], file: &str) -> Result<()> {
        for (n, _) in &self.flags {
            if !allowed.contains(&n.as_str()) {
                return Err(err(file, self.line, format!("{} does not support --{n}", self.keyword)));
            }
        }
        Ok(())
    }

    /// The shell-form text, or the exec-form words joined by spaces.
    pub fn text(&self) -> String {
        match &self.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(v) => v.join(" "),
        }
    }
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// The `# syntax=` directive, if any (ignored: hoist is its own frontend).
    pub syntax: Option<String>,
    /// Instructions in order.
    pub instructions: Vec<Instruction>,
}

/// An error at `line` of `file`.
pub fn err(file: &str, line: usize, reason: impl ToString) -> Error {
    Error::malformed("Dockerfile", format!("{file}:{line}"), reason)
}

/// Parse Dockerfile text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile> {
    if text.len() > MAX_DOCKERFILE_SIZE {
        return Err(err(file, 1, format!("larger than {MAX_DOCKERFILE_SIZE} bytes")));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut df = Dockerfile { escape: '\\', ..Default::default() };
    let mut i = 0;
    // Parser directives: only at the very top, `# key=value`, each key once.
    let mut seen = Vec::new();
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else { break };
        if seen.contains(&k) {
            return Err(err(file, i + 1, format!("directive {k:?} given twice")));
        }
        seen.push(k.clone());
        match k.as_str() {
            "escape" => {
                df.escape = match v.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(err(file, i + 1, format!("escape must be \\ or `, not {v:?}"))),
                }
            }
            "syntax" => df.syntax = Some(v),
            _ => {} // `check=` and unknown directives: ignored like BuildKit does
        }
        i += 1;
    }
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim_start();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        // Join continuation lines; comment and empty lines inside are dropped.
        let mut logical = String::new();
        let mut cur = first.to_string();
        loop {
            let trimmed = cur.trim_end();
            if let Some(body) = trimmed.strip_suffix(df.escape) {
                logical.push_str(body);
                // Skip comments and blank lines inside a continuation.
                let mut next = None;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let t = l.trim_start();
                    if t.starts_with('#') || t.is_empty() {
                        continue;
                    }
                    next = Some(l.to_string());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                logical.push_str(&cur);
                break;
            }
        }
        let ins = parse_instruction(&logical, start + 1, file, &lines, &mut i)?;
        df.instructions.push(ins);
        if df.instructions.len() > MAX_INSTRUCTIONS {
            return Err(err(file, start + 1, format!("more than {MAX_INSTRUCTIONS} instructions")));
        }
    }
    Ok(df)
}

/// `# key=value` (lowercase key) or None.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?.trim();
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// One logical line (continuations joined) → instruction; heredoc bodies are read from
/// `lines` starting at `*next`, which moves past them.
fn parse_instruction(logical: &str, line: usize, file: &str, lines: &[&str], next: &mut usize) -> Result<Instruction> {
    let logical = logical.trim();
    let (word, rest) = match logical.find(char::is_whitespace) {
        Some(p) => (&logical[..p], logical[p..].trim_start()),
        None => (logical, ""),
    };
    let Some(keyword) = Keyword::parse(word) else {
        return Err(err(file, line, format!("unknown instruction {word:?}")));
    };
    let mut rest = rest;
    let mut flags = Vec::new();
    if keyword.flag_form() {
        while let Some(after) = rest.strip_prefix("--") {
            let end = flag_end(after);
            let flag = &after[..end];
            if flag.is_empty() {
                break;
            }
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(unquote(v))),
                None => (flag, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(err(file, line, format!("malformed flag --{flag}")));
            }
            flags.push((name.to_string(), value));
            rest = after[end..].trim_start();
        }
    }
    if keyword == Keyword::Onbuild {
        // The nested instruction is validated now and recorded as written.
        let mut dummy = lines.len();
        let inner = parse_instruction(rest, line, file, lines, &mut dummy)?;
        if matches!(inner.keyword, Keyword::Onbuild | Keyword::From | Keyword::Maintainer) {
            return Err(err(file, line, format!("ONBUILD {} is not allowed", inner.keyword)));
        }
        return Ok(Instruction { line, keyword, flags, args: Args::Shell(rest.to_string()), heredocs: vec![] });
    }
    let mut heredocs = Vec::new();
    let args = if keyword.json_form() && rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => Args::Exec(v),
            Err(_) => Args::Shell(rest.to_string()), // BuildKit: not JSON means shell form
        }
    } else {
        if keyword.heredoc_form() {
            for (name, expand, strip_tabs) in heredoc_names(rest) {
                let mut content = String::new();
                let mut closed = false;
                while *next < lines.len() {
                    let l = lines[*next];
                    *next += 1;
                    let l = if strip_tabs { l.trim_start_matches('\t') } else { l };
                    if l == name {
                        closed = true;
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                if !closed {
                    return Err(err(file, line, format!("heredoc <<{name} is not terminated")));
                }
                heredocs.push(Heredoc { name, content, expand });
            }
        }
        Args::Shell(rest.to_string())
    };
    if matches!(keyword, Keyword::Run | Keyword::Shell) && matches!(&args, Args::Exec(v) if v.is_empty()) {
        return Err(err(file, line, format!("{keyword} needs at least one argument")));
    }
    if keyword == Keyword::Shell && matches!(args, Args::Shell(_)) {
        return Err(err(file, line, "SHELL must be written in JSON form: SHELL [\"/bin/sh\", \"-c\"]"));
    }
    if rest.is_empty() && !matches!(keyword, Keyword::Cmd | Keyword::Entrypoint | Keyword::Run) {
        return Err(err(file, line, format!("{keyword} needs arguments")));
    }
    Ok(Instruction { line, keyword, flags, args, heredocs })
}

/// Length of a flag token: up to unquoted whitespace.
fn flag_end(s: &str) -> usize {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => return i,
            _ => {}
        }
    }
    s.len()
}

/// A flag value with one level of surrounding quotes removed.
fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// Heredoc openers in `rest`: (`name`, expand, strip leading tabs). `<<EOF`, `<<-EOF`,
/// `<<"EOF"`, `<<'EOF'`; `<<` followed by anything else (a shell `<<<` or `<< x`) is not one.
pub fn heredoc_names(rest: &str) -> Vec<(String, bool, bool)> {
    let b = rest.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'<' && b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') => {
                let mut j = i + 2;
                let strip = b.get(j) == Some(&b'-');
                if strip {
                    j += 1;
                }
                let q = match b.get(j) {
                    Some(&c @ (b'"' | b'\'')) => {
                        j += 1;
                        Some(c)
                    }
                    _ => None,
                };
                let s = j;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'.' | b'-')) {
                    j += 1;
                }
                let name = &rest[s..j];
                if let Some(q) = q {
                    if b.get(j) != Some(&q) {
                        i += 1;
                        continue;
                    }
                    j += 1;
                }
                if !name.is_empty() {
                    out.push((name.to_string(), q.is_none(), strip));
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Dockerfile {
        parse(s, "Dockerfile").unwrap()
    }

    #[test]
    fn directives_comments_continuations() {
        let df = p("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n# c\nRUN a `\n  # inside\n\n  b\n");
        assert_eq!(df.escape, '`');
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.instructions.len(), 2);
        assert_eq!(df.instructions[1].args, Args::Shell("a   b".into()));
        assert_eq!(df.instructions[1].line, 5);
        // a directive after an instruction is a comment
        let df = p("FROM x\n# escape=`\nRUN a \\\n b");
        assert_eq!(df.escape, '\\');
        assert_eq!(df.instructions[1].args, Args::Shell("a  b".into()));
    }

    #[test]
    fn exec_and_shell_forms_and_flags() {
        let df = p("from --platform=$BUILDPLATFORM img AS b\nCOPY --from=b --chown=1:2 --chmod=755 a /b\nCMD [\"x\", \"y\"]\nCMD [not json\nentrypoint echo hi");
        let i = &df.instructions;
        assert_eq!(i[0].keyword, Keyword::From);
        assert_eq!(i[0].flag("platform"), Some("$BUILDPLATFORM"));
        assert_eq!(i[0].args, Args::Shell("img AS b".into()));
        assert_eq!(i[1].flag("from"), Some("b"));
        assert_eq!(i[1].flag("chown"), Some("1:2"));
        assert_eq!(i[2].args, Args::Exec(vec!["x".into(), "y".into()]));
        assert_eq!(i[3].args, Args::Shell("[not json".into()));
        assert_eq!(i[4].keyword, Keyword::Entrypoint);
        let df = p("RUN --mount=type=cache,target=/c --network=host echo");
        assert_eq!(df.instructions[0].flag_all("mount").collect::<Vec<_>>(), vec!["type=cache,target=/c"]);
    }

    #[test]
    fn heredocs() {
        let df = p("FROM x\nRUN <<EOF\necho a\necho b\nEOF\nCOPY <<-\"A\" <<B /d/\n\tone $X\n\tA\ntwo\nB\nUSER u\n");
        let i = &df.instructions;
        assert_eq!(i.len(), 4);
        assert_eq!(
            i[1].heredocs,
            vec![Heredoc { name: "EOF".into(), content: "echo a\necho b\n".into(), expand: true }]
        );
        assert_eq!(i[2].heredocs[0], Heredoc { name: "A".into(), content: "one $X\n".into(), expand: false });
        assert_eq!(i[2].heredocs[1].content, "two\n");
        assert_eq!(i[3].keyword, Keyword::User);
        assert!(parse("RUN <<EOF\nx\n", "D").is_err());
        assert!(heredoc_names("cat <<< x; a << b").is_empty());
    }

    #[test]
    fn unknown_and_bad_instructions_name_the_line() {
        let e = parse("FROM x\n\nFOO bar\n", "ctx/Dockerfile").unwrap_err().to_string();
        assert!(e.contains("ctx/Dockerfile:3") && e.contains("FOO"), "{e}");
        assert!(parse("SHELL /bin/sh -c", "D").is_err());
        assert!(parse("ONBUILD FROM x", "D").is_err());
        assert!(parse("ONBUILD BOGUS x", "D").is_err());
        assert!(parse("FROM", "D").is_err());
        assert_eq!(p("ONBUILD RUN echo hi").instructions[0].args, Args::Shell("RUN echo hi".into()));
    }

    #[test]
    fn bounded_and_total_on_arbitrary_input() {
        assert!(parse(&"#".repeat(MAX_DOCKERFILE_SIZE + 1), "D").is_err());
        // Fuzz-ish: every prefix and many byte mutations of a rich file parse or fail, never panic.
        let base = "# escape=\\\nFROM --platform=x a AS b\nRUN <<-'E' \\\n cat\n\tx\n\tE\nCOPY [\"a\",\"b\"]\nONBUILD ADD <<X .\nENV A=\"1 2\" B=${C:-d}\n";
        let mut seed = 0x2545_f491_u64;
        for cut in 0..base.len() {
            if base.is_char_boundary(cut) {
                let _ = parse(&base[..cut], "D");
            }
        }
        let alphabet = b"\\`\"'<-[]#=\n\t $EOFRUN";
        for _ in 0..3000 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed as usize) % b.len();
                b[pos] = alphabet[(seed >> 32) as usize % alphabet.len()];
            }
            if let Ok(s) = std::str::from_utf8(&b) {
                let _ = parse(s, "D");
            }
        }
    }
}
