//! `docs/json.md` is the contract for `--format json`: every command's document is run here and
//! checked against the shape the table documents for it. A key the output has and the table
//! does not, or a documented key the output lacks (unless marked `"key"?`), fails; so does a
//! table row no command here exercises, unless it is in `NOT_RUN` with its reason. The docs
//! and the output cannot drift apart silently again.
//!
//! The same outputs are also judged by python's `jsonschema` against the JSON Schema of their
//! row (`tests/schemas/hoist/json-output.schema.json`, one `$defs` entry per row, with types:
//! digests, sizes, enums), and so are the `--metadata-file` documents of `build` and `copy`
//! and an error document.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A documented shape, parsed from the table's notation (`{"a", "b"?, "c": [{"d"}]}`).
#[derive(Clone, Debug)]
enum Shape {
    /// Keys with whether each is optional and the shape of its value, if the table says.
    Object(BTreeMap<String, (bool, Shape)>),
    /// Every element has this shape.
    Array(Box<Shape>),
    /// Not spelled out (a document of its own, a string, a number, prose).
    Any,
}

/// The notation, read leniently: quoted keys, `?` for optional, `: value`, `[..]`, `{..}`, and
/// prose anywhere in between (skipped). `A or B` in an array unites A's and B's keys.
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
        self.s.get(self.at).copied()
    }

    fn string(&mut self) -> String {
        assert_eq!(self.peek(), Some(b'"'));
        self.at += 1;
        let start = self.at;
        while self.s[self.at] != b'"' {
            self.at += 1;
        }
        self.at += 1;
        String::from_utf8_lossy(&self.s[start..self.at - 1]).into_owned()
    }

    /// Skip prose up to a `,` or closing bracket at this depth.
    fn skip_prose(&mut self) {
        let mut depth = 0i32;
        while let Some(&c) = self.s.get(self.at) {
            match c {
                b'"' => {
                    self.string();
                    continue;
                }
                b'(' | b'[' | b'{' | b'<' => depth += 1,
                b')' | b'>' if depth > 0 => depth -= 1,
                b']' | b'}' if depth > 0 => depth -= 1,
                b',' | b']' | b'}' if depth == 0 => return,
                _ => {}
            }
            self.at += 1;
        }
    }

    fn value(&mut self) -> Shape {
        match self.peek() {
            Some(b'{') => {
                let save = self.at;
                self.at += 1;
                if !matches!(self.peek(), Some(b'"') | Some(b'}')) {
                    // `{copy counters}`, `{descriptor}`: prose naming a shape.
                    self.at = save;
                    self.skip_prose_group();
                    return Shape::Any;
                }
                self.at = save;
                self.object()
            }
            Some(b'[') => {
                self.at += 1;
                let mut alternatives = Vec::new();
                loop {
                    match self.peek() {
                        Some(b']') | None => break,
                        Some(b'{') => alternatives.push(self.value()),
                        Some(b',') => self.at += 1,
                        _ => {
                            // prose (`digests`, `..`, `or`): skip a word (at least a byte)
                            self.at += 1;
                            while let Some(&c) = self.s.get(self.at) {
                                if c.is_ascii_whitespace() || matches!(c, b']' | b'{' | b',') {
                                    break;
                                }
                                self.at += 1;
                            }
                        }
                    }
                }
                self.at += 1;
                Shape::Array(Box::new(unite(alternatives)))
            }
            _ => {
                self.skip_prose();
                Shape::Any
            }
        }
    }

    fn skip_prose_group(&mut self) {
        let mut depth = 0;
        while let Some(&c) = self.s.get(self.at) {
            self.at += 1;
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    fn object(&mut self) -> Shape {
        assert_eq!(self.peek(), Some(b'{'));
        self.at += 1;
        let mut keys = BTreeMap::new();
        loop {
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return Shape::Object(keys);
                }
                Some(b',') => self.at += 1,
                Some(b'"') => {
                    let key = self.string();
                    let mut optional = false;
                    if self.s.get(self.at) == Some(&b'?') {
                        optional = true;
                        self.at += 1;
                    }
                    let shape = if self.peek() == Some(b':') {
                        self.at += 1;
                        self.value()
                    } else {
                        Shape::Any
                    };
                    self.skip_prose();
                    keys.insert(key, (optional, shape));
                }
                None => panic!("unclosed object in docs/json.md"),
                _ => {
                    let before = self.at;
                    self.skip_prose();
                    if self.at == before {
                        self.at += 1; // a stray `]` or `)`: every turn moves on
                    }
                }
            }
        }
    }
}

