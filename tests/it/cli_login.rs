//! `hoist login` prompts for the password on a terminal (driven through a pty) and warns
//! when `-p` puts it on the command line; Ctrl-C (SIGINT) ends a transfer cleanly, exit 130.

use std::time::Duration;

use hoist_testkit::proxy::{FaultProxy, Rule};

use crate::cli_trust::{sample_layout, text};
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

#[test]
fn ctrl_c_ends_a_pull_cleanly_with_exit_130() {
    let reg = TestRegistry::plain();
    let layout = sample_layout();
    let out = hoist(["-q", "push", &format!("{}:multi", layout.display()), &format!("{}/int:v1", reg.host())]);
    assert!(out.status.success(), "{}", text(&out).1);
    let proxy =
        FaultProxy::start(&reg.url(), vec![Rule::new().method("GET").path("/blobs/").stall(Duration::from_secs(30))])
            .unwrap();
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("o");
    let child = hoist_cmd()
        .args(["--progress", "plain", "pull"])
        .arg(format!("{}/int:v1", proxy.host()))
        .arg(format!("oci:{}", dst.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{se}");
    assert!(se.contains("interrupted"), "{se}");
    let tmp = dst.join(".hoist/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "partial files left: {left:?}");
}
