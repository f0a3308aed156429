//! JSON documents judged by the official JSON schemas (`shared/schemas/`: OCI image-spec,
//! ModelPack config, CNAB bundle; versions in its `VERSIONS`) with python's `jsonschema`,
//! from a venv under the workspace's `target/pyvenv` that [`Validator::new`] creates
//! when missing (`.ci/run` creates it too). `$ref`s are resolved locally: every relative
//! reference is rewritten to the schema file it names, so nothing is fetched.
//!
//! Not for: judging hoist with its own parsers (that would be hoist judging itself).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The validator script: reads `SCHEMA_FILE<TAB>DOCUMENT_FILE` lines on stdin, prints one
/// `ok` or `FAIL <document>: <error>` line each.
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
    schema = schemas[str(pathlib.Path(schema_file).resolve())]
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

/// The schemas directory beside the work tree (`../shared/schemas`, or `$HOIST_SCHEMAS`).
pub fn schemas_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HOIST_SCHEMAS") {
        return Some(PathBuf::from(d));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().map(|a| a.join("shared/schemas")).find(|d| d.join("image-spec").is_dir())
}

/// The workspace's `target/` (where the venv lives): `$CARGO_TARGET_DIR` or `<workspace>/target`.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Python with `jsonschema`, and the schemas.
pub struct Validator {
    python: PathBuf,
    script: PathBuf,
    schemas: PathBuf,
}

impl Validator {
    /// The venv's python (the venv made and `jsonschema` installed when missing) and the
    /// schemas, or `Err(why)` when either cannot be had here.
    pub fn new() -> Result<Validator, String> {
        let schemas = schemas_dir().ok_or("no shared/schemas directory beside the work tree")?;
        let venv = target_dir().join("pyvenv");
        let python = venv.join("bin/python");
        let has_jsonschema = |py: &Path| {
            Command::new(py).args(["-c", "import jsonschema, referencing"]).status().is_ok_and(|s| s.success())
        };
        if !has_jsonschema(&python) {
            let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
            if !made.is_ok_and(|s| s.success()) {
                return Err(format!("python3 -m venv {} failed", venv.display()));
            }
            let pip = Command::new(venv.join("bin/pip")).args(["install", "-q", "jsonschema"]).status();
            if !pip.is_ok_and(|s| s.success()) || !has_jsonschema(&python) {
                return Err("pip install jsonschema into the venv failed".into());
            }
        }
        let script = venv.join("hoist-validate.py");
        std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
        Ok(Validator { python, script, schemas })
    }

    /// The schema file `rel` (`image-spec/image-manifest-schema.json`).
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
