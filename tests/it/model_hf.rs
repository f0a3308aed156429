//! `hoist model pack hf://ORG/REPO[@REV]` against the test hub (`hoist_testkit::hfhub`), which
//! the real `huggingface_hub.snapshot_download` must accept too: identical files after
//! `model unpack`, a re-run that downloads and uploads nothing, a cut connection that resumes.

use std::path::Path;

use hoist_testkit::hfhub::{HfHub, HubFile, HubRepo};
use hoist_testkit::proxy::{FaultProxy, Rule};

use crate::common::*;
use crate::model::{python_with, write_safetensors};

/// A repo with an LFS weight (3 MiB), and small non-LFS files; also written to `dir`.
fn repo(dir: &Path) -> HubRepo {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &[("w", "BF16", &[1024, 1536])]);
    std::fs::write(dir.join("config.json"), r#"{"architectures":["TinyForCausalLM"],"model_type":"tiny"}"#).unwrap();
    std::fs::write(dir.join("README.md"), "# tiny\n").unwrap();
    std::fs::write(dir.join("sub/tokenizer.json"), r#"{"v":1}"#).unwrap();
    let file = |p: &str, lfs: bool| HubFile::new(p, std::fs::read(dir.join(p)).unwrap(), lfs);
    HubRepo::new(
        "org/tiny",
        vec![
            file("README.md", false),
            file("config.json", false),
            file("model.safetensors", true),
            file("sub/tokenizer.json", false),
        ],
    )
}

fn run(what: &str, cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn uploads(reg: &TestRegistry) -> usize {
    reg.requests_now().iter().filter(|q| q.method == "PUT" && q.path.contains("/blobs/uploads/")).count()
}

#[test]
fn hf_pack_into_registry_unpacks_identical_and_a_rerun_moves_nothing() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let r = repo(&t.join("src"));
    let commit = r.commit.clone();
    let hub = HfHub::start(vec![r], Some("secret"));
    let target = format!("{}/hf/tiny:v1", reg.host());
    let pack = || {
        let mut c = hoist_cmd();
        c.env("HF_ENDPOINT", hub.url()).env("HF_TOKEN", "secret").env("HOIST_STORE", t.join("store")).args([
            "model",
            "pack",
            "hf://org/tiny",
            "--output",
            &format!("type=registry,name={target}"),
        ]);
        c
    };
    let d1 = run("pack", &mut pack());
    assert!(!t.join("store/blobs").exists(), "no store copy without --store");
    let out = t.join("out");
    run("unpack", hoist_cmd().args(["model", "unpack", &target, out.to_str().unwrap()]));
    assert_eq!(file_digests(&out), file_digests(&t.join("src")));
    let cfg = run("describe", hoist_cmd().args(["inspect", "--format", "json", &target]));
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(v["artifactType"], "application/vnd.cncf.model.manifest.v1+json");
    let listed = run("list", hoist_cmd().args(["model", "unpack", &target, "x", "--list", "--format", "json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);

    // The config records where the model came from, and the weight's header describes it.
    let m: serde_json::Value =
        serde_json::from_str(&run("raw", hoist_cmd().args(["inspect", "--raw", &target]))).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap();
    let blob = reqwest::blocking::get(format!("{}/v2/hf/tiny/blobs/{cd}", reg.url())).unwrap().bytes().unwrap();
    let c: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    assert_eq!(c["descriptor"]["revision"], commit.as_str(), "{c}");
    assert_eq!(c["descriptor"]["sourceURL"], format!("{}/org/tiny", hub.url()));
    assert_eq!(c["config"]["precision"], "bf16");
    assert_eq!(c["config"]["paramSize"], "1.6M");
    assert_eq!(c["config"]["architecture"], "TinyForCausalLM");
    crate::model::validates(hoist_testkit::test_name!(), &blob);

    // A re-run downloads nothing from the hub and uploads nothing to the registry.
    let (dl, up) = (hub.downloads(), uploads(&reg));
    let d2 = run("re-run", &mut pack());
    assert_eq!(d1, d2, "same commit, same artifact");
    assert_eq!(hub.downloads() - dl, 0, "{:?}", &hub.requests()[dl..]);
    assert_eq!(uploads(&reg) - up, 0);

    // Without the token the hub refuses, and hoist says so (exit 4).
    let out = hoist_cmd()
        .env("HF_ENDPOINT", hub.url())
        .env_remove("HF_TOKEN")
        .args(["model", "pack", "hf://org/tiny", "--output", &format!("type=registry,name={target}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The config blob `target` names in `reg`, as JSON.
fn model_config(reg: &TestRegistry, target: &str) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&run("raw", hoist_cmd().args(["inspect", "--raw", target]))).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap();
    let repo = target.split_once('/').unwrap().1.split_once(':').unwrap().0;
    let blob = reqwest::blocking::get(format!("{}/v2/{repo}/blobs/{cd}", reg.url())).unwrap().bytes().unwrap();
    serde_json::from_slice(&blob).unwrap()
}

#[test]
fn no_store_pack_writes_no_local_file() {
    // A pack into a registry without a store (from a directory and from the hub) creates no
    // file: TMPDIR names a directory that does not exist (a temp file would fail), and HOME
    // and the XDG directories are empty before and after. The model is still described
    // (the hub's headers are read from memory).
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let hub = HfHub::start(vec![repo(&t.join("src"))], None);
    let homes = ["home", "config", "cache", "state", "data", "runtime"].map(|d| t.join("env").join(d));
    for d in &homes {
        std::fs::create_dir_all(d).unwrap();
    }
    let pack = |from: &str, target: &str| {
        let mut c = hoist_cmd();
        c.env("HF_ENDPOINT", hub.url())
            .env("HOIST_STORE", t.join("store"))
            .env("TMPDIR", t.join("no-such-tmp"))
            .env("HOME", &homes[0])
            .env("XDG_CONFIG_HOME", &homes[1])
            .env("XDG_CACHE_HOME", &homes[2])
            .env("XDG_STATE_HOME", &homes[3])
            .env("XDG_DATA_HOME", &homes[4])
            .env("XDG_RUNTIME_DIR", &homes[5])
            .args(["model", "pack", from, "--output", &format!("type=registry,name={target}")]);
        run(&format!("pack {from}"), &mut c);
    };
    let from_hub = format!("{}/hf/nostore:v1", reg.host());
    let from_dir = format!("{}/dir/nostore:v1", reg.host());
    pack("hf://org/tiny", &from_hub);
    pack(t.join("src").to_str().unwrap(), &from_dir);
    assert!(!t.join("store").exists(), "no store without --store");
    assert!(!t.join("no-such-tmp").exists());
    for d in &homes {
        let left: Vec<_> = walkdir::WalkDir::new(d).min_depth(1).into_iter().map(|e| e.unwrap().into_path()).collect();
        assert!(left.is_empty(), "pack left {left:?}");
    }
    for target in [&from_hub, &from_dir] {
        let c = model_config(&reg, target);
        assert_eq!(c["config"]["precision"], "bf16", "{target}: {c}");
        assert_eq!(c["config"]["paramSize"], "1.6M", "{target}: {c}");
        assert_eq!(c["config"]["architecture"], "TinyForCausalLM", "{target}: {c}");
    }
}

#[test]
fn hf_pack_resumes_a_cut_download_into_a_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let hub = HfHub::start(vec![repo(&t.join("src"))], None);
    // The download of the weight (the third GET of it: two header reads come first) is cut after 1 MiB.
    let proxy = FaultProxy::start(
        &hub.url(),
        vec![Rule::new().method("GET").path("model.safetensors").nth(3).drop_response_after(1 << 20)],
    )
    .unwrap();
    let layout = t.join("layout");
    run(
        "pack",
        hoist_cmd().env("HF_ENDPOINT", proxy.url()).args([
            "model",
            "pack",
            "hf://org/tiny@main",
            "--include",
            "*.safetensors",
            "--include",
            "*.json",
            "--output",
            &format!("type=local-layout,dest={}", layout.display()),
            "--tag",
            "v1",
        ]),
    );
    let ranges: Vec<_> = hub.requests().into_iter().filter(|r| r.range.is_some()).collect();
    assert!(
        ranges.iter().any(|r| r.path.contains("model.safetensors")
            && r.status == 206
            && !r.range.as_deref().unwrap_or("").starts_with("bytes=0-")),
        "a Range request continued the cut download: {:?}",
        hub.requests()
    );
    let out = t.join("out");
    run(
        "unpack",
        hoist_cmd().args(["model", "unpack", &format!("oci:{}:v1", layout.display()), out.to_str().unwrap()]),
    );
    let mut want = file_digests(&t.join("src"));
    want.remove("README.md");
    assert_eq!(file_digests(&out), want);
}

#[test]
fn hf_pack_resumes_a_cut_download_into_the_registry() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let hub = HfHub::start(vec![repo(&t.join("src"))], None);
    // As above, the weight's download is cut after 1 MiB, here while it streams into an upload.
    let proxy = FaultProxy::start(
        &hub.url(),
        vec![Rule::new().method("GET").path("model.safetensors").nth(3).drop_response_after(1 << 20)],
    )
    .unwrap();
    let r = format!("{}/hf/tiny:v1", reg.host());
    run(
        "pack",
        hoist_cmd().env("HF_ENDPOINT", proxy.url()).env("HOIST_STORE", t.join("store")).args([
            "model",
            "pack",
            "hf://org/tiny@main",
            "--output",
            &format!("type=registry,name={r}"),
        ]),
    );
    assert!(!t.join("store").exists(), "nothing stored locally");
    let ranges: Vec<_> = hub.requests().into_iter().filter(|q| q.range.is_some()).collect();
    assert!(
        ranges.iter().any(|q| q.path.contains("model.safetensors")
            && q.status == 206
            && !q.range.as_deref().unwrap_or("").starts_with("bytes=0-")),
        "a Range request continued the cut download: {:?}",
        hub.requests()
    );
    let out = t.join("out");
    run("unpack", hoist_cmd().args(["model", "unpack", &r, out.to_str().unwrap()]));
    assert_eq!(file_digests(&out), file_digests(&t.join("src")));
}

/// The hub is reached through the registry client's network layer: a 503 with `Retry-After`
/// is retried as a registry's answer is, `--retries` means the same for both (one attempt:
/// the 503 is final), and the token goes with every request to the hub.
#[test]
fn hf_pack_retries_a_503_under_the_registry_clients_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let hub = HfHub::start(vec![repo(&t.join("src"))], Some("secret"));
    let rules = || vec![Rule::new().method("GET").path("/revision/").nth(1).status(503).retry_after(1)];
    let proxy = FaultProxy::start(&hub.url(), rules()).unwrap();
    let pack = |retries: &str, dest: &Path| {
        hoist_cmd()
            .env("HF_ENDPOINT", proxy.url())
            .env("HF_TOKEN", "secret")
            .args(["--retries", retries, "model", "pack", "hf://org/tiny", "--include", "*.json", "--output"])
            .arg(format!("type=local-layout,dest={}", dest.display()))
            .args(["--tag", "v1"])
            .output()
            .unwrap()
    };
    let out = pack("1", &t.join("one"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("503"), "--retries 1: the 503 is final: {err}");

    proxy.set_rules(rules());
    let out = pack("6", &t.join("two"));
    assert!(out.status.success(), "the 503 is retried: {}", String::from_utf8_lossy(&out.stderr));
    let asked: Vec<Option<u16>> =
        proxy.exchanges().iter().filter(|e| e.path.contains("/revision/")).map(|e| e.status).collect();
    assert_eq!(asked, [Some(503), Some(503), Some(200)], "one attempt, then two");
    assert!(
        proxy.exchanges().iter().all(|e| e.authorization.as_deref() == Some("Bearer secret")),
        "the token goes to the hub: {:?}",
        proxy.exchanges()
    );
}

#[test]
fn huggingface_hub_client_accepts_the_test_hub() {
    let Some(py) = python_with(hoist_testkit::test_name!(), "huggingface_hub") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let r = repo(&t.join("src"));
    let commit = r.commit.clone();
    let hub = HfHub::start(vec![r], Some("tok"));
    let script = r#"
import sys
from huggingface_hub import snapshot_download
p = snapshot_download("org/tiny", revision="main", local_dir=sys.argv[1], token="tok")
print(p)
"#;
    let out = std::process::Command::new(py)
        .args(["-c", script, t.join("dl").to_str().unwrap()])
        .env("HF_ENDPOINT", hub.url())
        .env("HF_HOME", t.join("hfhome"))
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot_download: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_digests(&t.join("dl")), file_digests(&t.join("src")));
    assert!(hub.requests().iter().any(|r| r.path.contains(&commit)), "the client resolved main to the commit");
}
