//! `--progress plain|json` against a registry behind the fault proxy, slowed down: a start
//! line per blob, heartbeat lines while a blob takes long, an end line, the summary; no ANSI.

use std::time::Duration;

use hoist_testkit::proxy::{FaultProxy, Rule};

use crate::cli_trust::{sample_layout, text};
use crate::common::*;

#[test]
fn plain_progress_shows_start_heartbeat_end_and_summary_on_a_slow_registry() {
    let reg = TestRegistry::plain();
    let layout = sample_layout();
    let out = hoist(["-q", "push", &format!("{}:multi", layout.display()), &format!("{}/slow:v1", reg.host())]);
    assert!(out.status.success(), "{}", text(&out).1);
    // Every blob download waits 2.5 s before its body: the transfer is long, as on a slow link.
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new().method("GET").path("/blobs/").stall(Duration::from_millis(2500))],
    )
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("o");
    let out = hoist_cmd()
        .env("HOIST_PROGRESS_INTERVAL", "0.5")
        .args(["--progress", "plain", "-j", "1", "pull"])
        .arg(format!("{}/slow:v1", proxy.host()))
        .arg(format!("oci:{}", dst.display()))
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success(), "{se}");
    assert!(!se.contains('\u{1b}'), "plain mode writes no ANSI escapes: {se:?}");
    let lines: Vec<&str> = se.lines().collect();
    let starts = lines.iter().filter(|l| l.trim_start().starts_with("start sha256:")).count();
    let beats = lines.iter().filter(|l| l.trim_start().starts_with("... sha256:") && l.contains("/s")).count();
    let ends = lines.iter().filter(|l| l.trim_start().starts_with("copied sha256:")).count();
    assert!(starts >= 1 && starts == ends, "a start and an end line per blob:\n{se}");
    assert!(beats >= starts, "heartbeat lines (bytes, rate) while blobs wait:\n{se}");
    let summary = lines.last().copied().unwrap_or_default();
    assert!(summary.starts_with("summary: ") && summary.contains("copied") && summary.contains("/s"), "{se}");

    // json: every stderr line is one JSON event, the last the summary.
    let dst = t.path().join("j");
    let out = hoist_cmd()
        .env("HOIST_PROGRESS_INTERVAL", "0.5")
        .args(["--progress", "json", "-j", "1", "pull"])
        .arg(format!("{}/slow:v1", proxy.host()))
        .arg(format!("oci:{}", dst.display()))
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success(), "{se}");
    let events: Vec<serde_json::Value> =
        se.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap_or("")).collect();
    assert!(kinds.contains(&"start") && kinds.contains(&"progress") && kinds.contains(&"done"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"summary"), "{kinds:?}");
    assert!(events.last().unwrap()["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn quiet_and_no_color_write_no_escapes() {
    let layout = sample_layout();
    let t = tempfile::tempdir().unwrap();
    let out = hoist_cmd()
        .env("NO_COLOR", "1")
        .args(["copy", &format!("oci:{}:multi", layout.display()), &format!("oci:{}", t.path().join("a").display())])
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success() && !se.contains('\u{1b}') && se.contains("summary:"), "{se}");
    let out = hoist([
        "--progress",
        "quiet",
        "copy",
        &format!("oci:{}:multi", layout.display()),
        &format!("oci:{}", t.path().join("b").display()),
    ]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", text(&out).1);
}

#[test]
fn model_pack_shows_hashing_progress_per_file() {
    // A weight file big enough to take a while to hash, and a small one.
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let big: Vec<u8> = (0..48u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(model.join("weights.bin"), &big).unwrap();
    std::fs::write(model.join("README.md"), "a model\n").unwrap();
    let store = t.path().join("store");
    let out = hoist_cmd()
        .env("HOIST_PROGRESS_INTERVAL", "0.01")
        .args(["--progress", "plain", "model", "pack", "--store"])
        .arg(&store)
        .arg(&model)
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success(), "{se}");
    assert!(!se.contains('\u{1b}'), "{se:?}");
    let lines: Vec<&str> = se.lines().map(str::trim_start).collect();
    let digest = hoist::Digest::sha256_of(&big).short();
    for f in ["weights.bin", "README.md"] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("start {f} (")) && l.contains("hashing")), "{f}:\n{se}");
        assert!(lines.iter().any(|l| l.starts_with(&format!("hashed {f} ("))), "{f}:\n{se}");
    }
    let end = lines.iter().find(|l| l.starts_with("hashed weights.bin")).unwrap();
    assert!(end.contains(&digest) && end.contains("48.0 MiB"), "the end line names the digest and size: {end}");
    let summary = lines.last().copied().unwrap_or_default();
    assert!(summary.starts_with("summary: 2 file(s) hashed"), "{se}");

    // json: start/done events with the file's name, the digest at the end.
    let out =
        hoist_cmd().args(["--progress", "json", "model", "pack", "--store"]).arg(&store).arg(&model).output().unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success(), "{se}");
    let events: Vec<serde_json::Value> =
        se.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect();
    let of = |kind: &str| {
        events.iter().find(|e| e["event"] == kind && e["file"] == "weights.bin").cloned().unwrap_or_default()
    };
    assert_eq!(of("start")["size"], 48u64 << 20, "{se}");
    assert_eq!(of("done")["digest"], hoist::Digest::sha256_of(&big).to_string(), "{se}");
    assert_eq!(events.last().unwrap()["filesHashed"], 2, "{se}");

    // Without a store (straight to an output): the same lines.
    let out = hoist_cmd()
        .args(["--progress", "plain", "model", "pack", "--output"])
        .arg(format!("type=oci,dest={}", t.path().join("m.tar").display()))
        .arg(&model)
        .output()
        .unwrap();
    let (_, se) = text(&out);
    assert!(out.status.success(), "{se}");
    assert!(se.lines().any(|l| l.trim_start().starts_with("hashed weights.bin")), "{se}");
}

