//! JSON documents judged by the official JSON schemas (vendored in the repository's
//! `tests/schemas/`: OCI image-spec, ModelPack config, CNAB bundle; the upstream commit of each
//! in its `VERSIONS`) with python's `jsonschema` from the venv `.ci/run` makes at
//! `target/pyvenv`. `$ref`s are resolved locally: every relative reference is rewritten to the
//! schema file it names, so nothing is fetched.
//!
//! Not for: judging hoist with its own parsers (that would be hoist judging itself).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The validator script: reads `SCHEMA_FILE<TAB>DOCUMENT_FILE` lines on stdin, prints one
/// `ok` or `FAIL <document>: <error>` line each. `SCHEMA_FILE#/$defs/NAME` validates against
/// one definition of a schema file.
const SCRIPT: &str = r##"
import json, pathlib, sys
import jsonschema
from referencing import Resource
from referencing.jsonschema import DRAFT4
from jsonschema_specifications import REGISTRY as METASCHEMAS

root = pathlib.Path(sys.argv[1]).resolve()

def absolute(node, here):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("id", "$id") and isinstance(v, str):
                continue
            if k == "$ref" and isinstance(v, str) and "://" not in v:
                f, _, frag = v.partition("#")
                target = (here / f).resolve() if f else here_file[0]
                v = target.as_uri() + "#" + frag
            out[k] = absolute(v, here)
        return out
    if isinstance(node, list):
        return [absolute(x, here) for x in node]
    return node

registry = METASCHEMAS
here_file = [None]
schemas = {}
for p in sorted(root.rglob("*.json")):
    if "fixtures" in p.parts:
        continue
    here_file[0] = p.resolve()
    s = absolute(json.loads(p.read_text()), p.parent)
    schemas[str(p.resolve())] = s
    registry = registry.with_resource(p.resolve().as_uri(), Resource.from_contents(s, default_specification=DRAFT4))

for line in sys.stdin:
    line = line.rstrip("\n")
    if not line:
        continue
    schema_file, doc = line.split("\t", 1)
    schema_file, _, fragment = schema_file.partition("#")
    schema = schemas[str(pathlib.Path(schema_file).resolve())]
    if fragment:
        # One definition of the file (`FILE#/$defs/NAME`), resolved in the file's own draft.
        schema = {"$schema": schema.get("$schema", ""), "$ref": pathlib.Path(schema_file).resolve().as_uri() + "#" + fragment}
        if not schema["$schema"]:
            del schema["$schema"]
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    v = cls(schema, registry=registry)
    try:
        instance = json.loads(pathlib.Path(doc).read_text())
        errors = sorted(v.iter_errors(instance), key=lambda e: list(e.path))
    except Exception as e:
        errors = [e]
    if errors:
        print("FAIL %s against %s: %s" % (doc, schema_file, "; ".join(getattr(e, "message", str(e)) for e in errors[:5])))
    else:
        print("ok")
    sys.stdout.flush()
"##;

/// The schemas vendored in the repository (`tests/schemas`, upstream commits in its
/// `VERSIONS`), so that a fresh clone judges the same way.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemas")
}

/// The python venv of the test judges: `$HOIST_PYVENV`, else the workspace's `target/pyvenv`,
/// which `.ci/run` makes (always there, whatever `CARGO_TARGET_DIR` says).
pub fn pyvenv_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HOIST_PYVENV") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyvenv")
}

/// Python with `jsonschema`, and the schemas.
pub struct Validator {
    python: PathBuf,
    script: PathBuf,
    schemas: PathBuf,
    _dir: tempfile::TempDir,
}

impl Validator {
    /// The venv's python with `jsonschema` and the vendored schemas, or `Err(why)` when the
    /// venv `.ci/run` makes is not there (tests install nothing themselves: a test that cannot
    /// find it skips, which fails under `CI=true`).
    pub fn new() -> Result<Validator, String> {
        let schemas = schemas_dir();
        let venv = pyvenv_dir();
        let python = venv.join("bin/python");
        let has_jsonschema =
            Command::new(&python).args(["-c", "import jsonschema, referencing"]).status().is_ok_and(|s| s.success());
        if !has_jsonschema {
            return Err(format!("no python with jsonschema at {} (.ci/run installs it)", python.display()));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let script = dir.path().join("hoist-validate.py");
        std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
        Ok(Validator { python, script, schemas, _dir: dir })
    }

    /// The schema file `rel` (`image-spec/image-manifest-schema.json`, or one definition of
    /// it: `hoist/json-output.schema.json#/$defs/copy`).
    pub fn schema(&self, rel: &str) -> PathBuf {
        self.schemas.join(rel)
    }

    /// Validate each `(schema, document)` pair; the failures, one line each (empty: all valid).
    pub fn validate(&self, pairs: &[(PathBuf, PathBuf)]) -> Vec<String> {
        use std::io::Write;
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .arg(&self.schemas)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the validator");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for (s, d) in pairs {
                writeln!(stdin, "{}\t{}", s.display(), d.display()).expect("write to the validator");
            }
        }
        let out = child.wait_with_output().expect("validator output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.lines().count() == pairs.len(),
            "validator failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.lines().filter(|l| *l != "ok").map(str::to_string).collect()
    }
}