/// One shape for `A or B`: all keys of both, required only when both require them.
fn unite(alternatives: Vec<Shape>) -> Shape {
    let mut objects = alternatives.iter().filter_map(|s| match s {
        Shape::Object(k) => Some(k.clone()),
        _ => None,
    });
    let Some(mut all) = objects.next() else { return alternatives.into_iter().next().unwrap_or(Shape::Any) };
    for other in objects {
        for (k, v) in all.iter_mut() {
            if !other.contains_key(k) {
                v.0 = true;
            }
        }
        for (k, (_, s)) in other {
            all.entry(k).or_insert((true, s));
        }
    }
    Shape::Object(all)
}

/// The table of docs/json.md: first cell (as written) → the shape of its first `{..}`/`[..]`.
fn documented() -> BTreeMap<String, Shape> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md")).unwrap();
    let (mut rows, mut aliases) = (BTreeMap::new(), Vec::new());
    for line in doc.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| command") && !l.starts_with("| ---")) {
        let line = line.replace("\\|", "/");
        let cells: Vec<&str> = line.trim_matches('|').splitn(2, " | ").collect();
        let (label, doc) = (cells[0].trim().to_string(), cells[1]);
        let shape = doc
            .split('`')
            .skip(1)
            .step_by(2)
            .find(|c| c.starts_with('{') || c.starts_with('['))
            .map(|c| Parser { s: c.as_bytes(), at: 0 }.value())
            .unwrap_or(Shape::Any);
        rows.insert(label.clone(), shape);
        // "as `index create`": that row's shape.
        if let Some(other) = doc.trim().strip_prefix("as `").and_then(|r| r.split('`').next()) {
            aliases.push((label, format!("`{other}`")));
        }
    }
    for (label, other) in aliases {
        let shape = rows.get(&other).unwrap_or_else(|| panic!("{label}: docs/json.md has no row {other}")).clone();
        rows.insert(label, shape);
    }
    rows
}

/// What of `v` differs from `shape`, with JSON paths.
fn check(v: &Value, shape: &Shape, path: &str, problems: &mut Vec<String>) {
    match (shape, v) {
        (Shape::Any, _) => {}
        (Shape::Object(keys), Value::Object(o)) => {
            for (k, val) in o {
                match keys.get(k) {
                    None => problems.push(format!("{path}.{k}: in the output, not in docs/json.md")),
                    Some((_, s)) => check(val, s, &format!("{path}.{k}"), problems),
                }
            }
            for (k, (optional, _)) in keys {
                if !optional && !o.contains_key(k) {
                    problems.push(format!("{path}.{k}: documented, missing from the output (or mark it `?`)"));
                }
            }
        }
        (Shape::Array(e), Value::Array(a)) => {
            for (i, x) in a.iter().enumerate() {
                check(x, e, &format!("{path}[{i}]"), problems);
            }
        }
        (_, Value::Null) => {}
        (Shape::Object(_), _) => problems.push(format!("{path}: documented as an object, is {v}")),
        (Shape::Array(_), _) => problems.push(format!("{path}: documented as an array, is {v}")),
    }
}

/// Rows the run below does not exercise, each with why.
const NOT_RUN: &[(&str, &str)] = &[
    ("`bundle pull`", "needs a bundle in a registry; covered by cnab::"),
    ("copy counters (`report`)", "not a command: checked inside every `report` below"),
];

/// The definition in `tests/schemas/hoist/json-output.schema.json` of each row's document.
const ROW_SCHEMA: &[(&str, &str)] = &[
    ("`copy`, `push`, `pull`", "copy"),
    ("`copy`/`pull` to `type=…` (`--output` syntax)", "copyToOutputs"),
    ("copy counters (`report`)", "report"),
    ("`inspect`", "inspect"),
    ("`digest`", "digestCmd"),
    ("`tags`", "tags"),
    ("`referrers`", "referrers"),
    ("`login`", "login"),
    ("`logout`", "logout"),
    ("`layout fsck`", "layoutFsck"),
    ("`layout gc`", "layoutGc"),
    ("`build`, `artifact pack`, `model pack`", "build"),
    ("`artifact push`", "artifactPush"),
    ("`model describe`", "modelDescribe"),
    ("`model unpack`", "modelUnpack"),
    ("`model unpack --list`", "modelUnpackList"),
    ("`model diff`", "modelDiff"),
    ("`model convert`", "modelConvert"),
    ("`index create`", "indexCreate"),
    ("`bundle create`", "indexCreate"),
    ("`bundle inspect`", "bundleInspect"),
    ("`bundle pull`", "bundlePull"),
    ("`store ls`", "storeLs"),
    ("`store rm`", "storeRm"),
    ("`store prune`", "storePrune"),
    ("`version`", "version"),
    ("`key generate`", "keyGenerate"),
    ("`sign`", "sign"),
    ("`verify`", "verify"),
    ("`attest`", "attest"),
    ("`verify-attestation`", "verify"),
    ("`model sign`", "modelSign"),
    ("`model verify`", "modelVerify"),
    ("`sbom`", "sbom"),
    ("`sbom --attach`", "sbomAttach"),
    ("`sync`", "sync"),
    ("`tag`", "tag"),
    ("`untag`", "untag"),
    ("`delete`", "delete"),
    ("`catalog`", "catalog"),
    ("`retention`", "retention"),
];