/// Python's `pty` runs a command with stderr at an 80x24 terminal and hands back everything
/// drawn there.
const PTY_RUN: &str = r#"
import fcntl, os, pty, struct, sys, termios
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # data (stdout) elsewhere: stderr is the display
    os.execv(sys.argv[1], sys.argv[1:])
seen = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(seen)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// What a terminal shows, line by line: ANSI escapes removed, split at `\n` and `\r`.
fn rendered_lines(raw: &str) -> Vec<String> {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out.split(['\n', '\r']).map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect()
}

fn at_a_terminal(columns: Option<&str>, args: &[String]) -> (bool, String) {
    at_a_terminal_with(columns, args, &[])
}

fn at_a_terminal_with(columns: Option<&str>, args: &[String], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(PTY_RUN).arg(hoist_bin()).args(args);
    cmd.env("TERM", "xterm-256color").env_remove("NO_COLOR").env_remove("COLUMNS");
    if let Some(c) = columns {
        cmd.env("COLUMNS", c);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn tty_bars_fit_the_terminal_and_show_an_eta() {
    hoist_testkit::require!("python3");
    let reg = TestRegistry::plain();
    let layout = sample_layout();
    let out = hoist(["-q", "push", &format!("{}:multi", layout.display()), &format!("{}/tty:v1", reg.host())]);
    assert!(out.status.success(), "{}", text(&out).1);
    // Slowed down: every blob waits before its body, so the bars are drawn for a while.
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new().method("GET").path("/blobs/").stall(Duration::from_millis(1200))],
    )
    .unwrap();
    let t = tempfile::tempdir().unwrap();
    for (columns, width) in [(None, 80), (Some("60"), 60)] {
        let dst = t.path().join(format!("o{width}"));
        let args = vec![
            "--progress".to_string(),
            "tty".into(),
            "-j".into(),
            "2".into(),
            "pull".into(),
            format!("{}/tty:v1", proxy.host()),
            format!("oci:{}", dst.display()),
        ];
        let (ok, raw) = at_a_terminal(columns, &args);
        assert!(ok, "{raw}");
        assert!(raw.contains('\u{1b}'), "a terminal gets a drawn display: {raw:?}");
        let lines = rendered_lines(&raw);
        // The display's own lines (bars, end lines, the summary) fit; the command's notes
        // (`SRC -> DST: …`) are text the terminal wraps.
        let note = |l: &str| l.contains(" -> ");
        for l in lines.iter().filter(|l| !note(l)) {
            assert!(l.chars().count() <= width, "a line wider than {width} columns:\n{l}\nin:\n{}", lines.join("\n"));
        }
        let ends = lines.iter().filter(|l| l.trim_start().starts_with("copied sha256:")).count();
        assert!(ends >= 3, "an end line per blob:\n{}", lines.join("\n"));
        // A bar line: `NAME [====>   ] 1.0 KiB/2.0 KiB 1.0 KiB/s eta 1s` (no bar graphic
        // when the width leaves no room for one).
        let bars: Vec<&String> = lines.iter().filter(|l| l.starts_with("total") || l.starts_with("sha256:")).collect();
        if width == 80 {
            assert!(bars.iter().any(|l| l.contains("] ")), "bar graphics at 80 columns:\n{}", lines.join("\n"));
        }
        assert!(bars.iter().any(|l| l.starts_with("total")), "the overall bar:\n{}", lines.join("\n"));
        assert!(bars.iter().any(|l| l.starts_with("sha256:")), "a bar per blob:\n{}", lines.join("\n"));
        for b in &bars {
            assert!(b.contains(" eta ") && b.contains("/s"), "a bar with rate and ETA: {b}");
        }
        assert!(lines.iter().any(|l| l.starts_with("summary: ")), "{}", lines.join("\n"));
    }

    // A long file name is cut in the middle to fit (model pack hashing at a terminal).
    let model = t.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let long = format!("weights-{}-end.bin", "x".repeat(90));
    std::fs::write(model.join(&long), vec![7u8; 8 << 20]).unwrap();
    let args = vec![
        "--progress".to_string(),
        "tty".into(),
        "model".into(),
        "pack".into(),
        "--store".into(),
        t.path().join("store").display().to_string(),
        model.display().to_string(),
    ];
    let (ok, raw) = at_a_terminal(None, &args);
    assert!(ok, "{raw}");
    let lines = rendered_lines(&raw);
    let hashed = lines.iter().find(|l| l.starts_with("  hashed weights-")).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(hashed.contains('\u{2026}') && hashed.ends_with('s'), "cut in the middle: {hashed}");
    for l in lines.iter().filter(|l| !l.starts_with("packed ")) {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l}");
    }
}

#[test]
fn no_color_at_a_terminal_draws_no_escapes() {
    hoist_testkit::require!("python3");
    let t = tempfile::tempdir().unwrap();
    let copy = |dst: &str| {
        vec![
            "copy".to_string(),
            format!("oci:{}:multi", sample_layout().display()),
            format!("oci:{}", t.path().join(dst).display()),
        ]
    };
    // The default (auto) at a terminal draws; with NO_COLOR it writes plain lines.
    let (ok, raw) = at_a_terminal(None, &copy("a"));
    assert!(ok && raw.contains('\u{1b}'), "{raw:?}");
    let (ok, raw) = at_a_terminal_with(None, &copy("b"), &[("NO_COLOR", "1")]);
    assert!(ok, "{raw}");
    assert!(!raw.contains('\u{1b}'), "NO_COLOR: no escapes at a terminal either: {raw:?}");
    assert!(raw.contains("summary: "), "{raw}");
}
