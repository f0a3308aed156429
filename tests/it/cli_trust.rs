//! A CLI people trust (issue 15): a closed stdout pipe ends quietly with status 0, errors say
//! what was not found where, a directory that is not an OCI layout is a usage error (exit 2),
//! JSON errors with `--format json`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

use crate::common::*;

pub(crate) fn sample_layout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout")
}

pub(crate) fn text(out: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE,
/// so the test does not depend on timing (`| head -1` may or may not close in time).
fn closed_pipe() -> OwnedFd {
    let mut fds = [0i32; 2];
    // SAFETY: pipe fills two fresh descriptors, each owned exactly once below.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptors came from pipe() and are owned only here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn a_closed_stdout_pipe_ends_quietly_with_status_0() {
    let layout = sample_layout();
    let cases: Vec<Vec<String>> = vec![
        vec!["tags".into(), format!("oci:{}", layout.display())],
        vec!["inspect".into(), format!("oci:{}:multi", layout.display())],
        vec!["--format".into(), "json".into(), "tags".into(), format!("oci:{}", layout.display())],
        vec!["copy".into(), format!("oci:{}:multi", layout.display()), "oci-archive:-".into()],
        vec!["completion".into(), "bash".into()],
        vec!["man".into()],
    ];
    for args in cases {
        let out = hoist_cmd().args(&args).stdout(Stdio::from(closed_pipe())).stderr(Stdio::piped()).output().unwrap();
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(0), "hoist {args:?}: {se}");
        assert!(!se.contains("panicked") && !se.contains("Broken pipe"), "hoist {args:?}: {se}");
    }
}

#[test]
fn not_found_errors_name_the_tag_and_the_repository() {
    let reg = TestRegistry::plain();
    let host = reg.host();
    let layout = sample_layout();
    let out = hoist(["-q", "push", &format!("{}:multi", layout.display()), &format!("{host}/demo:v0")]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = hoist(["inspect", &format!("{host}/demo:v1")]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert!(se.contains(&format!("tag `v1` not found in repository {host}/demo")), "{se}");
    let out = hoist(["tags", &format!("{host}/nothing-here")]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert!(se.contains(&format!("{host}/nothing-here")), "{se}");
    // A layout's missing tag names the tag and the layout.
    let out = hoist(["inspect", &format!("oci:{}:nope", layout.display())]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert!(se.contains("\"nope\" not found in oci:"), "{se}");
}

#[test]
fn a_directory_that_is_not_a_layout_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), "not a layout").unwrap();
    for args in [
        vec!["inspect".to_string(), format!("oci:{}", dir.path().display())],
        vec!["tags".to_string(), format!("oci:{}", dir.path().display())],
        vec!["layout".to_string(), "fsck".to_string(), dir.path().display().to_string()],
    ] {
        let out = hoist(&args);
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {se}");
        assert!(se.contains("is not an OCI layout"), "{args:?}: {se}");
    }
    let missing = dir.path().join("missing");
    let out = hoist(["inspect", &format!("oci:{}", missing.display())]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    assert!(se.contains("not found"), "{se}");
    // Usage errors exit 2: an unknown command, an unknown flag, a bad value.
    assert_eq!(hoist(["no-such-command"]).status.code(), Some(2));
    assert_eq!(hoist(["tags", "--no-such-flag", "x"]).status.code(), Some(2));
    assert_eq!(hoist(["--progress", "loud", "tags", "x"]).status.code(), Some(2));
}

#[test]
fn json_errors_carry_kind_message_and_exit_code() {
    let layout = sample_layout();
    let out = hoist(["--format", "json", "inspect", &format!("oci:{}:nope", layout.display())]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{se}");
    let v: serde_json::Value = serde_json::from_str(so.trim()).unwrap_or_else(|e| panic!("{e}: {so}"));
    assert_eq!(v["error"]["kind"], "notFound", "{v}");
    assert_eq!(v["error"]["exitCode"], 3, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"), "{v}");
}

#[test]
fn completion_man_pages_and_version() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = hoist(["completion", shell]);
        let (so, se) = text(&out);
        assert!(out.status.success() && so.contains("hoist") && so.len() > 1000, "{shell}: {se}");
        if shell == "bash" && hoist_testkit::optional!("bash") {
            let t = tempfile::tempdir().unwrap();
            let f = t.path().join("hoist.bash");
            std::fs::write(&f, &so).unwrap();
            let check = std::process::Command::new("bash").arg("-n").arg(&f).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
        }
    }
    let t = tempfile::tempdir().unwrap();
    let out = hoist(["man".as_ref(), t.path().join("man1").as_os_str()] as [&std::ffi::OsStr; 2]);
    assert!(out.status.success(), "{}", text(&out).1);
    for page in ["hoist.1", "hoist-copy.1", "hoist-layout-gc.1"] {
        let body = std::fs::read_to_string(t.path().join("man1").join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.contains(".TH"), "{page}");
    }
    let out = hoist(["--version"]);
    let (so, _) = text(&out);
    assert!(so.starts_with("hoist ") && so.contains("commit ") && so.contains("built "), "{so}");
    let out = hoist(["--format", "json", "version"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["commit"].is_string() && v["buildDate"].as_str().is_some_and(|d| d.len() == 10), "{v}");
}

#[test]
fn the_release_profile_ships_no_debug_info_and_the_readme_says_how_to_install() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let release = &manifest["profile"]["release"];
    let debug_off = matches!(release.get("debug"), None | Some(toml::Value::Boolean(false)))
        || release.get("debug").and_then(|d| d.as_str()) == Some("none");
    let stripped = matches!(release.get("strip").and_then(|s| s.as_str()), Some("debuginfo" | "symbols"));
    // Line tables alone still link the standard library's debug info in (a 100 MiB binary).
    assert!(debug_off && stripped, "release profile: {release:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("cargo install --locked --path ."), "README install line");
}
