//! Signing and verification (issue 26), judged by code that is not hoist's:
//! - `crates/hoist-testkit/judges/cosign_legacy.py`: a signer and verifier of cosign's legacy
//!   format written from cosign's SIGNATURE_SPEC.md with Python `cryptography`, and a reader and
//!   writer of cosign's encrypted private keys (hashlib.scrypt + PyNaCl secretbox);
//! - `crates/hoist-testkit/judges/sigstore_verify.js`: sigstore-js (`@sigstore/verify` from
//!   npm) verifying hoist's Sigstore bundles with the public key, no transparency log.
//!
//! The python venv is target/pyvenv and the npm packages target/sigstore-js (both made by
//! .ci/run). A real docker-registry (distribution 2.8, no referrers API) stores everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    hoist_testkit::schemas::pyvenv_dir().join("bin/python")
}

fn sigstore_js() -> PathBuf {
    root().join("target/sigstore-js/node_modules")
}

/// The legacy-format judge: `cosign_legacy.py ARGS`.
pub(crate) fn judge(args: &[&str]) -> Output {
    Command::new(python())
        .arg(root().join("crates/hoist-testkit/judges/cosign_legacy.py"))
        .args(args)
        .output()
        .expect("run the python judge")
}

/// sigstore-js on a bundle file with a public key: the verified statement, or Err(stderr).
fn sigstore_verify(bundle: &Path, public: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new("node")
        .arg(root().join("crates/hoist-testkit/judges/sigstore_verify.js"))
        .arg(bundle)
        .arg(public)
        .env("NODE_PATH", sigstore_js())
        .output()
        .expect("run node");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("judge output"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether the judges are installed (python venv with cryptography and pynacl; node with
/// sigstore-js); says SKIP naming what is missing.
macro_rules! require_judges {
    () => {
        hoist_testkit::require!(python().to_str().unwrap(), "node");
        if !sigstore_js().join("@sigstore/verify").is_dir() {
            hoist_testkit::skip!("no @sigstore/verify under target/sigstore-js (.ci/run installs it)");
        }
    };
}

/// `hoist ARGS` with COSIGN_PASSWORD set.
fn hoist_pw(pw: &str, args: &[&str]) -> Output {
    hoist_cmd().env("COSIGN_PASSWORD", pw).args(args).output().expect("run hoist")
}

/// A registry holding the sample image as `app:v1`; (registry, reference, digest).
fn registry_with_image() -> (TestRegistry, String, String) {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let reference = format!("{}/app:v1", reg.host());
    let src = format!("oci:{}:multi", root().join("examples/sample-layout").display());
    ok("copy sample", hoist(["copy", &src, &reference]));
    let digest = registry_manifest_digest(&reg, "app:v1");
    (reg, reference, digest)
}

fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generated_keys_are_cosign_format_and_a_wrong_password_says_so() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("s3cret", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let key = t.path().join("k.key");
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // The independent reader opens it (scrypt + secretbox, PKCS#8 inside) to the same public key.
    let out = judge(&["pubkey", key.to_str().unwrap(), "--password", "s3cret"]);
    assert_success("python opens hoist's key", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), std::fs::read_to_string(t.path().join("k.pub")).unwrap());
    // The JSON inside is go-securesystemslib's layout.
    let (_, body) = {
        let lines: Vec<&str> = text.lines().collect();
        ((), lines[1..lines.len() - 1].concat())
    };
    use base64::Engine;
    let inner: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(body).unwrap()).unwrap();
    assert_eq!(inner["kdf"]["name"], "scrypt");
    assert_eq!(inner["kdf"]["params"]["N"], 65536);
    assert_eq!(inner["cipher"]["name"], "nacl/secretbox");
    // A wrong password is an error that says so, before anything is contacted.
    let out = hoist_pw("wrong", &["sign", "--key", key.to_str().unwrap(), "127.0.0.1:1/none:v1"]);
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    // The password file (skopeo's flag) wins; its trailing newline is not part of it.
    let pwfile = t.path().join("pw");
    std::fs::write(&pwfile, "s3cret\n").unwrap();
    let out = hoist_cmd()
        .env_remove("COSIGN_PASSWORD")
        .args(["sign", "--key", key.to_str().unwrap(), "--sign-passphrase-file", pwfile.to_str().unwrap()])
        .arg("127.0.0.1:1/none:v1")
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("wrong password"), "{}", stderr(&out));
    // Existing files are not replaced without --force.
    let out = hoist_pw("x", &["key", "generate", "--out", prefix.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
}

#[test]
fn hoist_signatures_pass_the_independent_verifiers_and_hoist_verify() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let (reg, reference, digest) = registry_with_image();
    let signed = ok("sign", hoist_pw("pw", &["--format", "json", "sign", "--key", key.to_str().unwrap(), &reference]));
    let v: serde_json::Value = serde_json::from_str(&signed).unwrap();
    let formats: Vec<&str> =
        v["signatures"].as_array().unwrap().iter().map(|s| s["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["legacy", "bundle"]);

    // Legacy: the spec-written verifier accepts it, with the identity of the repository.
    let out = judge(&[
        "verify",
        &reg.url(),
        "app",
        &digest,
        public.to_str().unwrap(),
        "--identity-repo",
        &format!("{}/app", reg.host()),
    ]);
    assert_success("python verifies hoist's legacy signature", &out);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["identity"], reference.as_str());
    // ... and refuses it with another key.
    let other = t.path().join("o");
    assert_success("python genkey", &judge(&["genkey", other.to_str().unwrap()]));
    let out = judge(&["verify", &reg.url(), "app", &digest, t.path().join("o.pub").to_str().unwrap()]);
    assert!(!out.status.success(), "python accepted another key");

    // Bundle: sigstore-js verifies the DSSE envelope with the key; the statement is about the digest.
    let refs = ok("referrers", hoist(["--format", "json", "referrers", "--artifact-type", BUNDLE, &reference]));
    let refs: serde_json::Value = serde_json::from_str(&refs).unwrap();
    let list = refs["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{refs}");
    let m = ok(
        "inspect",
        hoist(["inspect", "--raw", &format!("{}/app@{}", reg.host(), list[0]["digest"].as_str().unwrap())]),
    );
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["artifactType"], BUNDLE);
    assert_eq!(m["subject"]["digest"], digest.as_str());
    let blob =
        reqwest::blocking::get(format!("{}/v2/app/blobs/{}", reg.url(), m["layers"][0]["digest"].as_str().unwrap()))
            .unwrap()
            .bytes()
            .unwrap();
    let bundle = t.path().join("bundle.json");
    std::fs::write(&bundle, &blob).unwrap();
    let verified = sigstore_verify(&bundle, &public).expect("sigstore-js verifies hoist's bundle");
    assert_eq!(verified["payloadType"], "application/vnd.in-toto+json");
    let st = &verified["payload"];
    assert_eq!(st["predicateType"], "https://sigstore.dev/cosign/sign/v1");
    assert_eq!(st["subject"][0]["digest"]["sha256"], digest.strip_prefix("sha256:").unwrap());
    assert!(sigstore_verify(&bundle, &t.path().join("o.pub")).is_err(), "sigstore-js accepted another key");
    let mut tampered: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    let other_statement = serde_json::to_vec(&serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": "00"}}], "predicateType": "x", "predicate": {}})).unwrap();
    use base64::Engine;
    tampered["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD.encode(other_statement).into();
    std::fs::write(&bundle, serde_json::to_vec(&tampered).unwrap()).unwrap();
    assert!(sigstore_verify(&bundle, &public).is_err(), "sigstore-js accepted a tampered payload");

    // hoist verify: both formats verify; JSON lists them; another key is refused (exit 5).
    let out = ok("verify", hoist(["--format", "json", "verify", "--key", public.to_str().unwrap(), &reference]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);
    let ok_formats: Vec<&str> = v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verified"] == true)
        .map(|s| s["format"].as_str().unwrap())
        .collect();
    assert_eq!(ok_formats, ["legacy", "bundle"]);
    let out = hoist(["verify", "--key", t.path().join("o.pub").to_str().unwrap(), &reference]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));

    // Signing again adds nothing (same payload, deterministic signature); another key adds a
    // layer and keeps the first.
    let again =
        ok("sign again", hoist_pw("pw", &["--format", "json", "sign", "--key", key.to_str().unwrap(), &reference]));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert!(again["signatures"].as_array().unwrap().iter().all(|s| s["added"] == false), "{again}");
    let okey = t.path().join("o.key");
    ok(
        "sign with a second key",
        hoist(["sign", "--key", okey.to_str().unwrap(), "--signature-format", "legacy", &reference]),
    );
    let sig_tag = format!("{}/app:{}.sig", reg.host(), digest.replace(':', "-"));
    let m: serde_json::Value = serde_json::from_str(&ok("inspect sig", hoist(["inspect", "--raw", &sig_tag]))).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    for k in [&public, &t.path().join("o.pub")] {
        assert_success(
            "python verifies each layer's key",
            &judge(&["verify", &reg.url(), "app", &digest, k.to_str().unwrap()]),
        );
    }
}

#[test]
fn hoist_verifies_the_independent_signer_and_refuses_what_it_must() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let (reg, reference, digest) = registry_with_image();
    let url = reg.url();
    // A key hoist did not generate, in cosign's encrypted format written by python.
    let k = t.path().join("py");
    assert_success("genkey", &judge(&["genkey", k.to_str().unwrap(), "--password", "pypw"]));
    let (key, public) = (t.path().join("py.key"), t.path().join("py.pub"));
    let verify = |r: &str| hoist(["verify", "--key", public.to_str().unwrap(), "--signature-format", "legacy", r]);

    // Unsigned: no signature, exit 5.
    let out = verify(&reference);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("no signature"), "{}", stderr(&out));

    // Signed by the independent signer: hoist verifies it.
    assert_success(
        "python signs",
        &judge(&["sign", &url, "app", &digest, key.to_str().unwrap(), "--password", "pypw", "--identity", &reference]),
    );
    assert_success("hoist verifies python's signature", &verify(&reference));
    // hoist also reads the python-written encrypted key and signs with it.
    let out = hoist_pw("pypw", &["sign", "--key", key.to_str().unwrap(), "--signature-format", "bundle", &reference]);
    assert_success("hoist signs with python's encrypted key", &out);

    // Another image in the same repository, signed in ways that must all be refused.
    let other = format!("{}/app:other", reg.host());
    let src = format!("oci:{}:artifact", root().join("examples/sample-layout").display());
    ok("copy artifact", hoist(["copy", &src, &other]));
    let odigest = registry_manifest_digest(&reg, "app:other");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--tamper".into()], "wrong key"),
        (vec!["--claim-digest".into(), digest.clone()], "digest mismatch"),
    ];
    for (extra, reason) in cases {
        let mut args =
            vec!["sign", &url, "app", &odigest, key.to_str().unwrap(), "--password", "pypw", "--identity", &other];
        args.extend(extra.iter().map(String::as_str));
        assert_success("python signs", &judge(&args));
        let out = verify(&other);
        assert_eq!(exit_code(&out), 5, "{reason}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "want {reason}: {}", stderr(&out));
    }
    // Identity: a valid signature over the digest claiming another repository.
    let third = format!("{}/app:third", reg.host());
    ok(
        "copy again",
        hoist([
            "copy",
            &format!("oci:{}:multi", root().join("examples/sample-layout").display()),
            &format!("{}/elsewhere:v1", reg.host()),
        ]),
    );
    let edigest = registry_manifest_digest(&reg, "elsewhere:v1");
    assert_success(
        "python signs as another repo",
        &judge(&[
            "sign",
            &url,
            "elsewhere",
            &edigest,
            key.to_str().unwrap(),
            "--password",
            "pypw",
            "--identity",
            &third,
        ]),
    );
    let out = verify(&format!("{}/elsewhere:v1", reg.host()));
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("identity mismatch"), "{}", stderr(&out));

    // A .sig tag pointing elsewhere: the signature manifest of `v1` copied to `other`'s tag.
    let sig_of = |d: &str| format!("{}/app:{}.sig", reg.host(), d.replace(':', "-"));
    ok("copy sig tag", hoist(["copy", &sig_of(&digest), &sig_of(&odigest)]));
    let out = verify(&other);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("digest mismatch"), "{}", stderr(&out));
    // ... while v1 still verifies, and a wrong key is refused naming the reason.
    assert_success("v1 verifies", &verify(&reference));
    let hk = t.path().join("h");
    ok("key generate", hoist_pw("x", &["key", "generate", "--out", hk.to_str().unwrap()]));
    let out = hoist(["verify", "--key", t.path().join("h.pub").to_str().unwrap(), &reference]);
    assert_eq!(exit_code(&out), 5);
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
}

