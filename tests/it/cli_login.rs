//! `hoist login` prompts for the password on a terminal (driven through a pty) and warns
//! when `-p` puts it on the command line; Ctrl-C (SIGINT) ends a transfer cleanly, exit 130.

use std::time::Duration;

use hoist_testkit::relay::{Relay, RelayConfig};

use crate::cli_trust::text;
use crate::common::*;

/// Python's `pty` drives `hoist login` as a user at a terminal would: waits for the prompt,
/// types the password, and reports what the terminal showed and the exit status.
const PTY_DRIVER: &str = r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
seen = b""
deadline = time.time() + 20
while b"Password" not in seen and time.time() < deadline:
    seen += os.read(fd, 1024)
os.write(fd, b"pw-4711\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[test]
fn login_prompts_on_a_tty_and_warns_about_dash_p() {
    hoist_testkit::require!("python3");
    let reg = TestRegistry::start(RegistryOpts::auth("alice", "pw-4711"));
    let config = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(PTY_DRIVER)
        .arg(hoist_bin())
        .args(["login", &reg.host(), "-u", "alice"])
        .env("DOCKER_CONFIG", config.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}\n{se}");
    assert!(so.contains("Password for alice@"), "the prompt: {so}");
    assert!(!so.contains("pw-4711"), "the password was echoed: {so}");
    let stored = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    assert!(stored.contains(&reg.host()), "{stored}");
    // Not a terminal and no password: a usage error instead of a hang.
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["login", &reg.host(), "-u", "alice"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    // -p works, with a warning.
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["login", &reg.host(), "-u", "alice", "-p", "pw-4711"])
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success(), "{se}");
    assert!(se.contains("warning") && se.contains("--password-stdin"), "{se}");
}

/// The README's promise for Ctrl-C: exit 130, "its partial files removed (complete blobs stay,
/// so a re-run continues)". A pull through a 2 MiB/s relay is interrupted once the two small
/// layers are complete and the 8 MiB one (one stream into a temp file) is partly written; then
/// the temp file is gone, the complete blobs stay, and a re-run through a fresh counting relay
/// moves the big layer and the documents only.
#[test]
fn ctrl_c_ends_a_pull_cleanly_with_exit_130() {
    const BIG: u64 = 8 << 20;
    const SMALL: u64 = 256 << 10;
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let root =
        hoist_testkit::fixtures::image_layout(src.path(), "v1", &[BIG as usize, SMALL as usize, SMALL as usize], 31);
    let pushed = hoist(["-q", "push", &format!("{}:v1", src.path().display()), &format!("{}/int:v1", reg.host())]);
    assert!(pushed.status.success(), "{}", text(&pushed).1);
    let blob = |hex: &str| std::fs::read(src.path().join("blobs/sha256").join(hex)).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&root[7..])).unwrap();
    let hex = |v: &serde_json::Value| v["digest"].as_str().unwrap()[7..].to_string();
    let layers: Vec<String> = manifest["layers"].as_array().unwrap().iter().map(hex).collect();
    let (big, complete_first) =
        (layers[0].clone(), vec![layers[1].clone(), layers[2].clone(), hex(&manifest["config"])]);

    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", reg.port()).parse().unwrap();
    let slow =
        Relay::start(upstream, RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 2 << 20 }).unwrap();
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("o");
    let pull = |relay: &Relay| {
        let host = relay.host();
        vec![
            "--insecure-registry".to_string(),
            host.clone(),
            "--progress".into(),
            "plain".into(),
            "pull".into(),
            format!("{host}/int:v1"),
            format!("oci:{}", dst.display()),
        ]
    };
    let mut child = hoist_cmd()
        .args(pull(&slow))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = dst.join(".hoist/tmp");
    let is_complete = |hex: &String| dst.join("blobs/sha256").join(hex).exists();
    let partial = || {
        std::fs::read_dir(&tmp)
            .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).max().unwrap_or(0))
            .unwrap_or(0)
    };
    // Wait for the state to interrupt in (observed on disk, no fixed sleep).
    let start = std::time::Instant::now();
    while !(complete_first.iter().all(is_complete) && partial() >= 1 << 20) {
        assert!(child.try_wait().unwrap().is_none(), "the pull ended before it could be interrupted");
        assert!(start.elapsed() < Duration::from_secs(120), "the pull never got to the big layer");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{se}");
    assert!(se.contains("interrupted"), "{se}");
    let left: Vec<_> = std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "partial files left: {left:?}");
    assert!(complete_first.iter().all(is_complete), "a complete blob was removed");
    assert!(!is_complete(&big), "the interrupted blob is in blobs/");

    // The re-run moves the big layer once and the documents (a few KiB), not the small
    // layers again (each would add 256 KiB): counted by a fresh relay.
    let counting = Relay::start(upstream, RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 0 }).unwrap();
    let again = hoist(pull(&counting));
    assert!(again.status.success(), "{}", text(&again).1);
    let moved = counting.stats().snapshot().1;
    assert!(moved >= BIG, "the re-run moved {moved} bytes: less than the missing layer");
    assert!(moved < BIG + SMALL, "the re-run moved {moved} bytes: it fetched complete blobs again");
    assert!(is_complete(&big));
    let fsck = hoist(["layout", "fsck", dst.to_str().unwrap()]);
    assert!(fsck.status.success(), "{}", text(&fsck).1);
}
