//! Models: the ModelPack config hoist fills from safetensors and GGUF headers, config.json, a
//! Modelfile, a Kitfile and flags (each config judged by the ModelPack JSON schema through
//! python's `jsonschema`); selective unpack and `model diff`.
//!
//! Python tools (jsonschema, huggingface_hub, modelpack-client) come from the venv `.ci/run`
//! makes at `target/pyvenv` (or `$HOIST_PYVENV`); a test whose tool is missing says SKIP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::modelpack::{build_model, ModelSpec};
use hoist::transport::layout::Layout;
use hoist::transport::Source;

use crate::common::*;

/// The python of the test venv, when it exists.
pub fn venv_python() -> Option<PathBuf> {
    let dir = hoist_testkit::schemas::pyvenv_dir();
    let py = dir.join("bin/python");
    py.exists().then_some(py)
}

/// The venv's python when it can import `module`; `None` after a skip of `test` (a failure
/// under `CI=true`: `.ci/run` installs every module the tests import) if not.
pub fn python_with(test: &str, module: &str) -> Option<PathBuf> {
    let Some(py) = venv_python() else {
        hoist_testkit::tools::skip_note(test, false, "no python venv at target/pyvenv (.ci/run makes it)");
        return None;
    };
    let ok = Command::new(&py).args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success());
    if !ok {
        let why = format!("python module {module} not installed in {} (.ci/run installs it)", py.display());
        hoist_testkit::tools::skip_note(test, false, &why);
        return None;
    }
    Some(py)
}

/// Validate a ModelPack config against the ModelPack schema with python's jsonschema (with
/// format checks, so `createdAt` must be a date-time). Returns false (after a SKIP note) when
/// the validator is not installed.
pub fn validates(test: &str, config: &[u8]) -> bool {
    let Some(py) = python_with(test, "jsonschema") else { return false };
    let schema = hoist_testkit::schemas::schemas_dir().join("model-spec/config-schema.json");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), config).unwrap();
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
cls = jsonschema.validators.validator_for(schema)
cls(schema, format_checker=cls.FORMAT_CHECKER).validate(doc)
print("valid")
"#;
    let out = Command::new(py).args(["-c", script]).arg(&schema).arg(tmp.path()).output().unwrap();
    assert!(
        out.status.success(),
        "config does not validate: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(config)
    );
    true
}

/// A safetensors file: 8-byte LE header length, JSON header, then the tensor bytes.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[u64])]) {
    let size = |dt: &str| match dt {
        "F32" | "I32" => 4,
        "F16" | "BF16" | "I16" => 2,
        "F64" | "I64" => 8,
        _ => 1,
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0u64;
    for (name, dt, shape) in tensors {
        let n: u64 = shape.iter().product::<u64>() * size(dt);
        header
            .insert(name.to_string(), serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}));
        off += n;
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(&h);
    out.extend((0..off).map(|i| (i % 251) as u8));
    std::fs::write(path, out).unwrap();
}

