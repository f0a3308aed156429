//! Model formats both ways: `model pack --to modelkit` writes KitOps ModelKits, and
//! `model convert` turns ModelKits, ModelPacks and Docker Model Runner artifacts into each
//! other keeping every layer blob (only the manifest and config are new). Judged by the
//! registry's own request log (what was uploaded), modelpack-client (PyPI) pulling the
//! converted ModelPack, the ModelPack JSON schema and `model unpack` restoring the files.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;
use crate::model::{layer_types_by_path, python_with, validates, write_gguf, write_safetensors};

/// Two weight shards (one in a subdirectory), a config.json, a readme and a script.
fn model_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_safetensors(&dir.join("model-00001-of-00002.safetensors"), &[("a", "BF16", &[64, 64])]);
    write_safetensors(&dir.join("sub/model-00002-of-00002.safetensors"), &[("b", "BF16", &[64, 32])]);
    std::fs::write(dir.join("config.json"), r#"{"model_type":"qwen3","architectures":["Qwen3ForCausalLM"]}"#).unwrap();
    std::fs::write(dir.join("README.md"), "# readme\n").unwrap();
    std::fs::write(dir.join("run.py"), "print('hi')\n").unwrap();
}

/// A manifest and its config from a registry, read with plain HTTP (not with hoist).
fn fetch(reg: &TestRegistry, repo: &str, reference: &str) -> (Value, Value) {
    let c = reqwest::blocking::Client::new();
    let m = c
        .get(format!("http://{}/v2/{repo}/manifests/{reference}", reg.host()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let m: Value = serde_json::from_slice(&m).unwrap();
    let config: Value = serde_json::from_slice(&config_bytes(reg, repo, &m)).unwrap();
    (m, config)
}

fn config_bytes(reg: &TestRegistry, repo: &str, m: &Value) -> Vec<u8> {
    reqwest::blocking::get(format!("http://{}/v2/{repo}/blobs/{}", reg.host(), m["config"]["digest"].as_str().unwrap()))
        .unwrap()
        .bytes()
        .unwrap()
        .to_vec()
}

fn layer_digests(m: &Value) -> Vec<String> {
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

fn media_types(m: &Value) -> Vec<String> {
    m["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap().to_string()).collect()
}

/// Blob uploads completed (each ends with one PUT of its upload session; a mount needs none)
/// and manifest PUTs since request `from`.
fn uploads_since(reg: &TestRegistry, from: usize) -> (Vec<String>, usize) {
    let reqs = reg.requests_now();
    let blob_puts: Vec<String> = reqs[from..]
        .iter()
        .filter(|q| q.path.contains("/blobs/uploads/") && q.method == "PUT")
        .map(|q| format!("{} {}", q.method, q.path))
        .collect();
    let manifest_puts = reqs[from..].iter().filter(|q| q.method == "PUT" && q.path.contains("/manifests/")).count();
    (blob_puts, manifest_puts)
}

#[test]
fn modelkit_to_modelpack_and_back_keeps_every_weight_digest_and_uploads_two_documents() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("m");
    model_dir(&model);
    let kit = format!("{}/kits/qwen:v1", reg.host());
    ok(
        "pack --to modelkit",
        hoist([
            "model",
            "pack",
            model.to_str().unwrap(),
            "--to",
            "modelkit",
            "--name",
            "qwen-tiny",
            "--license",
            "Apache-2.0",
            "--output",
            &format!("type=registry,name={kit}"),
        ]),
    );
    let (km, kc) = fetch(&reg, "kits/qwen", "v1");
    // The ModelKit manifest and its config (the Kitfile as JSON), as KitOps writes them.
    assert_eq!(km["artifactType"], "application/vnd.kitops.modelkit.manifest.v1+json", "{km}");
    assert_eq!(km["config"]["mediaType"], "application/vnd.kitops.modelkit.config.v1+json");
    let by_path = layer_types_by_path(&km);
    let kt = |k: &str| format!("application/vnd.kitops.modelkit.{k}.v1.raw");
    assert_eq!(by_path["model-00001-of-00002.safetensors"], kt("model"), "{by_path:?}");
    assert_eq!(by_path["sub/model-00002-of-00002.safetensors"], kt("modelpart"));
    assert_eq!(by_path["config.json"], kt("modelpart"));
    assert_eq!(by_path["README.md"], kt("docs"));
    assert_eq!(by_path["run.py"], kt("code"));
    assert_eq!(km["layers"].as_array().unwrap().iter().filter(|l| l["mediaType"] == kt("model")).count(), 1);
    assert_eq!(kc["manifestVersion"], "1.0.0", "{kc}");
    assert_eq!(kc["package"]["name"], "qwen-tiny");
    assert_eq!(kc["package"]["license"], "Apache-2.0");
    assert_eq!(kc["model"]["path"], "model-00001-of-00002.safetensors");
    assert_eq!(kc["model"]["format"], "safetensors");
    assert_eq!(kc["model"]["parameters"]["precision"], "bf16", "{kc}");
    // Every Kitfile entry names its layer by digest (what `kit unpack` checks).
    let mut named: Vec<String> = vec![kc["model"]["digest"].as_str().unwrap().to_string()];
    for e in kc["model"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(kc["code"].as_array().unwrap())
        .chain(kc["docs"].as_array().unwrap())
    {
        named.push(e["digest"].as_str().unwrap().to_string());
        assert_eq!(e["digest"], e["diffId"], "raw layer: diffId is its digest");
    }
    let mut want = layer_digests(&km);
    want.sort();
    named.sort();
    assert_eq!(named, want);
    // hoist reads it back.
    let out = t.join("from-kit");
    ok("unpack modelkit", hoist(["model", "unpack", &kit, out.to_str().unwrap()]));
    assert_eq!(file_digests(&out), file_digests(&model));

    // ModelKit -> ModelPack in another repository: two documents uploaded, layers mounted.
    let mp = format!("{}/packs/qwen:v1", reg.host());
    let from = reg.requests_now().len();
    ok("convert to modelpack", hoist(["model", "convert", &kit, &mp, "--to", "modelpack"]));
    let (blob_puts, manifest_puts) = uploads_since(&reg, from);
    assert_eq!(blob_puts.len(), 1, "only the config is uploaded: {blob_puts:?}\n{}", reg.log());
    assert_eq!(manifest_puts, 1);
    let (pm, pc) = fetch(&reg, "packs/qwen", "v1");
    assert_eq!(pm["artifactType"], "application/vnd.cncf.model.manifest.v1+json");
    assert_eq!(pm["config"]["mediaType"], "application/vnd.cncf.model.config.v1+json");
    assert_eq!(layer_digests(&pm), layer_digests(&km), "every layer blob kept");
    let mt = |k: &str| format!("application/vnd.cncf.model.{k}.v1.raw");
    let pm_types = layer_types_by_path(&pm);
    assert_eq!(pm_types["model-00001-of-00002.safetensors"], mt("weight"));
    assert_eq!(pm_types["sub/model-00002-of-00002.safetensors"], mt("weight"), "a weight shard is a weight again");
    assert_eq!(pm_types["config.json"], mt("weight.config"));
    assert_eq!(pm_types["README.md"], mt("doc"));
    assert_eq!(pc["descriptor"]["name"], "qwen-tiny", "{pc}");
    assert_eq!(pc["descriptor"]["licenses"][0], "Apache-2.0");
    assert_eq!(pc["config"]["precision"], "bf16");
    assert_eq!(pc["config"]["format"], "safetensors");
    assert_eq!(pc["modelfs"]["diffIds"].as_array().unwrap().len(), pm["layers"].as_array().unwrap().len());
    validates(hoist_testkit::test_name!(), &config_bytes(&reg, "packs/qwen", &pm));
    // A re-run uploads nothing at all.
    let from = reg.requests_now().len();
    ok("convert again", hoist(["model", "convert", &kit, &mp, "--to", "modelpack"]));
    assert_eq!(uploads_since(&reg, from).0.len(), 0, "{}", reg.log());

    // modelpack-client pulls the converted ModelPack and restores identical files.
    if let Some(py) = python_with(hoist_testkit::test_name!(), "modelpack_client") {
        let dest = t.join("mp-pulled");
        let out = Command::new(&py)
            .args(["-m", "modelpack_client", "--insecure", "pull", &mp, dest.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "modelpack pull: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(file_digests(&dest), file_digests(&model));
    }

    // ... and back to a ModelKit: the same blobs, the same KitOps media types.
    let kit2 = format!("{}/kits2/qwen:v1", reg.host());
    let from = reg.requests_now().len();
    ok("convert to modelkit", hoist(["model", "convert", &mp, &kit2, "--to", "modelkit"]));
    assert_eq!(uploads_since(&reg, from).0.len(), 1, "{}", reg.log());
    let (km2, kc2) = fetch(&reg, "kits2/qwen", "v1");
    assert_eq!(layer_digests(&km2), layer_digests(&km));
    assert_eq!(media_types(&km2), media_types(&km));
    assert_eq!(kc2["model"]["path"], kc["model"]["path"]);
    assert_eq!(kc2["package"], kc["package"]);
    let out = t.join("from-kit2");
    ok("unpack modelkit 2", hoist(["model", "unpack", &kit2, out.to_str().unwrap()]));
    assert_eq!(file_digests(&out), file_digests(&model));
}

#[test]
fn tar_layers_convert_with_their_diff_ids_and_a_store_pack_writes_a_modelkit() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("m");
    model_dir(&model);
    let store = t.join("store");
    let kit = format!("oci:{}:v1", t.join("kit").display());
    ok(
        "pack tar+gzip modelkit",
        hoist([
            "model",
            "pack",
            model.to_str().unwrap(),
            "--to",
            "modelkit",
            "--layer-format",
            "tar+gzip",
            "--store",
            store.to_str().unwrap(),
            "--output",
            &kit,
        ]),
    );
    let read = |dir: &Path| -> (Value, Value) {
        let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(d.strip_prefix("sha256:").unwrap())).unwrap();
        let m: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
        let c: Value = serde_json::from_slice(&blob(m["config"]["digest"].as_str().unwrap())).unwrap();
        (m, c)
    };
    let (km, kc) = read(&t.join("kit"));
    assert!(media_types(&km).iter().all(|m| m.ends_with(".v1.tar+gzip") && m.contains(".kitops.modelkit.")), "{km}");
    // A compressed layer's diffId is the digest of the tar inside.
    assert_ne!(kc["model"]["digest"], kc["model"]["diffId"], "{kc}");
    let mp = format!("oci:{}:v1", t.join("mp").display());
    ok("convert", hoist(["model", "convert", &kit, &mp]));
    let (pm, pc) = read(&t.join("mp"));
    assert_eq!(layer_digests(&pm), layer_digests(&km));
    assert!(media_types(&pm).iter().all(|m| m.ends_with(".v1.tar+gzip") && m.contains(".cncf.model.")), "{pm}");
    // The ModelPack diffIds are the Kitfile's, in layer order.
    let kit_ids: BTreeMap<String, String> = std::iter::once(&kc["model"])
        .chain(kc["model"]["parts"].as_array().unwrap())
        .chain(kc["code"].as_array().unwrap())
        .chain(kc["docs"].as_array().unwrap())
        .map(|e| (e["digest"].as_str().unwrap().into(), e["diffId"].as_str().unwrap().into()))
        .collect();
    let want: Vec<String> = layer_digests(&pm).iter().map(|d| kit_ids[d].clone()).collect();
    let got: Vec<String> =
        pc["modelfs"]["diffIds"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    assert_eq!(got, want);
    let out = t.join("restored");
    ok("unpack", hoist(["model", "unpack", &mp, out.to_str().unwrap()]));
    assert_eq!(file_digests(&out), file_digests(&model));

    // An older ModelKit whose Kitfile states no diffIds: each compressed layer is read once
    // and decompressed to compute its diffId, which must be the same.
    let old = t.join("old-kit");
    let mut layers = Vec::new();
    for l in km["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(t.join("kit/blobs/sha256").join(d)).unwrap();
        layers.push(blob(&old, l["mediaType"].as_str().unwrap(), &bytes, l["annotations"].clone()));
    }
    let stripped = serde_json::to_string(&kc).unwrap().replace("\"diffId\":", "\"x-diffId\":");
    let config = blob(&old, "application/vnd.kitops.modelkit.config.v1+json", stripped.as_bytes(), Value::Null);
    layout_with(&old, config, layers, Some("application/vnd.kitops.modelkit.manifest.v1+json"));
    let mp2 = t.join("mp2");
    let json = ok(
        "convert old kit",
        hoist([
            "--format",
            "json",
            "model",
            "convert",
            &format!("oci:{}:v1", old.display()),
            &format!("oci:{}:v1", mp2.display()),
        ]),
    );
    let v: Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert_eq!(v["convert"]["diffIdsComputed"].as_array().unwrap().len(), want.len(), "{v}");
    let (_, pc2) = read(&mp2);
    assert_eq!(pc2["modelfs"]["diffIds"], pc["modelfs"]["diffIds"]);
}

/// Write `bytes` as a blob of the OCI layout `dir`; its descriptor JSON.
fn blob(dir: &Path, media_type: &str, bytes: &[u8], annotations: Value) -> Value {
    let d = sha256(bytes);
    let p = dir.join("blobs/sha256").join(d.strip_prefix("sha256:").unwrap());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    let mut v = serde_json::json!({"mediaType": media_type, "digest": d, "size": bytes.len()});
    if !annotations.is_null() {
        v["annotations"] = annotations;
    }
    v
}

/// An OCI layout holding one manifest (tag `v1`) with this config and these layers.
fn layout_with(dir: &Path, config: Value, layers: Vec<Value>, artifact_type: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers});
    if let Some(a) = artifact_type {
        m["artifactType"] = a.into();
    }
    let mb = serde_json::to_vec(&m).unwrap();
    let md = blob(dir, "application/vnd.oci.image.manifest.v1+json", &mb, Value::Null);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": md["mediaType"], "digest": md["digest"],
        "size": md["size"], "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn docker_model_runner_artifact_converts_to_a_valid_modelpack() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("dmr");
    let gguf = t.join("model.gguf");
    write_gguf(&gguf, "llama", 15, &[("w", &[32, 32])]);
    let gguf_bytes = std::fs::read(&gguf).unwrap();
    let weights = blob(&src, "application/vnd.docker.ai.gguf.v3", &gguf_bytes, Value::Null);
    let license = blob(&src, "application/vnd.docker.ai.license", b"MIT License\n", Value::Null);
    let cfg = serde_json::json!({"config": {"format": "gguf", "quantization": "Q4_K_M", "parameters": "1.02 K",
        "architecture": "llama", "size": "2 KiB"}, "descriptor": {"created": "2025-03-01T10:00:00Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [weights["digest"], license["digest"]]}});
    let config =
        blob(&src, "application/vnd.docker.ai.model.config.v0.1+json", &serde_json::to_vec(&cfg).unwrap(), Value::Null);
    layout_with(&src, config, vec![weights.clone(), license.clone()], None);
    let mp = t.join("mp");
    ok(
        "convert docker",
        hoist(["model", "convert", &format!("oci:{}:v1", src.display()), &format!("oci:{}:v1", mp.display())]),
    );
    let index: Value = serde_json::from_slice(&std::fs::read(mp.join("index.json")).unwrap()).unwrap();
    let read = |d: &str| std::fs::read(mp.join("blobs/sha256").join(d.strip_prefix("sha256:").unwrap())).unwrap();
    let m: Value = serde_json::from_slice(&read(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(layer_digests(&m), [weights["digest"].as_str().unwrap(), license["digest"].as_str().unwrap()]);
    assert_eq!(media_types(&m), ["application/vnd.cncf.model.weight.v1.raw", "application/vnd.cncf.model.doc.v1.raw"]);
    let config_raw = read(m["config"]["digest"].as_str().unwrap());
    let c: Value = serde_json::from_slice(&config_raw).unwrap();
    assert_eq!(c["config"]["format"], "gguf", "{c}");
    assert_eq!(c["config"]["quantization"], "Q4_K_M");
    assert_eq!(c["config"]["architecture"], "llama");
    assert_eq!(c["descriptor"]["createdAt"], "2025-03-01T10:00:00Z");
    validates(hoist_testkit::test_name!(), &config_raw);
    // The layers got file paths, so the ModelPack unpacks to named files.
    let out = t.join("restored");
    ok("unpack", hoist(["model", "unpack", &format!("oci:{}:v1", mp.display()), out.to_str().unwrap()]));
    let files = file_digests(&out);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.values().any(|d| *d == sha256(&gguf_bytes)));

    // A layer of a media type no model format has is refused by its digest.
    let odd = t.join("odd");
    let w = blob(
        &odd,
        "application/vnd.kitops.modelkit.model.v1.raw",
        &gguf_bytes,
        serde_json::json!({"org.cncf.model.filepath": "model.gguf"}),
    );
    let mcpb = blob(&odd, "application/vnd.kitops.modelkit.mcpb.v1.raw", b"PK\x03\x04zip", Value::Null);
    let kf =
        serde_json::json!({"manifestVersion": "1.0.0", "package": {"name": "odd"}, "model": {"path": "model.gguf"}});
    let config =
        blob(&odd, "application/vnd.kitops.modelkit.config.v1+json", &serde_json::to_vec(&kf).unwrap(), Value::Null);
    layout_with(&odd, config, vec![w, mcpb.clone()], Some("application/vnd.kitops.modelkit.manifest.v1+json"));
    let out = hoist([
        "model",
        "convert",
        &format!("oci:{}:v1", odd.display()),
        &format!("oci:{}:v1", t.join("odd-mp").display()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(mcpb["digest"].as_str().unwrap()), "{err}");
}

/// Run `hoist ARGS` to its end; its exit status, stderr and peak resident set in KiB. The
/// peak is the kernel's (`ru_maxrss` of the child of a small python process: a child forked
/// from this test process would count the test's own pages, which a fork shares, as its own).
fn hoist_with_peak_rss(args: &[&str]) -> (bool, String, i64) {
    let script = "import resource, subprocess, sys\n\
                  r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n\
                  print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = Command::new("python3").arg("-c").arg(script).arg(hoist_bin()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = stdout.split_whitespace().map(|w| w.parse::<i64>().unwrap_or_else(|_| panic!("python: {stdout}")));
    let (code, peak) = (it.next().unwrap(), it.next().unwrap());
    (code == 0, String::from_utf8_lossy(&out.stderr).into_owned(), peak)
}

/// `model unpack` reads tar layers with the one bounded tar reader: a gzip tar layer whose
/// first header is a PAX record of 64 MiB is refused on the header's size, naming the layer,
/// with nothing written and a peak RSS below the record's size (the old reader buffered it
/// whole: 137 MiB of RSS). Peak RSS comes from the kernel, so load does not move it.
#[test]
fn model_unpack_refuses_a_64_mib_pax_header_in_bounded_memory() {
    const PAX: u64 = 64 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders.0/weights.bin").unwrap();
    h.set_mode(0o644);
    h.set_size(PAX);
    h.set_cksum();
    std::io::Write::write_all(&mut gz, h.as_bytes()).unwrap();
    let chunk = vec![b'1'; 1 << 20];
    for _ in 0..PAX >> 20 {
        std::io::Write::write_all(&mut gz, &chunk).unwrap();
    }
    let mut f = tar::Header::new_ustar();
    f.set_path("weights.bin").unwrap();
    f.set_mode(0o644);
    f.set_size(4);
    f.set_cksum();
    std::io::Write::write_all(&mut gz, f.as_bytes()).unwrap();
    std::io::Write::write_all(&mut gz, &[b'w'; 512]).unwrap();
    std::io::Write::write_all(&mut gz, &[0; 1024]).unwrap();
    let layer_bytes = gz.finish().unwrap();

    let src = t.join("m");
    let layer = blob(&src, "application/vnd.cncf.model.weight.v1.tar+gzip", &layer_bytes, Value::Null);
    let cfg = serde_json::json!({"descriptor": {}, "config": {"format": "safetensors"},
        "modelfs": {"type": "layers", "diffIds": [sha256(b"unused")]}});
    let config =
        blob(&src, "application/vnd.cncf.model.config.v1+json", &serde_json::to_vec(&cfg).unwrap(), Value::Null);
    layout_with(&src, config, vec![layer.clone()], Some("application/vnd.cncf.model.manifest.v1+json"));

    let out = t.join("out");
    let (ok, stderr, peak_kib) =
        hoist_with_peak_rss(&["model", "unpack", &format!("oci:{}:v1", src.display()), out.to_str().unwrap()]);
    assert!(!ok, "a 64 MiB PAX header must be refused: {stderr}");
    let digest = layer["digest"].as_str().unwrap();
    assert!(stderr.contains(digest), "the error names the layer: {stderr}");
    assert!(stderr.contains("PAX") && stderr.contains(&PAX.to_string()), "{stderr}");
    assert!(file_digests(&out).is_empty(), "nothing unpacked: {:?}", file_digests(&out));
    // Below the record's own size: it cannot have been held in memory (hoist's own footprint
    // here is tens of MiB, the old reader's peak 137 MiB).
    assert!(peak_kib * 1024 < PAX as i64, "peak RSS {peak_kib} KiB: the PAX record was buffered");
}