struct Run {
    dir: PathBuf,
    config: PathBuf,
    documented: BTreeMap<String, Shape>,
    seen: BTreeSet<String>,
    problems: Vec<String>,
    /// Each document written out, with its definition in the JSON Schema.
    judged: Vec<(&'static str, PathBuf)>,
}

impl Run {
    /// `hoist --format json ARGS` (exit `want`), its stdout checked against `row`.
    fn json(&mut self, row: &str, args: &[&str], want: i32) -> Value {
        let out = hoist_cmd()
            .env("HOIST_STORE", self.dir.join("store"))
            .env("DOCKER_CONFIG", &self.config)
            .env("COSIGN_PASSWORD", "pw")
            .env_remove("REGISTRY_AUTH_FILE")
            .arg("--format")
            .arg("json")
            .args(args)
            .output()
            .unwrap();
        let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(want), "hoist {args:?}\n{so}\n{se}");
        let v: Value = serde_json::from_str(&so).unwrap_or_else(|e| panic!("hoist {args:?}: not JSON ({e}): {so}"));
        let shape = self.documented.get(row).unwrap_or_else(|| panic!("docs/json.md has no row {row}")).clone();
        let mut problems = Vec::new();
        check(&v, &shape, "", &mut problems);
        // The copy counters, wherever a `report` is.
        if let Some(counters) = self.documented.get("copy counters (`report`)").cloned() {
            for_each_report(&v, &mut |r, p| check(r, &counters, &format!("{p}.report"), &mut problems));
        }
        self.problems.extend(problems.into_iter().map(|p| format!("{row} (hoist {}): {p}", args.join(" "))));
        self.seen.insert(row.to_string());
        let def = ROW_SCHEMA
            .iter()
            .find(|(r, _)| *r == row)
            .unwrap_or_else(|| panic!("{row}: no definition in ROW_SCHEMA (add one to the JSON Schema)"))
            .1;
        self.judge(def, so.as_bytes());
        v
    }

    /// Keep `doc` for the JSON Schema definition `def`.
    fn judge(&mut self, def: &'static str, doc: &[u8]) {
        let file = self.dir.join(format!("judged-{}-{def}.json", self.judged.len()));
        std::fs::write(&file, doc).unwrap();
        self.judged.push((def, file));
    }

    /// `hoist --format json ARGS` failing: the error document on stdout, the exit code `want`.
    fn error(&mut self, args: &[&str], want: i32) {
        let out = hoist_cmd().arg("--format").arg("json").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(want), "hoist {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        self.judge("error", &out.stdout);
    }
}

#[test]
fn every_row_has_a_json_schema_definition() {
    let schema: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/hoist/json-output.schema.json"))
            .unwrap(),
    )
    .unwrap();
    for row in documented().keys() {
        let def = ROW_SCHEMA.iter().find(|(r, _)| r == row).unwrap_or_else(|| panic!("{row}: not in ROW_SCHEMA")).1;
        assert!(schema["$defs"].get(def).is_some(), "{row}: no $defs/{def} in the JSON Schema");
    }
}

fn for_each_report(v: &Value, f: &mut dyn FnMut(&Value, &str)) {
    fn walk(v: &Value, path: String, f: &mut dyn FnMut(&Value, &str)) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "report" {
                        f(x, &path);
                    } else {
                        walk(x, format!("{path}.{k}"), f);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), f);
                }
            }
            _ => {}
        }
    }
    walk(v, String::new(), f)
}

