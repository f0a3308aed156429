//! The CLI's own rules: credentials per registry (`--src-creds`/`--dest-creds`, `--creds`
//! refused on a copy between two registries), usage errors for bad flag values (exit 2), the
//! total `--timeout`, and text from a source printed with control characters escaped.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

fn sample_layout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout")
}

fn text(out: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn creds_on_a_copy_between_two_registries_is_refused() {
    let (a, b) = ("127.0.0.1:1", "127.0.0.1:2");
    let out = hoist(["--creds", "u:p", "copy", &format!("{a}/x:v1"), &format!("{b}/y:v1")]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains(a) && se.contains(b), "the error names both registries: {se}");
    assert!(se.contains("--src-creds") && !se.contains("u:p"), "{se}");
    // The same through HOIST_CREDS, and for push/pull.
    let out = hoist_cmd()
        .env("HOIST_CREDS", "u:p")
        .args(["copy", &format!("docker://{a}/x:v1"), &format!("docker://{b}/y:v1")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
}

#[test]
fn creds_within_one_registry_and_side_creds_reach_their_registry() {
    let reg = TestRegistry::start(RegistryOpts::token("alice", "pw-4711"));
    let host = reg.host();
    let layout = sample_layout();
    let config = tempfile::tempdir().unwrap();
    // No stored logins: only the flags give credentials.
    let run = |args: &[&str]| {
        hoist_cmd().env("DOCKER_CONFIG", config.path()).env_remove("HOIST_CREDS").args(args).output().unwrap()
    };
    let src = format!("{}:multi", layout.display());
    // --dest-creds: a push authenticates to the destination.
    assert_success(
        "push --dest-creds",
        &run(&["-q", "push", "--dest-creds", "alice:pw-4711", &src, &format!("{host}/app:v1")]),
    );
    // Without credentials the registry refuses (exit 4): the flag was what made it work.
    let out = run(&["-q", "push", &src, &format!("{host}/app:v2")]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    // --creds on a copy within one registry is fine.
    let out = run(&["-q", "--creds", "alice:pw-4711", "copy", &format!("{host}/app:v1"), &format!("{host}/other:v1")]);
    assert_success("copy --creds within one registry", &out);
    // --src-creds: a pull authenticates to the source.
    let dst = tempfile::tempdir().unwrap();
    let o = dst.path().join("o").display().to_string();
    assert_success(
        "pull --src-creds",
        &run(&["-q", "pull", "--src-creds", "alice:pw-4711", &format!("{host}/other:v1"), &o]),
    );
    // A side flag for a side that is no registry is a usage error.
    let out = run(&["-q", "push", "--src-creds", "alice:pw-4711", &src, &format!("{host}/app:v3")]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("--src-creds"), "{se}");
}

#[track_caller]
fn assert_success(what: &str, out: &std::process::Output) {
    let (so, se) = text(out);
    assert!(out.status.success(), "{what} failed ({:?})\n{so}\n{se}", out.status.code());
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let layout = format!("oci:{}", sample_layout().display());
    let t = tempfile::tempdir().unwrap();
    let archive = format!("docker-archive:{}", t.path().join("x.tar").display());
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("--creds without a colon", vec!["--creds".into(), "justuser".into(), "tags".into(), layout.clone()]),
        ("a bad --platform", vec!["--platform".into(), "linux".into(), "tags".into(), layout.clone()]),
        (
            "a --platform list where one is needed",
            vec![
                "--platform".into(),
                "linux/amd64,linux/arm64".into(),
                "copy".into(),
                format!("{layout}:multi"),
                archive,
            ],
        ),
        ("--timeout 0", vec!["--timeout".into(), "0".into(), "tags".into(), layout.clone()]),
        (
            "both --password and --password-stdin",
            vec![
                "login".into(),
                "127.0.0.1:1".into(),
                "-u".into(),
                "u".into(),
                "-p".into(),
                "x".into(),
                "--password-stdin".into(),
            ],
        ),
    ];
    for (what, args) in cases {
        let out = hoist(&args);
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {se}");
        assert!(se.contains("hoist: error:"), "{what}: {se}");
    }
    assert!(!t.path().join("x.tar").exists());
}

/// A registry that accepts connections and never says a word.
fn silent_registry() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    addr.to_string()
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

#[test]
fn total_timeout_ends_a_command_against_a_silent_registry() {
    let host = silent_registry();
    let t = tempfile::tempdir().unwrap();
    for (verb, args) in [
        ("inspect", vec!["inspect".to_string(), format!("{host}/app:v1")]),
        (
            "copy",
            vec![
                "copy".to_string(),
                format!("{host}/app:v1"),
                format!("oci-archive:{}", t.path().join("out.tar").display()),
            ],
        ),
    ] {
        let started = Instant::now();
        let mut all = vec!["-q".to_string(), "--timeout".into(), "2".into(), "--read-timeout".into(), "300".into()];
        all.extend(args);
        let out = hoist(&all);
        let took = started.elapsed();
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{verb}: {se}");
        assert!(
            se.contains("timed out") && se.contains(verb) && se.contains(&host),
            "{verb}: names what timed out: {se}"
        );
        assert!(took < Duration::from_secs(30), "{verb} took {took:?}");
    }
    assert_eq!(leftovers(t.path()), Vec::<PathBuf>::new(), "no partial archive left");
}

#[test]
fn tags_from_a_layout_are_printed_with_controls_escaped() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("lay");
    let out =
        hoist(["-q", "copy", &format!("oci:{}:multi", sample_layout().display()), &format!("oci:{}", dir.display())]);
    assert_success("copy", &out);
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        "evil\u{1b}]0;owned\u{7}\u{1b}[31m".into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let out = hoist(["tags", &format!("oci:{}", dir.display())]);
    assert_success("tags", &out);
    let mut raw = Vec::new();
    out.stdout.as_slice().read_to_end(&mut raw).unwrap();
    assert!(!raw.contains(&0x1b) && !raw.contains(&0x07), "raw control bytes reached stdout: {raw:?}");
    let so = String::from_utf8_lossy(&raw);
    assert!(so.contains("evil\\u{1b}]0;owned\\u{7}\\u{1b}[31m"), "{so}");
}

#[test]
fn platform_picks_the_image_a_copy_takes_from_an_index() {
    let t = tempfile::tempdir().unwrap();
    let src = format!("oci:{}:multi", sample_layout().display());
    let raw = hoist(["inspect", "--raw", &src]);
    assert_success("inspect", &raw);
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .expect("the sample index has an amd64 image");
    let dst = t.path().join("out");
    let out = hoist(["-q", "--platform", "linux/amd64", "copy", &src, &format!("oci:{}:v1", dst.display())]);
    assert_success("copy --platform", &out);
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    assert_eq!(got["manifests"][0]["digest"], amd64.as_str());
}

#[test]
fn platform_means_one_image_on_inspect_and_pull_and_a_filtered_index_for_a_list() {
    let t = tempfile::tempdir().unwrap();
    let src = format!("oci:{}:multi", sample_layout().display());
    let index_raw = hoist(["inspect", "--raw", &src]);
    assert_success("inspect", &index_raw);
    let index: serde_json::Value = serde_json::from_slice(&index_raw.stdout).unwrap();
    let entry = |arch: &str| {
        index["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == arch).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let sha = |b: &[u8]| hoist::Digest::sha256_of(b).to_string();
    // inspect --platform: that image's manifest, as crane/oras show it.
    let out = hoist(["inspect", "--raw", "--platform", "linux/arm64", &src]);
    assert_success("inspect --platform", &out);
    assert_eq!(sha(&out.stdout), entry("arm64"));
    let out = hoist(["inspect", "--platform", "linux/s390x", &src]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "no such platform is not-found: {se}");
    assert!(se.contains("linux/s390x") && se.contains("linux/amd64"), "names what it has: {se}");
    let out = hoist(["inspect", "--platform", "linux/amd64,linux/arm64", &src]);
    assert_eq!(out.status.code(), Some(2), "inspect takes one platform: {}", text(&out).1);

    // copy: all by default (the same index), a list a filtered index with a note.
    let all = t.path().join("all");
    let out = hoist(["copy", &src, &format!("oci:{}:v1", all.display())]);
    assert_success("copy", &out);
    assert_eq!(text(&out).0.trim(), sha(&index_raw.stdout), "the default copies every platform, bytes unchanged");
    // A list of which the index has one: that image, and stdout and the note say so.
    let some = t.path().join("some");
    let out = hoist(["--platform", "linux/amd64,linux/s390x", "copy", &src, &format!("oci:{}:v1", some.display())]);
    assert_success("copy --platform list", &out);
    let (so, se) = text(&out);
    assert_eq!(so.trim(), entry("amd64"), "stdout names what the destination got");
    assert!(se.contains("written as"), "the note says the digest changed: {se}");
    // A list of several of a bigger index: a filtered index, a new digest, the note.
    let store = t.path().join("store");
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hoist.toml");
    let out = hoist([
        "-q",
        "--platform",
        "linux/amd64,linux/arm64,linux/s390x",
        "build",
        "-f",
        file.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--tag",
        "three",
    ]);
    assert_success("build three platforms", &out);
    let three = text(&out).0.trim().to_string();
    let two = t.path().join("two");
    let out = hoist([
        "--platform",
        "linux/amd64,linux/s390x",
        "copy",
        &format!("oci:{}:three", store.display()),
        &format!("oci:{}:v1", two.display()),
    ]);
    assert_success("copy --platform two of three", &out);
    let (so, se) = text(&out);
    assert_ne!(so.trim(), three, "a filtered index has a new digest");
    assert!(se.contains("written as") && se.contains("filtered"), "the note says the digest changed: {se}");
    let got = hoist(["inspect", "--raw", &format!("oci:{}:v1", two.display())]);
    assert_eq!(sha(&got.stdout), so.trim());
    let got: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let archs: Vec<&str> =
        got["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    assert_eq!(archs, ["amd64", "s390x"], "{got}");

    // pull --platform from a registry: that one image.
    let reg = TestRegistry::plain();
    let out = hoist(["-q", "push", &src, &format!("{}/plat:v1", reg.host())]);
    assert_success("push", &out);
    let dst = t.path().join("pulled");
    let out =
        hoist(["-q", "--platform", "linux/arm64", "pull", &format!("{}/plat:v1", reg.host()), dst.to_str().unwrap()]);
    assert_success("pull --platform", &out);
    let got = hoist(["inspect", "--raw", &format!("oci:{}", dst.display())]);
    assert_success("inspect the pull", &got);
    assert_eq!(sha(&got.stdout), entry("arm64"));
}
