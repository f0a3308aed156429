//! OpenSSF model signing (issue 26, `hoist model sign` / `hoist model verify`), judged by the
//! `model-signing` package from PyPI (its CLI `model_signing sign key` / `verify key`, in the
//! venv .ci/run makes): it verifies what hoist signs, hoist verifies what it signs, and both
//! refuse a tampered file, naming it. The keys are made by Python `cryptography` (a key hoist
//! did not generate) and by `hoist key generate` (cosign's encrypted format).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

fn pyvenv() -> PathBuf {
    hoist_testkit::schemas::pyvenv_dir()
}

/// `model_signing ARGS` from the venv.
fn model_signing(args: &[&str]) -> Output {
    Command::new(pyvenv().join("bin/model_signing")).args(args).output().expect("run model_signing")
}

macro_rules! require_model_signing {
    () => {
        hoist_testkit::require!(pyvenv().join("bin/python").to_str().unwrap());
        if !pyvenv().join("bin/model_signing").is_file() {
            hoist_testkit::skip!("no model_signing in the venv (.ci/run installs model-signing)");
        }
    };
}

/// An ECDSA P-256 key pair written by Python `cryptography`: (PKCS#8 PEM, public PEM).
fn python_keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, public) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub")));
    let script = "import sys\nfrom cryptography.hazmat.primitives.asymmetric import ec\nfrom cryptography.hazmat.primitives import serialization as s\nk = ec.generate_private_key(ec.SECP256R1())\nopen(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\nopen(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n";
    let out = Command::new(pyvenv().join("bin/python"))
        .args(["-c", script, key.to_str().unwrap(), public.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success("python key generation", &out);
    (key, public)
}

/// A small model: weights in a subdirectory, a config, git files that are not signed.
fn write_model(dir: &Path) {
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"architectures":["Tiny"]}"#).unwrap();
    std::fs::write(dir.join("weights/model-00001.safetensors"), vec![1u8; 70_000]).unwrap();
    std::fs::write(dir.join("weights/model-00002.safetensors"), vec![2u8; 30_000]).unwrap();
    std::fs::write(dir.join("a.txt"), b"sorted after the directory a/ in the statement\n").unwrap();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/b.txt"), b"b\n").unwrap();
    std::fs::write(dir.join(".git/HEAD"), b"ref: refs/heads/main\n").unwrap();
    std::fs::write(dir.join(".gitattributes"), b"*.safetensors filter=lfs\n").unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn model_directories_interchange_with_the_model_signing_package() {
    require_model_signing!();
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("tiny-model");
    write_model(&model);
    let (key, public) = python_keys(t.path(), "py");

    // hoist signs (model.sig inside the model), model_signing verifies
    let out = ok("hoist model sign", hoist(["--format", "json", "model", "sign", "--key", s(&key), s(&model)]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["files"], 5, "{v}");
    let sig = model.join("model.sig");
    assert_success(
        "model_signing verifies hoist's model.sig",
        &model_signing(&["verify", "key", "--signature", s(&sig), "--public_key", s(&public), s(&model)]),
    );
    // the statement is the package's: predicate type, component-wise order, serialization
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    assert_eq!(bundle["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    use base64::Engine;
    let payload =
        base64::engine::general_purpose::STANDARD.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(st["predicateType"], "https://model_signing/signature/v1.0");
    assert_eq!(st["subject"][0]["name"], "tiny-model");
    let names: Vec<&str> =
        st["predicate"]["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["a/b.txt", "a.txt", "config.json", "weights/model-00001.safetensors", "weights/model-00002.safetensors"]
    );
    assert_eq!(st["predicate"]["serialization"]["method"], "files");
    assert!(st["predicate"]["serialization"]["ignore_paths"].as_array().unwrap().contains(&"model.sig".into()));
    ok("hoist verifies its own", hoist(["model", "verify", "--key", s(&public), s(&model)]));

    // model_signing signs (signature outside the model), hoist verifies
    let py_sig = t.path().join("py.sig");
    assert_success(
        "model_signing sign key",
        &model_signing(&["sign", "key", "--private_key", s(&key), "--signature", s(&py_sig), s(&model)]),
    );
    let out = ok(
        "hoist verifies model_signing's signature",
        hoist(["--format", "json", "model", "verify", "--key", s(&public), "--signature", s(&py_sig), s(&model)]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // model_signing's own signature covers hoist's model.sig too: it is a file of the model
    assert_eq!((v["verified"].as_bool(), v["files"].as_u64()), (Some(true), Some(6)), "{v}");

    // the package's API signs by shards (`path:start:end` resources): hoist verifies that too
    let shard_sig = t.path().join("shards.sig");
    let script = "import sys, model_signing\nhc = model_signing.hashing.Config().use_shard_serialization(shard_size=25000)\nmodel_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1]).set_hashing_config(hc).sign(sys.argv[2], sys.argv[3])\n";
    let out = Command::new(pyvenv().join("bin/python"))
        .args(["-c", script, s(&key), s(&model), s(&shard_sig)])
        .output()
        .unwrap();
    assert_success("model_signing signs by shards", &out);
    let out = ok(
        "hoist verifies a sharded signature",
        hoist(["--format", "json", "model", "verify", "--key", s(&public), "--signature", s(&shard_sig), s(&model)]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 70000 B = 3 shards, 30000 B = 2, the three small files one each, model.sig one
    assert_eq!((v["method"].as_str(), v["files"].as_u64()), (Some("shards"), Some(9)), "{v}");

    // another key: refused by both
    let (_, other_public) = python_keys(t.path(), "other");
    let out = hoist(["model", "verify", "--key", s(&other_public), s(&model)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    assert!(!model_signing(&["verify", "key", "--signature", s(&sig), "--public_key", s(&other_public), s(&model)])
        .status
        .success());

    // a tampered file: both refuse, naming it; so is a file added after signing
    std::fs::write(model.join("weights/model-00002.safetensors"), vec![3u8; 30_000]).unwrap();
    std::fs::write(model.join("extra.bin"), b"x").unwrap();
    let out = hoist(["model", "verify", "--key", s(&public), s(&model)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("hash mismatch for 'weights/model-00002.safetensors'"), "{err}");
    assert!(err.contains("not signed: 'extra.bin'"), "{err}");
    let out = hoist(["model", "verify", "--key", s(&public), "--signature", s(&py_sig), s(&model)]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("weights/model-00002.safetensors"), "{}", stderr(&out));
    let out = model_signing(&["verify", "key", "--signature", s(&sig), "--public_key", s(&public), s(&model)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("weights/model-00002.safetensors"), "{}", stderr(&out));

    // a tampered signature payload: refused
    let mut b = bundle.clone();
    let forged = String::from_utf8(payload).unwrap().replace("tiny-model", "tiny-modeX");
    b["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD.encode(forged).into();
    std::fs::write(t.path().join("forged.sig"), serde_json::to_vec(&b).unwrap()).unwrap();
    let out =
        hoist(["model", "verify", "--key", s(&public), "--signature", s(&t.path().join("forged.sig")), s(&model)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn a_cosign_key_from_hoist_signs_models_model_signing_verifies() {
    require_model_signing!();
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("m");
    write_model(&model);
    let prefix = t.path().join("cosign");
    ok(
        "key generate",
        hoist_cmd().env("COSIGN_PASSWORD", "pw").args(["key", "generate", "--out", s(&prefix)]).output().unwrap(),
    );
    let sig = t.path().join("out.sig");
    ok(
        "model sign with an encrypted cosign key",
        hoist_cmd()
            .env("COSIGN_PASSWORD", "pw")
            .args(["model", "sign", "--key", s(&t.path().join("cosign.key")), "--signature", s(&sig)])
            .args(["--ignore-paths", "a", s(&model)])
            .output()
            .unwrap(),
    );
    // the key hint is the package's (sha256 of hoist's public PEM), so it accepts it
    assert_success(
        "model_signing verifies with hoist's cosign.pub",
        &model_signing(&[
            "verify",
            "key",
            "--signature",
            s(&sig),
            "--public_key",
            s(&t.path().join("cosign.pub")),
            s(&model),
        ]),
    );
    // the ignored directory stays out: changing it breaks nothing
    std::fs::write(model.join("a/b.txt"), b"changed\n").unwrap();
    ok(
        "ignored paths are not checked",
        hoist(["model", "verify", "--key", s(&t.path().join("cosign.pub")), "--signature", s(&sig), s(&model)]),
    );
}

/// The one model-signature referrer of `digest` in the layout at `dir`: its bundle's bytes.
fn layout_model_bundle(dir: &Path, digest: &str) -> Vec<u8> {
    let blob = |d: &str| std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut found = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let doc: serde_json::Value = serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
        if doc["subject"]["digest"] == digest
            && doc["annotations"]["dev.sigstore.bundle.predicateType"] == "https://model_signing/signature/v1.0"
        {
            assert_eq!(doc["artifactType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
            found.push(blob(doc["layers"][0]["digest"].as_str().unwrap()));
        }
    }
    assert_eq!(found.len(), 1, "one model signature referrer of {digest}");
    found.pop().unwrap()
}

#[test]
fn model_artifacts_carry_their_signature_as_a_referrer_model_signing_accepts() {
    require_model_signing!();
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("tiny");
    write_model(&model);
    std::fs::remove_dir_all(model.join(".git")).unwrap();
    std::fs::remove_file(model.join(".gitattributes")).unwrap();
    let (key, public) = python_keys(t.path(), "py");
    let layout = t.path().join("models");
    for (tag, format) in [("raw", "raw"), ("tar", "tar")] {
        ok(
            "model pack",
            hoist([
                "model",
                "pack",
                s(&model),
                "--name",
                "tiny",
                "--layer-format",
                format,
                "--store",
                s(&layout),
                "-t",
                tag,
            ]),
        );
        let reference = format!("oci:{}:{tag}", layout.display());
        ok("model sign artifact", hoist(["model", "sign", "--key", s(&key), &reference]));
        let out = ok(
            "model verify artifact",
            hoist(["--format", "json", "model", "verify", "--key", s(&public), &reference]),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((v["verified"].as_bool(), v["files"].as_u64()), (Some(true), Some(5)), "{tag}: {v}");
        // the attached signature is the one model_signing accepts for the files
        let digest = v["digest"].as_str().unwrap().to_string();
        let sig = t.path().join(format!("{tag}.sig"));
        std::fs::write(&sig, layout_model_bundle(&layout, &digest)).unwrap();
        assert_success(
            &format!("model_signing verifies the {tag} artifact's signature on the model's files"),
            &model_signing(&["verify", "key", "--signature", s(&sig), "--public_key", s(&public), s(&model)]),
        );
        let restored = t.path().join(format!("restored-{tag}"));
        // unpack --verify-key takes the model signature referrer as the artifact's signature
        ok("unpack --verify-key", hoist(["model", "unpack", "--verify-key", s(&public), &reference, s(&restored)]));
        ok(
            "hoist verifies the unpacked files with it",
            hoist(["model", "verify", "--key", s(&public), "--signature", s(&sig), s(&restored)]),
        );
        // a file changed after unpacking: named
        std::fs::write(restored.join("config.json"), b"{}").unwrap();
        let out = hoist(["model", "verify", "--key", s(&public), "--signature", s(&sig), s(&restored)]);
        assert_eq!(out.status.code(), Some(5));
        assert!(stderr(&out).contains("hash mismatch for 'config.json'"), "{}", stderr(&out));
        // cosign's verify is not confused by it: no cosign signature there
        let out = hoist(["verify", "--key", s(&public), &reference]);
        assert_eq!(out.status.code(), Some(5));
        assert!(stderr(&out).contains("no signature found"), "{}", stderr(&out));
    }
    // another key, and an unsigned artifact: refused
    let (_, other) = python_keys(t.path(), "other");
    let out = hoist(["model", "verify", "--key", s(&other), &format!("oci:{}:raw", layout.display())]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    let refused = t.path().join("refused");
    let out =
        hoist(["model", "unpack", "--verify-key", s(&other), &format!("oci:{}:raw", layout.display()), s(&refused)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("no signature found") && stderr(&out).contains("wrong key"), "{}", stderr(&out));
    assert!(!refused.exists(), "a refused model was written");
    std::fs::write(model.join("config.json"), br#"{"architectures":["Other"]}"#).unwrap();
    ok("model pack v2", hoist(["model", "pack", s(&model), "--name", "tiny", "--store", s(&layout), "-t", "v2"]));
    let out = hoist(["model", "verify", "--key", s(&public), &format!("oci:{}:v2", layout.display())]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("no model signature found"), "{}", stderr(&out));
    let out =
        hoist(["model", "unpack", "--verify-key", s(&public), &format!("oci:{}:v2", layout.display()), s(&refused)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!refused.exists(), "an unsigned model was written");
}

#[test]
fn a_one_file_model_interchanges_with_the_model_signing_package() {
    require_model_signing!();
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("tiny.gguf");
    std::fs::write(&file, (0..90_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let (key, public) = python_keys(t.path(), "py");

    // hoist signs the file (FILE.sig beside it), model_signing verifies
    let out = ok("hoist model sign FILE", hoist(["--format", "json", "model", "sign", "--key", s(&key), s(&file)]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["files"].as_u64(), v["name"].as_str()), (Some(1), Some("tiny.gguf")), "{v}");
    let sig = t.path().join("tiny.gguf.sig");
    assert_success(
        "model_signing verifies hoist's signature of one file",
        &model_signing(&["verify", "key", "--signature", s(&sig), "--public_key", s(&public), s(&file)]),
    );
    ok("hoist verifies its own", hoist(["model", "verify", "--key", s(&public), s(&file)]));

    // model_signing signs the file, hoist verifies: by files, and by shards
    let py_sig = t.path().join("py.sig");
    assert_success(
        "model_signing sign key FILE",
        &model_signing(&["sign", "key", "--private_key", s(&key), "--signature", s(&py_sig), s(&file)]),
    );
    let payload = |p: &Path| -> serde_json::Value {
        use base64::Engine;
        let b: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let raw =
            base64::engine::general_purpose::STANDARD.decode(b["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    // the same statement as the package's: subject name and digest, the one resource `.`
    let (mine, theirs) = (payload(&sig), payload(&py_sig));
    assert_eq!(mine["subject"], theirs["subject"], "subjects differ");
    assert_eq!(mine["predicate"]["resources"], theirs["predicate"]["resources"], "resources differ");
    let out = ok(
        "hoist verifies model_signing's signature of one file",
        hoist(["--format", "json", "model", "verify", "--key", s(&public), "--signature", s(&py_sig), s(&file)]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["verified"].as_bool(), v["files"].as_u64()), (Some(true), Some(1)), "{v}");
    let shard_sig = t.path().join("shards.sig");
    let script = "import sys, model_signing\nhc = model_signing.hashing.Config().use_shard_serialization(shard_size=40000)\nmodel_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1]).set_hashing_config(hc).sign(sys.argv[2], sys.argv[3])\n";
    let out = Command::new(pyvenv().join("bin/python"))
        .args(["-c", script, s(&key), s(&file), s(&shard_sig)])
        .output()
        .unwrap();
    assert_success("model_signing signs one file by shards", &out);
    let out = ok(
        "hoist verifies a sharded signature of one file",
        hoist(["--format", "json", "model", "verify", "--key", s(&public), "--signature", s(&shard_sig), s(&file)]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 90000 B in shards of 40000: three
    assert_eq!((v["method"].as_str(), v["files"].as_u64()), (Some("shards"), Some(3)), "{v}");

    // a changed byte: both refuse
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[50_000] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = hoist(["model", "verify", "--key", s(&public), s(&file)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("hash mismatch for '.'"), "{}", stderr(&out));
    let out = hoist(["model", "verify", "--key", s(&public), "--signature", s(&shard_sig), s(&file)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("'.:40000:80000'"), "{}", stderr(&out));
    assert!(!model_signing(&["verify", "key", "--signature", s(&sig), "--public_key", s(&public), s(&file)])
        .status
        .success());
}