#[test]
fn rsa_and_ed25519_pkcs8_keys_sign_for_the_independent_verifier() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let (reg, reference, digest) = registry_with_image();
    for kind in ["rsa", "ed25519"] {
        let k = t.path().join(kind);
        assert_success("genkey", &judge(&["genkey", k.to_str().unwrap(), "--kind", kind]));
        let key = t.path().join(format!("{kind}.key"));
        let public = t.path().join(format!("{kind}.pub"));
        ok("sign", hoist(["sign", "--key", key.to_str().unwrap(), &reference]));
        assert_success(kind, &judge(&["verify", &reg.url(), "app", &digest, public.to_str().unwrap()]));
        ok("hoist verify", hoist(["verify", "--key", public.to_str().unwrap(), &reference]));
    }
}

/// A policy file in `dir`.
fn write_policy(dir: &Path, name: &str, v: serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    p
}

fn signed_by(public: &Path, identity: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{"type": "sigstoreSigned", "keyPath": public, "signedIdentity": identity}])
}

#[test]
fn policy_accepts_signed_refuses_unsigned_and_other_keys_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let other = t.path().join("o");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", other.to_str().unwrap()]));
    let (key, public, other_pub) = (t.path().join("k.key"), t.path().join("k.pub"), t.path().join("o.pub"));
    let (reg, reference, _digest) = registry_with_image();
    let host = reg.host();
    ok("sign", hoist_pw("pw", &["sign", "--key", key.to_str().unwrap(), &reference]));
    let unsigned = format!("{host}/app:unsigned");
    ok(
        "copy",
        hoist(["copy", &format!("oci:{}:artifact", root().join("examples/sample-layout").display()), &unsigned]),
    );
    // the same digest as v1 under another tag: its signature claims v1
    let v2 = format!("{host}/app:v2");
    ok("retag", hoist(["copy", &reference, &v2]));

    let policy = |name: &str, public: &Path, identity: serde_json::Value| {
        let mut scopes = serde_json::Map::new();
        scopes.insert(format!("{host}/app"), signed_by(public, identity));
        write_policy(
            t.path(),
            name,
            serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": scopes}}),
        )
    };
    let repo_rule = policy("repo.json", &public, serde_json::json!({"type": "matchRepository"}));
    let default_rule = policy("default.json", &public, serde_json::json!({"type": "matchRepoDigestOrExact"}));
    let wrong_key = policy("wrongkey.json", &other_pub, serde_json::json!({"type": "matchRepository"}));
    let exact_v1 =
        policy("exact1.json", &public, serde_json::json!({"type": "exactReference", "dockerReference": reference}));
    let exact_v3 = policy(
        "exact3.json",
        &public,
        serde_json::json!({"type": "exactReference", "dockerReference": format!("{host}/app:v3")}),
    );

    let pull = |p: &Path, r: &str, dir: &str| {
        hoist(["pull", "--policy", p.to_str().unwrap(), r, t.path().join(dir).to_str().unwrap()])
    };
    let accepted = |p: &Path, r: &str, dir: &str| {
        let out = pull(p, r, dir);
        assert_success(&format!("pull {r} under {}", p.display()), &out);
        assert!(t.path().join(dir).join("index.json").is_file());
    };
    let refused = |p: &Path, r: &str, dir: &str, why: &str| {
        let out = pull(p, r, dir);
        assert_eq!(exit_code(&out), 5, "pull {r} under {}: {}", p.display(), stderr(&out));
        assert!(stderr(&out).contains(why), "want {why}: {}", stderr(&out));
        assert!(!t.path().join(dir).exists(), "a refused pull wrote {dir}");
    };
    accepted(&repo_rule, &reference, "a");
    refused(&repo_rule, &unsigned, "b", "no signature");
    refused(&wrong_key, &reference, "c", "wrong key");
    // matchRepoDigestOrExact: the signature names v1, so v1 passes and v2 (same digest) does not
    accepted(&default_rule, &reference, "d");
    refused(&default_rule, &v2, "e", "identity mismatch");
    // ... while matchRepository takes v2, and by digest the repository is enough
    accepted(&repo_rule, &v2, "f");
    accepted(&default_rule, &format!("{host}/app@{_digest}"), "g");
    // exactReference: the signature must name exactly that reference, whatever was pulled
    accepted(&exact_v1, &v2, "h");
    refused(&exact_v3, &reference, "i", "identity mismatch");
    // outside the scope: the default rejects
    ok("copy elsewhere", hoist(["copy", &reference, &format!("{host}/elsewhere:v1")]));
    refused(&repo_rule, &format!("{host}/elsewhere:v1"), "j", "rejects");

    // copy: a refused image tags nothing at the destination; inspect refuses too
    let out = hoist(["copy", "--policy", wrong_key.to_str().unwrap(), &reference, &format!("{host}/dest:v1")]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(!hoist(["inspect", &format!("{host}/dest:v1")]).status.success(), "a refused copy tagged the destination");
    let out = hoist(["inspect", "--policy", wrong_key.to_str().unwrap(), &reference]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    // GPG rules are refused by name
    let gpg = write_policy(
        t.path(),
        "gpg.json",
        serde_json::json!({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/dev/null"}]}),
    );
    refused(&gpg, &reference, "k", "signedBy");
}

#[test]
fn copy_signs_what_the_destination_got() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let reg = TestRegistry::start(RegistryOpts::plain());
    let dest = format!("{}/signed:v1", reg.host());
    let src = format!("oci:{}:multi", root().join("examples/sample-layout").display());
    let src_digest = ok("digest", hoist(["--format", "json", "inspect", &src]));
    let src_digest =
        serde_json::from_str::<serde_json::Value>(&src_digest).unwrap()["digest"].as_str().unwrap().to_string();
    ok(
        "copy --dest-compress zstd --sign-by-sigstore-private-key",
        hoist_pw(
            "pw",
            &["copy", "--dest-compress", "zstd", "--sign-by-sigstore-private-key", key.to_str().unwrap(), &src, &dest],
        ),
    );
    let got = registry_manifest_digest(&reg, "signed:v1");
    assert_ne!(got, src_digest, "--dest-compress zstd kept the digest");
    assert_success(
        "python verifies the new digest's signature",
        &judge(&[
            "verify",
            &reg.url(),
            "signed",
            &got,
            public.to_str().unwrap(),
            "--identity-repo",
            &format!("{}/signed", reg.host()),
        ]),
    );
    ok("hoist verify", hoist(["verify", "--key", public.to_str().unwrap(), &dest]));
    // the source digest has no signature there
    let out = judge(&["verify", &reg.url(), "signed", &src_digest, public.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn attestations_are_bundles_sigstore_js_verifies_and_verify_attestation_prints_them() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let (reg, reference, digest) = registry_with_image();
    let predicate = t.path().join("prov.json");
    std::fs::write(&predicate, r#"{"buildDefinition":{"buildType":"https://example.com/hoist"},"runDetails":{}}"#)
        .unwrap();
    ok(
        "attest",
        hoist_pw(
            "pw",
            &[
                "attest",
                "--key",
                key.to_str().unwrap(),
                "--type",
                "slsaprovenance1",
                "--predicate",
                predicate.to_str().unwrap(),
                "--signature-format",
                "both",
                &reference,
            ],
        ),
    );
    // hoist reads both formats back and prints the statements
    let out = ok(
        "verify-attestation",
        hoist([
            "--format",
            "json",
            "verify-attestation",
            "--key",
            public.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            &reference,
        ]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let verified: Vec<&serde_json::Value> =
        v["signatures"].as_array().unwrap().iter().filter(|s| s["verified"] == true).collect();
    assert_eq!(verified.len(), 2, "{v}");
    for s in verified {
        assert_eq!(s["statement"]["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(s["statement"]["predicate"]["buildDefinition"]["buildType"], "https://example.com/hoist");
    }
    // the legacy .att layer is a DSSE envelope, as cosign writes it
    let att = format!("{}/app:{}.att", reg.host(), digest.replace(':', "-"));
    let m: serde_json::Value = serde_json::from_str(&ok("inspect att", hoist(["inspect", "--raw", &att]))).unwrap();
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(m["layers"][0]["annotations"]["predicateType"], "https://slsa.dev/provenance/v1");
    // sigstore-js verifies the bundle
    let refs: serde_json::Value = serde_json::from_str(&ok(
        "referrers",
        hoist(["--format", "json", "referrers", "--artifact-type", BUNDLE, &reference]),
    ))
    .unwrap();
    let entry = &refs["manifests"].as_array().unwrap()[0];
    assert_eq!(entry["annotations"]["dev.sigstore.bundle.predicateType"], "https://slsa.dev/provenance/v1");
    let bm: serde_json::Value = serde_json::from_str(&ok(
        "inspect bundle",
        hoist(["inspect", "--raw", &format!("{}/app@{}", reg.host(), entry["digest"].as_str().unwrap())]),
    ))
    .unwrap();
    let blob =
        reqwest::blocking::get(format!("{}/v2/app/blobs/{}", reg.url(), bm["layers"][0]["digest"].as_str().unwrap()))
            .unwrap()
            .bytes()
            .unwrap();
    let bundle = t.path().join("att.json");
    std::fs::write(&bundle, &blob).unwrap();
    let st = sigstore_verify(&bundle, &public).expect("sigstore-js verifies the attestation bundle");
    assert_eq!(st["payload"]["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["payload"]["subject"][0]["digest"]["sha256"], digest.strip_prefix("sha256:").unwrap());
    // another type: nothing verifies, exit 5
    let out = hoist(["verify-attestation", "--key", public.to_str().unwrap(), "--type", "spdxjson", &reference]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
}

/// The one Sigstore bundle referrer of `repo@digest` in `reg`, written to `path`.
fn fetch_bundle(reg: &TestRegistry, repo: &str, digest: &str, path: &Path) {
    let reference = format!("{}/{repo}@{digest}", reg.host());
    let refs = ok("referrers", hoist(["--format", "json", "referrers", "--artifact-type", BUNDLE, &reference]));
    let refs: serde_json::Value = serde_json::from_str(&refs).unwrap();
    let list = refs["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{refs}");
    let m = ok(
        "inspect",
        hoist(["inspect", "--raw", &format!("{}/{repo}@{}", reg.host(), list[0]["digest"].as_str().unwrap())]),
    );
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["subject"]["digest"], digest);
    let url = format!("{}/v2/{repo}/blobs/{}", reg.url(), m["layers"][0]["digest"].as_str().unwrap());
    std::fs::write(path, reqwest::blocking::get(url).unwrap().bytes().unwrap()).unwrap();
}

#[test]
fn build_outputs_artifact_push_and_model_pack_sign_what_they_wrote() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let key = key.to_str().unwrap();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    let model = t.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), b"{}").unwrap();
    std::fs::write(model.join("weights.bin"), vec![5u8; 4096]).unwrap();
    std::fs::write(t.path().join("notes.txt"), b"signed on push\n").unwrap();
    let notes = format!("{}:text/plain", t.path().join("notes.txt").display());
    let layout = t.path().join("out-layout");
    let toml = root().join("examples/hoist.toml");
    let sign = ["--sign-by-sigstore-private-key", key];
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "built",
            [
                vec!["build", "-f", toml.to_str().unwrap(), "--store", store],
                sign.to_vec(),
                vec!["--output", &format!("type=registry,name={}/built:v1", reg.host())],
                vec!["--output", &format!("oci:{}:v1", layout.display())],
            ]
            .concat()
            .into_iter()
            .map(String::from)
            .collect(),
        ),
        (
            "art",
            [
                vec!["artifact", "push", "--store", store],
                sign.to_vec(),
                vec![&format!("{}/art:v1", reg.host()), &notes],
            ]
            .concat()
            .into_iter()
            .map(String::from)
            .collect(),
        ),
        (
            "model",
            [
                vec!["model", "pack", model.to_str().unwrap(), "--name", "m"],
                sign.to_vec(),
                vec!["--output", &format!("type=registry,name={}/model:v1", reg.host())],
            ]
            .concat()
            .into_iter()
            .map(String::from)
            .collect(),
        ),
    ];
    for (repo, args) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = hoist_pw("pw", &args);
        let err = stderr(&out);
        assert_success(&format!("{repo}: {args:?}"), &out);
        let digest = registry_manifest_digest(&reg, &format!("{repo}:v1"));
        assert!(err.contains(&format!("signed {digest}: legacy")), "{repo}: {err}");
        // the spec-written verifier: legacy format, identity = the destination's name
        assert_success(
            &format!("{repo}: python verifies the legacy signature"),
            &judge(&[
                "verify",
                &reg.url(),
                repo,
                &digest,
                public.to_str().unwrap(),
                "--identity-repo",
                &format!("{}/{repo}", reg.host()),
            ]),
        );
        // sigstore-js: the bundle referrer, about that digest
        let bundle = t.path().join(format!("{repo}.bundle.json"));
        fetch_bundle(&reg, repo, &digest, &bundle);
        let st = sigstore_verify(&bundle, &public).expect("sigstore-js verifies the bundle");
        assert_eq!(st["payload"]["subject"][0]["digest"]["sha256"], digest.strip_prefix("sha256:").unwrap());
        ok(
            &format!("{repo}: hoist verify"),
            hoist(["verify", "--key", public.to_str().unwrap(), &format!("{}/{repo}:v1", reg.host())]),
        );
    }
    // the layout output of the build got the bundle format (no registry name to claim)
    let out = ok(
        "hoist verify the layout output",
        hoist([
            "--format",
            "json",
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("oci:{}:v1", layout.display()),
        ]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signatures"][0]["format"], "bundle", "{v}");
    // an output that holds no signatures only: refused before anything is built
    let out = hoist_pw(
        "pw",
        &[
            "artifact",
            "pack",
            "--store",
            store,
            "--sign-by-sigstore-private-key",
            key,
            "--output",
            &format!("type=oci,dest={}", t.path().join("a.tar").display()),
            &notes,
        ],
    );
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("registries and OCI layouts only"), "{}", stderr(&out));
    assert!(!t.path().join("a.tar").exists());
}

#[test]
fn sbom_attestations_pass_the_independent_judges_and_hoist_reads_an_independent_one() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let (reg, reference, digest) = registry_with_image();
    let app = format!("{}/app:v1", reg.host());
    // hoist's own SBOMs as predicates, in both formats
    for (sbom_format, typ, uri) in [
        ("spdx-json", "spdxjson", "https://spdx.dev/Document"),
        ("cyclonedx-json", "cyclonedx", "https://cyclonedx.org/bom"),
    ] {
        let sbom = ok("sbom", hoist(["sbom", "--platform", "linux/amd64", "--format", sbom_format, &app]));
        let predicate = t.path().join(format!("{typ}.json"));
        std::fs::write(&predicate, &sbom).unwrap();
        let args = ["attest", "--key", key.to_str().unwrap(), "--type", typ, "--predicate"];
        ok(
            "attest",
            hoist_pw(
                "pw",
                &[&args[..], &[predicate.to_str().unwrap(), "--signature-format", "both", &reference]].concat(),
            ),
        );
        // the legacy .att layer: signature over PAE, in-toto statement v1 (the in-toto-attestation
        // package validates it), about the digest, its predicateType annotation right
        let out = judge(&["verify-att", &reg.url(), "app", &digest, public.to_str().unwrap(), "--type", uri]);
        assert_success(&format!("python verifies hoist's {typ} attestation"), &out);
        let lines: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let mine = lines.iter().find(|l| l["predicateType"] == uri).expect("the attestation of that type");
        assert_eq!(mine["inToto"], true, "{mine}");
        let sbom_json: serde_json::Value = serde_json::from_str(&sbom).unwrap();
        assert_eq!(mine["statement"]["predicate"], sbom_json, "the predicate is the SBOM as given");
    }
    // sigstore-js: both bundles
    let refs = ok("referrers", hoist(["--format", "json", "referrers", "--artifact-type", BUNDLE, &reference]));
    let refs: serde_json::Value = serde_json::from_str(&refs).unwrap();
    let list = refs["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{refs}");
    for (i, entry) in list.iter().enumerate() {
        let m = ok(
            "inspect",
            hoist(["inspect", "--raw", &format!("{}/app@{}", reg.host(), entry["digest"].as_str().unwrap())]),
        );
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        let url = format!("{}/v2/app/blobs/{}", reg.url(), m["layers"][0]["digest"].as_str().unwrap());
        let bundle = t.path().join(format!("att{i}.json"));
        std::fs::write(&bundle, reqwest::blocking::get(url).unwrap().bytes().unwrap()).unwrap();
        let st = sigstore_verify(&bundle, &public).expect("sigstore-js verifies the attestation bundle");
        assert_eq!(st["payload"]["predicateType"], entry["annotations"]["dev.sigstore.bundle.predicateType"]);
        assert_eq!(st["payload"]["subject"][0]["digest"]["sha256"], digest.strip_prefix("sha256:").unwrap());
    }

    // an attestation the independent signer made (cosign's layout, Statement v0.1, its own key)
    let other = t.path().join("py");
    assert_success("python genkey", &judge(&["genkey", other.to_str().unwrap()]));
    let prov = t.path().join("prov.json");
    std::fs::write(&prov, r#"{"buildType":"https://example.com/py-builder","builder":{"id":"py"}}"#).unwrap();
    let name = format!("{}/app", reg.host());
    assert_success(
        "python attests",
        &judge(&[
            "attest",
            &reg.url(),
            "app",
            &digest,
            &format!("{}.key", other.display()),
            prov.to_str().unwrap(),
            "--type",
            "https://slsa.dev/provenance/v0.2",
            "--name",
            &name,
        ]),
    );
    let pypub = format!("{}.pub", other.display());
    let out = ok(
        "hoist verifies the independent attestation",
        hoist(["--format", "json", "verify-attestation", "--key", &pypub, "--type", "slsaprovenance", &reference]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let good: Vec<&serde_json::Value> =
        v["signatures"].as_array().unwrap().iter().filter(|s| s["verified"] == true).collect();
    assert_eq!(good.len(), 1, "{v}");
    assert_eq!(good[0]["format"], "legacy");
    assert_eq!(good[0]["statement"]["predicate"]["builder"]["id"], "py");
    // hoist's key did not sign it; hoist's SBOM attestations are not provenance
    let out = hoist(["verify-attestation", "--key", public.to_str().unwrap(), "--type", "slsaprovenance", &reference]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    // a statement about another digest under this digest's .att tag: refused, saying why
    let forged = "https://example.com/forged/v1";
    let claim = format!("sha256:{}", "0".repeat(64));
    let key_file = format!("{}.key", other.display());
    let args = ["attest", &reg.url(), "app", &digest, &key_file, prov.to_str().unwrap(), "--type", forged];
    assert_success(
        "python attests another digest",
        &judge(&[&args[..], &["--name", &name, "--claim-digest", &claim]].concat()),
    );
    let out = hoist(["verify-attestation", "--key", &pypub, "--type", forged, &reference]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("digest mismatch"), "{}", stderr(&out));
}

#[test]
fn sec1_and_cosign_labelled_keys_sign_for_the_independent_verifier() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let (reg, reference, digest) = registry_with_image();
    // an unencrypted SEC1 `EC PRIVATE KEY`, and cosign's older `ENCRYPTED COSIGN PRIVATE KEY`
    let sec1 = t.path().join("sec1");
    assert_success("genkey sec1", &judge(&["genkey", sec1.to_str().unwrap(), "--kind", "ec-sec1"]));
    let old = t.path().join("old");
    assert_success(
        "genkey cosign label",
        &judge(&["genkey", old.to_str().unwrap(), "--password", "oldpw", "--label", "COSIGN"]),
    );
    let text = std::fs::read_to_string(t.path().join("old.key")).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----"), "{text}");
    assert!(std::fs::read_to_string(t.path().join("sec1.key")).unwrap().starts_with("-----BEGIN EC PRIVATE KEY-----"));
    for (name, pw) in [("sec1", ""), ("old", "oldpw")] {
        let key = t.path().join(format!("{name}.key"));
        let out = hoist_pw(pw, &["sign", "--key", key.to_str().unwrap(), "--signature-format", "legacy", &reference]);
        assert_success(&format!("hoist signs with the {name} key"), &out);
        let public = t.path().join(format!("{name}.pub"));
        assert_success(
            &format!("python verifies the {name} key's signature"),
            &judge(&["verify", &reg.url(), "app", &digest, public.to_str().unwrap()]),
        );
    }
    // the older label with a wrong password: says so
    let out = hoist_pw(
        "nope",
        &["sign", "--key", t.path().join("old.key").to_str().unwrap(), "--signature-format", "legacy", &reference],
    );
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

/// `sign --recursive` signs the index and each child; `--sign-identity` is the name the
/// payload claims (and what a verifier must then accept); a `--platform` copy signs the
/// filtered index it wrote; `model unpack --policy` refuses and writes nothing.
#[test]
fn recursive_signing_sign_identity_platform_copies_and_model_unpack_policy() {
    require_judges!();
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let (reg, reference, digest) = registry_with_image();
    let host = reg.host();
    ok(
        "sign --recursive",
        hoist_pw(
            "pw",
            &["sign", "--recursive", "--signature-format", "legacy", "--key", key.to_str().unwrap(), &reference],
        ),
    );
    let index: serde_json::Value =
        serde_json::from_str(&ok("inspect", hoist(["inspect", "--raw", &reference]))).unwrap();
    let children: Vec<String> =
        index["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
    assert!(children.len() >= 2, "{index}");
    for d in std::iter::once(&digest).chain(&children) {
        assert_success(
            &format!("python verifies the signature of {d}"),
            &judge(&[
                "verify",
                &reg.url(),
                "app",
                d,
                public.to_str().unwrap(),
                "--identity-repo",
                &format!("{host}/app"),
            ]),
        );
    }

    // a platform-filtered copy, claiming another name
    let dest = format!("{host}/mirror:v1");
    let claimed = format!("{host}/claimed/name:v9");
    ok(
        "copy --platform --sign-identity",
        hoist_pw(
            "pw",
            &[
                "--platform",
                "linux/amd64",
                "copy",
                "--sign-by-sigstore-private-key",
                key.to_str().unwrap(),
                "--sign-identity",
                &claimed,
                &reference,
                &dest,
            ],
        ),
    );
    let got = registry_manifest_digest(&reg, "mirror:v1");
    assert_ne!(got, digest, "--platform kept the whole index");
    let out = judge(&[
        "verify",
        &reg.url(),
        "mirror",
        &got,
        public.to_str().unwrap(),
        "--identity-repo",
        &format!("{host}/claimed/name"),
    ]);
    assert_success("python verifies the filtered index's signature with the claimed identity", &out);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["identity"], claimed.as_str());
    // hoist verify: the claimed name is not the repository's, unless accepted by --identity
    let out = hoist(["verify", "--key", public.to_str().unwrap(), &dest]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("identity mismatch"), "{}", stderr(&out));
    ok("verify --identity", hoist(["verify", "--key", public.to_str().unwrap(), "--identity", &claimed, &dest]));

    // model unpack --policy: a rejecting policy writes nothing; an accepting one unpacks
    let model = t.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), b"{}").unwrap();
    let mref = format!("{host}/model:v1");
    ok(
        "model pack",
        hoist([
            "model",
            "pack",
            model.to_str().unwrap(),
            "--name",
            "m",
            "--output",
            &format!("type=registry,name={mref}"),
        ]),
    );
    let reject = write_policy(t.path(), "reject.json", serde_json::json!({"default": [{"type": "reject"}]}));
    let refused = t.path().join("refused");
    let out = hoist(["model", "unpack", "--policy", reject.to_str().unwrap(), &mref, refused.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("rejects"), "{}", stderr(&out));
    assert!(!refused.exists(), "a refused model was written");
    let accept =
        write_policy(t.path(), "accept.json", serde_json::json!({"default": [{"type": "insecureAcceptAnything"}]}));
    let unpacked = t.path().join("unpacked");
    ok(
        "model unpack under an accepting policy",
        hoist(["model", "unpack", "--policy", accept.to_str().unwrap(), &mref, unpacked.to_str().unwrap()]),
    );
    assert!(unpacked.join("config.json").is_file());
}

/// A key pair `k.key`/`k.pub` in `dir` (password "pw").
fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("k");
    ok("key generate", hoist_pw("pw", &["key", "generate", "--out", prefix.to_str().unwrap()]));
    (dir.join("k.key"), dir.join("k.pub"))
}

/// Without `--policy`, `$HOME/.config/containers/policy.json` is the policy: it refuses an
/// unsigned image (nothing written) and takes the signed one. (`/etc/containers/policy.json`,
/// read next: the_etc_policy_file_is_read_when_no_policy_and_no_home_policy.)
#[test]
fn the_home_policy_file_is_read_when_no_policy_is_given() {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keypair(t.path());
    let (reg, reference, _digest) = registry_with_image();
    let host = reg.host();
    ok("sign", hoist_pw("pw", &["sign", "--key", key.to_str().unwrap(), &reference]));
    let unsigned = format!("{host}/app:unsigned");
    ok(
        "copy",
        hoist(["copy", &format!("oci:{}:artifact", root().join("examples/sample-layout").display()), &unsigned]),
    );
    let home = t.path().join("home");
    std::fs::create_dir_all(home.join(".config/containers")).unwrap();
    let mut scopes = serde_json::Map::new();
    scopes.insert(format!("{host}/app"), signed_by(&public, serde_json::json!({"type": "matchRepository"})));
    write_policy(
        &home.join(".config/containers"),
        "policy.json",
        serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": scopes}}),
    );
    let pull = |r: &str, dir: &str| {
        hoist_cmd()
            .env("HOME", &home)
            .args(["pull", r, t.path().join(dir).to_str().unwrap()])
            .output()
            .expect("run hoist")
    };
    let out = pull(&unsigned, "refused");
    assert_eq!(exit_code(&out), 5, "the home policy did not refuse: {}", stderr(&out));
    assert!(stderr(&out).contains("no signature"), "{}", stderr(&out));
    assert!(!t.path().join("refused").exists(), "a refused pull wrote its directory");
    assert_success("pull of the signed image under the home policy", &pull(&reference, "accepted"));
    assert!(t.path().join("accepted/index.json").is_file());
}

/// A refused image fetches no blob: through a counting proxy, `pull --policy` and `copy --policy`
/// of an unsigned image GET manifests and signature lookups only, never `/blobs/`.
#[test]
fn a_refused_image_fetches_no_blob() {
    let t = tempfile::tempdir().unwrap();
    let (_key, public) = keypair(t.path());
    let (reg, _reference, _digest) = registry_with_image();
    let proxy = hoist_testkit::proxy::FaultProxy::start(&reg.url(), vec![]).unwrap();
    let phost = proxy.host();
    let policy = write_policy(
        t.path(),
        "policy.json",
        serde_json::json!({"default": signed_by(&public, serde_json::json!({"type": "matchRepository"}))}),
    );
    let unsigned = format!("{phost}/app:v1");
    let pulled = t.path().join("pulled");
    let copied = t.path().join("copied");
    let copy_dest = format!("oci:{}:v1", copied.display());
    let runs = [
        ("pull", vec!["pull", "--policy", policy.to_str().unwrap(), &unsigned, pulled.to_str().unwrap()], &pulled),
        ("copy", vec!["copy", "--policy", policy.to_str().unwrap(), &unsigned, &copy_dest], &copied),
    ];
    for (what, args, dir) in runs {
        proxy.state().reset();
        let mut all = vec!["--insecure-registry", &phost];
        all.extend(args);
        let out = hoist(&all);
        assert_eq!(exit_code(&out), 5, "{what} of an unsigned image: {}", stderr(&out));
        assert!(stderr(&out).contains("no signature"), "{what}: {}", stderr(&out));
        assert!(!dir.exists(), "a refused {what} wrote {}", dir.display());
        let seen = proxy.exchanges();
        let blob_gets = seen.iter().filter(|e| e.method == "GET" && e.path.contains("/blobs/")).count();
        assert_eq!(blob_gets, 0, "a refused {what} fetched blobs: {seen:#?}");
        assert!(
            seen.iter().any(|e| e.path.contains("/manifests/") && !e.path.contains("sha256-")),
            "{what}: the manifest did not go through the proxy: {seen:#?}"
        );
        assert!(
            seen.iter().any(|e| e.path.contains("/manifests/sha256-") || e.path.contains("/referrers/")),
            "{what}: no signature lookup went through the proxy: {seen:#?}"
        );
    }
    // the control: an accepting policy pulls the same image's blobs through the same proxy
    proxy.state().reset();
    let accept =
        write_policy(t.path(), "accept.json", serde_json::json!({"default": [{"type": "insecureAcceptAnything"}]}));
    let out = hoist([
        "--insecure-registry",
        &phost,
        "pull",
        "--policy",
        accept.to_str().unwrap(),
        &unsigned,
        pulled.to_str().unwrap(),
    ]);
    assert_success("pull under an accepting policy", &out);
    assert!(
        proxy.exchanges().iter().any(|e| e.method == "GET" && e.path.contains("/blobs/")),
        "the accepted pull fetched no blob through the proxy: {:#?}",
        proxy.exchanges()
    );
}

/// `copy --convert oci --sign-by-sigstore-private-key` of a Docker schema 2 image signs the
/// converted OCI manifest's digest (judged by the independent legacy-format verifier), not the
/// source's.
#[test]
fn copy_convert_signs_the_converted_digest() {
    require_judges!();
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keypair(t.path());
    let reg = TestRegistry::start(RegistryOpts::plain());
    // skopeo writes a docker-archive (manifest.json only); hoist keeps it Docker schema 2 in a registry
    let tar = t.path().join("d.tar");
    assert_success(
        "skopeo copy to docker-archive",
        &skopeo([
            "copy",
            &format!("oci:{}:multi", root().join("examples/sample-layout").display()),
            &format!("docker-archive:{}:me/app:v1", tar.display()),
        ]),
    );
    ok(
        "copy docker",
        hoist(["copy", &format!("docker-archive:{}", tar.display()), &format!("{}/docker:v1", reg.host())]),
    );
    let docker_digest = registry_manifest_digest(&reg, "docker:v1");
    let dest = format!("{}/converted:v1", reg.host());
    ok(
        "copy --convert oci --sign-by-sigstore-private-key",
        hoist_pw(
            "pw",
            &[
                "copy",
                "--convert",
                "oci",
                "--sign-by-sigstore-private-key",
                key.to_str().unwrap(),
                &format!("{}/docker:v1", reg.host()),
                &dest,
            ],
        ),
    );
    let got = registry_manifest_digest(&reg, "converted:v1");
    assert_ne!(got, docker_digest, "--convert oci kept the Docker digest");
    let inspected = ok("inspect", hoist(["--format", "json", "inspect", &dest]));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{inspected}");
    assert_success(
        "python verifies the converted digest's signature",
        &judge(&[
            "verify",
            &reg.url(),
            "converted",
            &got,
            public.to_str().unwrap(),
            "--identity-repo",
            &format!("{}/converted", reg.host()),
        ]),
    );
    // the Docker digest has no signature there
    let out = judge(&["verify", &reg.url(), "converted", &docker_digest, public.to_str().unwrap()]);
    assert!(!out.status.success(), "the Docker digest verified at the destination");
}

/// A snapshot of a host directory (names and file contents), to show a test left it unchanged.
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let e = e.unwrap();
                let p = e.path();
                let body = if p.is_file() { std::fs::read(&p).ok() } else { None };
                (e.file_name().to_string_lossy().into_owned(), body)
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Without `--policy` and without `$HOME/.config/containers/policy.json`, the policy is
/// `/etc/containers/policy.json`. The child runs in a private mount namespace where a temp dir
/// holding a sigstoreSigned policy is bind-mounted over /etc/containers (HOME is an empty temp
/// dir): the unsigned pull is refused and writes nothing, the signed one pulls, and the host's
/// /etc/containers is unchanged afterwards.
#[test]
fn the_etc_policy_file_is_read_when_no_policy_and_no_home_policy() {
    hoist_testkit::require!("unshare", "mount");
    hoist_testkit::require_root!("a private mount namespace over /etc/containers");
    let etc = Path::new("/etc/containers");
    if !etc.is_dir() {
        hoist_testkit::skip!("no /etc/containers to mount over (this test never creates it on the host)");
    }
    let before = snapshot(etc);
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keypair(t.path());
    let (reg, reference, _digest) = registry_with_image();
    let host = reg.host();
    ok("sign", hoist_pw("pw", &["sign", "--key", key.to_str().unwrap(), &reference]));
    let unsigned = format!("{host}/app:unsigned");
    ok(
        "copy",
        hoist(["copy", &format!("oci:{}:artifact", root().join("examples/sample-layout").display()), &unsigned]),
    );
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let fake_etc = t.path().join("etc-containers");
    std::fs::create_dir_all(&fake_etc).unwrap();
    let mut scopes = serde_json::Map::new();
    scopes.insert(format!("{host}/app"), signed_by(&public, serde_json::json!({"type": "matchRepository"})));
    write_policy(
        &fake_etc,
        "policy.json",
        serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": scopes}}),
    );
    let pull = |r: &str, dir: &str| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/containers && shift && exec "$@""#)
            .arg("sh")
            .arg(&fake_etc)
            .arg(hoist_bin())
            .args(["pull", r, t.path().join(dir).to_str().unwrap()])
            .env("HOME", &home)
            .env_remove("COSIGN_PASSWORD")
            .output()
            .expect("run unshare")
    };
    let out = pull(&unsigned, "refused");
    assert_eq!(exit_code(&out), 5, "the /etc policy did not refuse: {}", stderr(&out));
    assert!(stderr(&out).contains("no signature"), "{}", stderr(&out));
    assert!(!t.path().join("refused").exists(), "a refused pull wrote its directory");
    assert_success("pull of the signed image under the /etc policy", &pull(&reference, "accepted"));
    assert!(t.path().join("accepted/index.json").is_file());
    assert!(!home.join(".config").exists(), "hoist wrote a home policy");
    assert_eq!(snapshot(etc), before, "the host's /etc/containers changed");
}

/// Runs `hoist ARGS` on a pseudo-terminal (python's `pty`, so /dev/tty is that terminal) with
/// no COSIGN_PASSWORD, typing `typed` once the password prompt shows; (exit code, terminal text).
fn hoist_on_a_tty(typed: &str, args: &[&str]) -> (i32, String) {
    const DRIVER: &str = r#"
import os, pty, sys
typed = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
out, sent = b"", False
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not sent and b"Enter password for" in out:
        os.write(fd, typed + b"\n")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new(python())
        .args(["-c", DRIVER, typed])
        .arg(hoist_bin())
        .args(args)
        .env_remove("COSIGN_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the pty driver");
    (exit_code(&out), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// With no COSIGN_PASSWORD and no --sign-passphrase-file, `sign` asks on the terminal and reads
/// the password there (echo off: the typed password never shows); the signature passes the
/// independent legacy verifier. A wrong password typed at the prompt says so. With no terminal
/// (a new session, stdin /dev/null) sign fails at once with a message naming the password sources.
#[test]
fn sign_prompts_for_the_password_on_a_terminal_and_fails_clearly_without_one() {
    hoist_testkit::require!(python().to_str().unwrap(), "setsid");
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    let password = "tty-Pass-7q9z";
    ok("key generate", hoist_pw(password, &["key", "generate", "--out", prefix.to_str().unwrap()]));
    let (key, public) = (t.path().join("k.key"), t.path().join("k.pub"));
    let (reg, reference, digest) = registry_with_image();

    let (code, text) = hoist_on_a_tty("not-the-password", &["sign", "--key", key.to_str().unwrap(), &reference]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("Enter password for"), "no prompt: {text}");
    assert!(text.contains("wrong password"), "{text}");
    assert!(!text.contains("not-the-password"), "the typed password was echoed: {text}");
    let out = judge(&["verify", &reg.url(), "app", &digest, public.to_str().unwrap()]);
    assert!(!out.status.success(), "a wrong password still signed");

    let (code, text) = hoist_on_a_tty(password, &["sign", "--key", key.to_str().unwrap(), &reference]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Enter password for"), "no prompt: {text}");
    assert!(!text.contains(password), "the typed password was echoed: {text}");
    let out = judge(&[
        "verify",
        &reg.url(),
        "app",
        &digest,
        public.to_str().unwrap(),
        "--identity-repo",
        &format!("{}/app", reg.host()),
    ]);
    assert_success("python verifies the signature made with the typed password", &out);

    // No terminal, no password source: a clear error, not a hang on stdin.
    let out = Command::new("setsid")
        .arg("-w")
        .arg(hoist_bin())
        .args(["sign", "--key", key.to_str().unwrap(), &reference])
        .env_remove("COSIGN_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setsid");
    assert_eq!(exit_code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("no terminal"), "{}", stderr(&out));
    assert!(stderr(&out).contains("COSIGN_PASSWORD"), "{}", stderr(&out));
}