fn gguf_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A GGUF v3 file with `general.architecture`, `general.file_type`, a string array (skipped
/// by the reader) and the given tensors (type Q4_K = 12), then padding and fake tensor data.
pub fn write_gguf(path: &Path, arch: &str, file_type: u32, tensors: &[(&str, &[u64])]) {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend(4u64.to_le_bytes());
    gguf_str(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    gguf_str(&mut b, arch);
    gguf_str(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(3u64.to_le_bytes());
    for t in ["<s>", "</s>", "hello"] {
        gguf_str(&mut b, t);
    }
    gguf_str(&mut b, "general.alignment");
    b.extend(4u32.to_le_bytes());
    b.extend(32u32.to_le_bytes());
    gguf_str(&mut b, "general.file_type");
    b.extend(4u32.to_le_bytes());
    b.extend(file_type.to_le_bytes());
    for (name, dims) in tensors {
        gguf_str(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(12u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend([7u8; 4096]);
    std::fs::write(path, b).unwrap();
}

async fn pack(spec: &ModelSpec, store: &Path) -> (Layout, hoist::model::descriptor::Descriptor) {
    let layout = Layout::create(store).unwrap();
    let root = build_model(&layout, spec).await.unwrap();
    (layout, root)
}

/// The config of the model manifest `root` in `layout`, as bytes and JSON.
async fn config_of(layout: &Layout, root: &hoist::model::descriptor::Descriptor) -> (Vec<u8>, serde_json::Value) {
    let doc = layout.fetch_document(root).await.unwrap();
    let m: serde_json::Value = serde_json::from_slice(&doc.bytes).unwrap();
    let digest = m["config"]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let bytes = std::fs::read(layout.root().join("blobs/sha256").join(digest)).unwrap();
    let v = serde_json::from_slice(&bytes).unwrap();
    (bytes, v)
}

#[tokio::test]
async fn safetensors_headers_and_config_json_describe_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    // Two shards, the parameter count summed over both.
    write_safetensors(&dir.join("model-00001-of-00002.safetensors"), &[("a", "BF16", &[32, 24]), ("b", "F32", &[8])]);
    write_safetensors(&dir.join("model-00002-of-00002.safetensors"), &[("c", "BF16", &[16, 48])]);
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","torch_dtype":"float32"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "# m\n").unwrap();
    let mut spec = ModelSpec::new(&dir);
    spec.source_date_epoch = Some(1_700_000_000);
    let (layout, root) = pack(&spec, &tmp.path().join("store")).await;
    let (bytes, c) = config_of(&layout, &root).await;
    // 768 + 8 + 768 = 1544 parameters -> 1.5K; BF16 holds the most -> bf16 (not torch_dtype).
    assert_eq!(c["config"]["paramSize"], "1.5K", "{c}");
    assert_eq!(c["config"]["precision"], "bf16");
    assert_eq!(c["config"]["format"], "safetensors");
    assert_eq!(c["config"]["architecture"], "Qwen3ForCausalLM");
    assert_eq!(c["descriptor"]["family"], "qwen3");
    assert_eq!(c["descriptor"]["createdAt"], "2023-11-14T22:13:20Z");
    validates(hoist_testkit::test_name!(), &bytes);
}

#[tokio::test]
async fn gguf_header_gives_quantization_architecture_and_params() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    // 4096*4096 + 4096*11008 + 32000*4096 = 193,986,560 -> 0.2B; file type 15 = Q4_K_M.
    write_gguf(
        &dir.join("llama.Q4_K_M.gguf"),
        "llama",
        15,
        &[
            ("blk.0.attn_q.weight", &[4096, 4096]),
            ("blk.0.ffn_up.weight", &[4096, 11008]),
            ("token_embd.weight", &[4096, 32000]),
        ],
    );
    let (layout, root) = pack(&ModelSpec::new(&dir), &tmp.path().join("store")).await;
    let (bytes, c) = config_of(&layout, &root).await;
    assert_eq!(c["config"]["format"], "gguf", "{c}");
    assert_eq!(c["config"]["quantization"], "Q4_K_M");
    assert_eq!(c["config"]["architecture"], "llama");
    assert_eq!(c["config"]["paramSize"], "0.2B");
    assert_eq!(c["descriptor"]["family"], "llama");
    assert!(c["config"].get("precision").is_none(), "{c}");
    validates(hoist_testkit::test_name!(), &bytes);

    // A float GGUF gives a precision and no quantization.
    let dir2 = tmp.path().join("m2");
    std::fs::create_dir(&dir2).unwrap();
    write_gguf(&dir2.join("m.gguf"), "qwen3", 32, &[("t", &[1000, 1000, 7])]);
    let (layout, root) = pack(&ModelSpec::new(&dir2), &tmp.path().join("store2")).await;
    let (_, c) = config_of(&layout, &root).await;
    assert_eq!(c["config"]["precision"], "bf16", "{c}");
    assert_eq!(c["config"]["paramSize"], "7M");
    assert!(c["config"].get("quantization").is_none());
}

#[tokio::test]
async fn modelfile_then_kitfile_then_flags_override_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    write_safetensors(&dir.join("weights/model.safetensors"), &[("a", "F16", &[10, 10])]);
    std::fs::write(dir.join("notes.xyz"), "x").unwrap();
    std::fs::write(dir.join("train.txt"), "data").unwrap();
    std::fs::write(
        dir.join("Modelfile"),
        "# modctl syntax\nNAME from-modelfile\nARCH transformer\nFAMILY qwen3\nPRECISION int8\nQUANTIZATION awq\nPARAMSIZE 0.6B\nDOC *.xyz\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Kitfile"),
        "manifestVersion: 1.0.0\npackage:\n  name: from-kitfile\n  version: 2.0.0\n  authors: [Jozu]\n  license: Apache-2.0\n  description: a kit\nmodel:\n  name: m\n  path: ./weights\n  framework: pytorch\ndatasets:\n  - name: train\n    path: train.txt\n",
    )
    .unwrap();
    let mut spec = ModelSpec::new(&dir);
    spec.precision = Some("fp16".into());
    let (layout, root) = pack(&spec, &tmp.path().join("store")).await;
    let (bytes, c) = config_of(&layout, &root).await;
    // Flags beat the Kitfile, the Kitfile beats the Modelfile, the Modelfile beats the files.
    assert_eq!(c["config"]["precision"], "fp16", "{c}");
    assert_eq!(c["descriptor"]["name"], "from-kitfile");
    assert_eq!(c["descriptor"]["version"], "2.0.0");
    assert_eq!(c["descriptor"]["authors"], serde_json::json!(["Jozu"]));
    assert_eq!(c["descriptor"]["licenses"], serde_json::json!(["Apache-2.0"]));
    assert_eq!(c["descriptor"]["description"], "a kit");
    assert_eq!(c["descriptor"]["family"], "qwen3");
    assert_eq!(c["config"]["architecture"], "transformer");
    assert_eq!(c["config"]["quantization"], "awq");
    assert_eq!(c["config"]["paramSize"], "0.6B");
    assert_eq!(c["config"]["format"], "safetensors");
    validates(hoist_testkit::test_name!(), &bytes);
    // Modelfile globs and Kitfile paths pick the layer kinds; neither file becomes a layer.
    let doc = layout.fetch_document(&root).await.unwrap();
    let m: serde_json::Value = serde_json::from_slice(&doc.bytes).unwrap();
    let kinds = layer_types_by_path(&m);
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("notes.xyz".to_string(), "application/vnd.cncf.model.doc.v1.raw".to_string()),
            ("train.txt".to_string(), "application/vnd.cncf.model.dataset.v1.raw".to_string()),
            ("weights/model.safetensors".to_string(), "application/vnd.cncf.model.weight.v1.raw".to_string()),
        ])
    );
}