#[test]
fn the_table_parses_into_shapes() {
    let rows = documented();
    let Shape::Object(copy) = &rows["`copy`, `push`, `pull`"] else { panic!("copy: {:?}", rows) };
    assert!(copy.contains_key("roots") && !copy["roots"].0, "{copy:?}");
    let Shape::Array(roots) = &copy["roots"].1 else { panic!("{copy:?}") };
    let Shape::Object(root) = roots.as_ref() else { panic!("{roots:?}") };
    assert!(root["sourceDigest"].0 && !root["digest"].0, "{root:?}");
    let Shape::Object(ret) = &rows["`retention`"] else { panic!() };
    let Shape::Object(plan) = &ret["plan"].1 else { panic!("{ret:?}") };
    let Shape::Array(actions) = &plan["actions"].1 else { panic!("{plan:?}") };
    let Shape::Object(action) = actions.as_ref() else { panic!() };
    // `{"action", "tag", "digest"} or {"action", "digest", "tags", "reason"}`
    assert!(!action["action"].0 && !action["digest"].0 && action["tag"].0 && action["reason"].0, "{action:?}");
}

#[test]
fn every_json_output_has_the_documented_shape() {
    let t = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let secured = TestRegistry::start(RegistryOpts::auth("alice", "pw-4711"));
    let (host, dir) = (reg.host(), t.path().to_path_buf());
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut r = Run {
        dir: dir.clone(),
        config: dir.join("config"),
        documented: documented(),
        seen: BTreeSet::new(),
        problems: vec![],
        judged: vec![],
    };
    let sample = hoist_testkit::fixtures::sample_layout_dir();
    let multi = format!("oci:{}:multi", sample.display());
    let app = format!("{host}/app:v1");

    r.json("`version`", &["version"], 0);
    r.json("`copy`, `push`, `pull`", &["copy", "--metadata-file", &p("copy-meta.json"), &multi, &app], 0);
    r.error(&["digest", &format!("oci:{}:v1", p("no-such-layout"))], 3);
    r.json("`copy`, `push`, `pull`", &["copy", &multi, &format!("oci:{}:multi", p("layout"))], 0);
    r.json(
        "`copy`/`pull` to `type=…` (`--output` syntax)",
        &["--platform", "linux/amd64", "copy", &app, &format!("type=local,dest={}", p("fs"))],
        0,
    );
    r.json("`inspect`", &["inspect", &app], 0);
    r.json("`digest`", &["digest", &app], 0);
    r.json("`tags`", &["tags", &format!("{host}/app")], 0);
    r.json("`referrers`", &["referrers", &multi], 0);
    r.json("`login`", &["login", &secured.host(), "-u", "alice", "-p", "pw-4711"], 0);
    r.json("`logout`", &["logout", &secured.host()], 0);
    r.json("`layout fsck`", &["layout", "fsck", &p("layout")], 0);
    r.json("`layout gc`", &["layout", "gc", &p("layout")], 0);

    let toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hoist.toml");
    let built = format!("{host}/built:v1");
    r.json(
        "`build`, `artifact pack`, `model pack`",
        &[
            "build",
            "-f",
            toml.to_str().unwrap(),
            "--platform",
            "linux/amd64",
            "--output",
            &format!("type=registry,name={built}"),
            "--metadata-file",
            &p("build-meta.json"),
        ],
        0,
    );
    std::fs::write(dir.join("note.txt"), "hello\n").unwrap();
    r.json(
        "`build`, `artifact pack`, `model pack`",
        &[
            "artifact",
            "pack",
            &p("note.txt"),
            "--artifact-type",
            "application/vnd.example.note",
            "--output",
            &format!("type=oci,dest={}", p("art.tar")),
        ],
        0,
    );
    r.json(
        "`artifact push`",
        &[
            "artifact",
            "push",
            &format!("{host}/note:v1"),
            &p("note.txt"),
            "--artifact-type",
            "application/vnd.example.note",
        ],
        0,
    );

    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-model");
    let model = model_dir.to_str().unwrap();
    r.json("`model describe`", &["model", "describe", model], 0);
    for name in ["m1", "m2"] {
        r.json(
            "`build`, `artifact pack`, `model pack`",
            &["model", "pack", model, "--name", "sample", "--output", &format!("type=local-layout,dest={}", p(name))],
            0,
        );
    }
    let (m1, m2) = (format!("oci:{}", p("m1")), format!("oci:{}", p("m2")));
    r.json("`model unpack`", &["model", "unpack", &m1, &p("unpacked")], 0);
    r.json("`model unpack --list`", &["model", "unpack", "--list", &m1, &p("unpacked2")], 0);
    r.json("`model diff`", &["model", "diff", &m1, &m2], 0);
    r.json("`model convert`", &["model", "convert", "--to", "modelkit", &m1, &format!("oci:{}:kit", p("kit"))], 0);

    r.json("`index create`", &["index", "create", &app, "--tag", &format!("{host}/idx:v1")], 0);
    r.json(
        "`bundle create`",
        &[
            "bundle",
            "create",
            "--name",
            "hello",
            "--version",
            "0.1.0",
            "--invocation",
            &built,
            "--tag",
            &format!("oci:{}:v1", p("bundle")),
        ],
        0,
    );
    r.json("`bundle inspect`", &["bundle", "inspect", &format!("oci:{}:v1", p("bundle"))], 0);

    r.json("`store ls`", &["store", "ls"], 0);
    r.json("`store prune`", &["store", "prune"], 0);
    let listed = r.json("`store ls`", &["store", "ls"], 0);
    if let Some(tag) = listed["roots"].as_array().and_then(|a| a.iter().find_map(|x| x["tag"].as_str())) {
        let tag = tag.to_string();
        r.json("`store rm`", &["store", "rm", &tag], 0);
    }

    r.json("`key generate`", &["key", "generate", "--out", &p("cosign")], 0);
    r.json("`sign`", &["sign", "--key", &p("cosign.key"), &app], 0);
    r.json("`verify`", &["verify", "--key", &p("cosign.pub"), &app], 0);
    let predicate = dir.join("predicate.json");
    std::fs::write(&predicate, r#"{"note": "a test predicate"}"#).unwrap();
    let pred_type = "https://example.com/hoist-test/v1";
    r.json(
        "`attest`",
        &["attest", "--key", &p("cosign.key"), "--type", pred_type, "--predicate", &p("predicate.json"), &app],
        0,
    );
    r.json("`verify-attestation`", &["verify-attestation", "--key", &p("cosign.pub"), "--type", pred_type, &app], 0);
    let signed_model = dir.join("model-copy");
    copy_tree(&model_dir, &signed_model);
    let sm = signed_model.to_str().unwrap();
    r.json("`model sign`", &["model", "sign", "--key", &p("cosign.key"), "--signature", &p("model.sig"), sm], 0);
    r.json("`model verify`", &["model", "verify", "--key", &p("cosign.pub"), "--signature", &p("model.sig"), sm], 0);
    r.json("`sbom`", &["--platform", "linux/amd64", "sbom", &multi], 0);
    r.json("`sbom --attach`", &["--platform", "linux/amd64", "sbom", "--attach", &app], 0);

    r.json("`tag`", &["tag", &app, "v2", "v3"], 0);
    r.json("`untag`", &["untag", &format!("{host}/app:v3")], 0);
    r.json("`catalog`", &["catalog", &host], 0);
    r.json("`retention`", &["retention", "--dry-run", "--keep-last", "1", &format!("{host}/app")], 0);
    r.json(
        "`sync`",
        &["sync", "--src", "docker", "--dest", "docker", &format!("{host}/app"), &format!("{host}/mirror")],
        0,
    );
    let idx = r.json("`digest`", &["digest", &format!("{host}/idx:v1")], 0);
    r.json("`delete`", &["delete", "--force", &format!("{host}/idx@{}", idx["digest"].as_str().unwrap())], 0);

    let not_run: BTreeSet<&str> = NOT_RUN.iter().map(|(row, _)| *row).collect();
    let missing: Vec<&String> =
        r.documented.keys().filter(|row| !r.seen.contains(*row) && !not_run.contains(row.as_str())).collect();
    assert!(
        missing.is_empty(),
        "rows of docs/json.md no command here exercises (run them, or say why in NOT_RUN): {missing:?}"
    );
    assert!(r.problems.is_empty(), "--format json output and docs/json.md disagree:\n{}", r.problems.join("\n"));

    // The same documents, and the metadata files, judged by jsonschema against their definitions.
    for name in ["copy-meta.json", "build-meta.json"] {
        let doc = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("--metadata-file {name}: {e}"));
        r.judge("metadataFile", &doc);
    }
    let v = match hoist_testkit::schemas::Validator::new() {
        Ok(v) => v,
        Err(why) => hoist_testkit::skip!("the JSON Schema half: {why}"),
    };
    let pairs: Vec<(PathBuf, PathBuf)> = r
        .judged
        .iter()
        .map(|(def, file)| (v.schema(&format!("hoist/json-output.schema.json#/$defs/{def}")), file.clone()))
        .collect();
    let failures = v.validate(&pairs);
    assert!(
        failures.is_empty(),
        "{} of {} documents fail their JSON Schema:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n")
    );
}