#[test]
fn cli_flags_describe_and_pack_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &[("a", "F32", &[4, 4])]);
    let d = dir.to_str().unwrap();
    let out = hoist([
        "model",
        "describe",
        d,
        "--name",
        "n",
        "--family",
        "fam",
        "--arch",
        "transformer",
        "--model-format",
        "safetensors",
        "--param-size",
        "1B",
        "--precision",
        "fp8",
        "--quantization",
        "gptq",
        "--model-version",
        "1.0",
        "--author",
        "a",
        "--author",
        "b",
        "--license",
        "MIT",
        "--title",
        "T",
        "--description",
        "D",
        "--source-url",
        "https://example.com/m",
        "--revision",
        "abc",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["paramSize"], "1B");
    assert_eq!(v["config"]["precision"], "fp8");
    assert_eq!(v["config"]["quantization"], "gptq");
    assert_eq!(v["descriptor"]["authors"], serde_json::json!(["a", "b"]));
    assert_eq!(v["descriptor"]["sourceURL"], "https://example.com/m");
    assert_eq!(v["descriptor"]["revision"], "abc");
    assert_eq!(v["descriptor"]["title"], "T");
    // `describe` prints the config without layers; a packed one validates.
    let store = tmp.path().join("store");
    let out = hoist(["model", "pack", d, "--store", store.to_str().unwrap(), "--name", "n", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = r["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("blobs/sha256").join(digest)).unwrap()).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
    let config = std::fs::read(store.join("blobs/sha256").join(cd)).unwrap();
    validates(hoist_testkit::test_name!(), &config);
}

#[test]
fn sample_model_config_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-model");
    let out = hoist(["model", "describe", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["precision"], "fp32", "{v}");
    assert_eq!(v["config"]["paramSize"], "1K");
    assert_eq!(v["config"]["architecture"], "TinyModel");
    // The config blob of the packed sample model, as stored, passes the ModelPack schema.
    let store = tmp.path().join("store");
    let d = dir.to_str().unwrap();
    let out = hoist(["model", "pack", d, "--store", store.to_str().unwrap(), "--name", "n", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blob = |digest: &str| std::fs::read(store.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap()));
    let m: serde_json::Value = serde_json::from_slice(&blob(r["digest"].as_str().unwrap()).unwrap()).unwrap();
    let config = blob(m["config"]["digest"].as_str().unwrap()).unwrap();
    let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(c["config"]["architecture"], "TinyModel", "{c}");
    validates(hoist_testkit::test_name!(), &config);
}

/// A manifest's layers as `org.cncf.model.filepath` -> media type.
pub(crate) fn layer_types_by_path(manifest: &serde_json::Value) -> BTreeMap<String, String> {
    let layers = manifest["layers"].as_array().unwrap().iter();
    layers
        .map(|l| {
            let path = l["annotations"]["org.cncf.model.filepath"].as_str().unwrap();
            (path.to_string(), l["mediaType"].as_str().unwrap().to_string())
        })
        .collect()
}

fn run_ok(what: &str, out: std::process::Output) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A model directory with two weight shards, a config and a readme.
fn sample_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_safetensors(&dir.join("model-00001-of-00002.safetensors"), &[("a", "F16", &[64, 64])]);
    write_safetensors(&dir.join("sub/model-00002-of-00002.safetensors"), &[("b", "F16", &[64, 32])]);
    std::fs::write(dir.join("config.json"), r#"{"model_type":"t"}"#).unwrap();
    std::fs::write(dir.join("README.md"), "# readme\n").unwrap();
}

#[test]
fn unpack_fetches_only_matching_layers_and_lists() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("m");
    sample_dir(&model);
    let r = format!("{}/model:v1", reg.host());
    for fmt in ["raw", "tar"] {
        let r = format!("{r}-{fmt}");
        run_ok(
            "pack",
            hoist([
                "model",
                "pack",
                model.to_str().unwrap(),
                "--layer-format",
                fmt,
                "--store",
                t.join("store").to_str().unwrap(),
                "--output",
                &format!("type=registry,name={r}"),
            ]),
        );
        let list = run_ok("list", hoist(["model", "unpack", &r, "unused", "--list", "--include", "*.safetensors"]));
        let paths: Vec<&str> = list.lines().map(|l| l.rsplit('\t').next().unwrap()).collect();
        assert_eq!(paths, ["model-00001-of-00002.safetensors", "sub/model-00002-of-00002.safetensors"], "{list}");
        let before = reg.requests_now().iter().filter(|q| q.method == "GET" && q.path.contains("/blobs/")).count();
        let out = t.join(format!("out-{fmt}"));
        run_ok(
            "unpack",
            hoist(["model", "unpack", &r, out.to_str().unwrap(), "--include", "*.safetensors", "--exclude", "sub/*"]),
        );
        let want: BTreeMap<String, String> =
            file_digests(&model).into_iter().filter(|(k, _)| k == "model-00001-of-00002.safetensors").collect();
        assert_eq!(file_digests(&out), want);
        // One config-less blob GET: the one matching layer (manifests are not blobs).
        let after = reg.requests_now().iter().filter(|q| q.method == "GET" && q.path.contains("/blobs/")).count();
        assert_eq!(after - before, 1, "only the matching layer is fetched ({fmt})");
    }
}

#[test]
fn diff_lists_added_removed_changed_and_a_new_version_uploads_one_blob() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("m");
    sample_dir(&model);
    let store = t.join("store");
    let push = |tag: &str| {
        let r = format!("{}/model:{tag}", reg.host());
        run_ok(
            "pack",
            hoist([
                "model",
                "pack",
                model.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--output",
                &format!("type=registry,name={r}"),
            ]),
        );
        r
    };
    let a = push("v1");
    // v2: one shard changed, the readme removed, a file added.
    write_safetensors(&model.join("model-00001-of-00002.safetensors"), &[("a", "F16", &[64, 65])]);
    std::fs::remove_file(model.join("README.md")).unwrap();
    std::fs::write(model.join("NOTICE"), "n\n").unwrap();
    let puts_before =
        reg.requests_now().iter().filter(|q| q.method == "PUT" && q.path.contains("/blobs/uploads/")).count();
    let b = push("v2");
    let puts = reg.requests_now().iter().filter(|q| q.method == "PUT" && q.path.contains("/blobs/uploads/")).count()
        - puts_before;
    // The changed shard, the new file and the new config; the unchanged shard and config.json are not uploaded.
    assert_eq!(puts, 3, "{}", reg.log());
    // As diff(1): exit 1 when the models differ.
    let out = hoist(["model", "diff", &a, &b]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<String> = out.lines().map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
    lines.sort();
    // The shard changed, so the parameter count in the config did too.
    assert_eq!(
        lines,
        ["+ NOTICE", "- README.md", "~ config.paramSize:", "~ model-00001-of-00002.safetensors"],
        "{out}"
    );
}

#[test]
fn modelpack_client_pulls_identical_files() {
    let Some(py) = python_with(hoist_testkit::test_name!(), "modelpack_client") else { return };
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("m");
    sample_dir(&model);
    for fmt in ["raw", "tar"] {
        let r = format!("{}/mp/model:{fmt}", reg.host());
        let mut args = vec!["model", "pack", model.to_str().unwrap(), "--layer-format", fmt];
        let o = format!("type=registry,name={r}");
        args.extend(["--output", &o]);
        let store = t.join("store");
        if fmt == "tar" {
            args.extend(["--store", store.to_str().unwrap()]);
        }
        run_ok("pack", hoist(&args));
        let dest = t.join(format!("pulled-{fmt}"));
        let out = Command::new(&py)
            .args(["-m", "modelpack_client", "--insecure", "pull", &r, dest.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "modelpack pull ({fmt}): {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(file_digests(&dest), file_digests(&model), "{fmt}");
    }
}

/// `model pack` straight to a registry hashes each local file once, when it plans the model;
/// the upload does not hash it again but lets the registry check the digest at the final PUT
/// (`Source::hashed_itself`). A file that changes between the two is still refused, as a
/// digest mismatch naming the blob (the registry's refusal: were it hoist's own check, the
/// file would be hashed twice), and one that shrinks by its size; nothing of either is left
/// in the registry. Both upload modes (chunked: three PATCHes of 256 KiB and less).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_planning_is_refused_at_the_push() {
    use hoist::model::document::View;
    use hoist::transport::registry::{Client, RegistryOptions, UploadMode};
    use hoist::{CopyOptions, Destination, Error, NoProgress};

    let reg = tokio::task::spawn_blocking(TestRegistry::plain).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (name, upload) in [("monolithic", UploadMode::Monolithic), ("chunked", UploadMode::Chunked)] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let weights = dir.join("model.safetensors");
        write_safetensors(&weights, &[("w", "F16", &[512, 640])]);
        std::fs::write(dir.join("config.json"), r#"{"model_type":"t"}"#).unwrap();
        let opts = RegistryOptions {
            upload,
            upload_set: true,
            chunk_size: 256 << 10,
            chunk_size_set: true,
            ..Default::default()
        };
        let client = Client::new(opts).unwrap();
        let repo = |r: &str| client.repository(&format!("{}/m/{name}-{r}", reg.host()).parse().unwrap());
        let push = |plan, r: &'static str| {
            let dst = repo(r);
            async move {
                let plan: &dyn Source = plan;
                let root = plan.resolve(None).await.unwrap();
                hoist::copy::graph(plan, &dst, &root, &["v1".into()], &CopyOptions::default(), &NoProgress).await
            }
        };

        let plan = hoist::modelpack::plan_dir_model(&ModelSpec::new(&dir)).await.unwrap();
        let doc = plan.fetch_document(plan.root()).await.unwrap();
        let View::Manifest(m) = &doc.view else { panic!("a model is a manifest") };
        let layer = m
            .layers
            .iter()
            .find(|l| {
                l.annotations.get(hoist::model::media::ANNOTATION_MODEL_FILEPATH).map(String::as_str)
                    == Some("model.safetensors")
            })
            .unwrap()
            .clone();
        assert!(layer.size > 512 << 10, "{name}: more than two chunks");
        push(&plan, "ok").await.unwrap_or_else(|e| panic!("{name}: unchanged file: {e}"));
        assert!(repo("ok").has_blob(&layer).await.unwrap(), "{name}");

        // The same size, one byte different: only a digest tells.
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&weights, &bytes).unwrap();
        let e = push(&plan, "changed").await.expect_err("a changed file was pushed");
        assert!(matches!(e, Error::DigestMismatch { .. }), "{name}: {e}");
        assert!(e.to_string().contains(&layer.digest.to_string()), "{name}: names the blob: {e}");
        assert!(e.to_string().contains("refused the upload"), "{name}: the registry's check, not a second hash: {e}");
        assert!(!repo("changed").has_blob(&layer).await.unwrap(), "{name}: changed bytes stored");
        assert!(repo("changed").tags().await.map(|t| t.is_empty()).unwrap_or(true), "{name}: tagged");

        // One byte shorter: the size check on the way.
        std::fs::write(&weights, &bytes[..last]).unwrap();
        let e = push(&plan, "short").await.expect_err("a shortened file was pushed");
        assert!(matches!(e, Error::SizeMismatch { .. }), "{name}: {e}");
        assert!(e.to_string().contains(&layer.digest.to_string()), "{name}: names the blob: {e}");
        assert!(!repo("short").has_blob(&layer).await.unwrap(), "{name}: short bytes stored");
    }
    tokio::task::spawn_blocking(move || drop(reg)).await.unwrap();
}
