//! Shared helpers of hoist's integration tests: a real registry per test ([`registry`]), the
//! `hoist` binary, and the independent tools (skopeo, ...) that judge what hoist did.
//!
//! Use from a test file with `mod common;` and `use common::*;`. The fault-injecting proxy is
//! `hoist_testkit::proxy` (the workspace crate `crates/hoist-testkit`, a dev-dependency).
#![allow(dead_code)]

pub mod registry;
pub mod token;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(unused_imports)]
pub use registry::{LoggedRequest, RegistryOpts, TestRegistry};
#[allow(unused_imports)]
pub use token::{TokenOpts, TokenRequest, TokenServer, TOKEN_SERVICE};

/// The `hoist` binary cargo built for this test run.
pub fn hoist_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hoist"))
}

/// A `Command` for the `hoist` binary, to add env or a working directory before running.
pub fn hoist_cmd() -> Command {
    Command::new(hoist_bin())
}

/// Runs `hoist ARGS` to completion and returns its output (whatever the exit status).
pub fn hoist<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    hoist_cmd().args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", hoist_bin().display()))
}

/// A `Command` for skopeo with `--insecure-policy` (no /etc/containers/policy.json needed).
pub fn skopeo_cmd() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

/// Runs `skopeo --insecure-policy ARGS` and returns its output. Check [`have`] first.
pub fn skopeo<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    skopeo_cmd().args(args).output().unwrap_or_else(|e| panic!("cannot run skopeo: {e}"))
}

/// Whether `tool` is an executable on `PATH` (or an executable path).
pub fn have(tool: &str) -> bool {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if tool.contains('/') {
        return is_exec(Path::new(tool));
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_exec(&dir.join(tool))))
        .unwrap_or(false)
}

/// `have(tool)`, printing a skip note when it is missing: `if !require("umoci") { return; }`.
pub fn require(tool: &str) -> bool {
    let ok = have(tool);
    if !ok {
        eprintln!("SKIP: {tool} is not installed");
    }
    ok
}

/// Panics with the command's stdout and stderr unless it exited 0; returns stdout as text.
#[track_caller]
pub fn assert_success(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Copy a tree keeping modes and symlinks, giving every file the same fixed mtime (so a
/// copy differs from its source in timestamps, which reproducible builds must ignore).
pub fn copy_tree(src: &Path, dst: &Path) {
    use std::fs;
    use std::os::unix::fs::symlink;
    fs::create_dir_all(dst).unwrap();
    for e in walkdir::WalkDir::new(src).min_depth(1) {
        let e = e.unwrap();
        let to = dst.join(e.path().strip_prefix(src).unwrap());
        let ft = e.file_type();
        if ft.is_symlink() {
            symlink(fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            fs::create_dir_all(&to).unwrap();
            fs::set_permissions(&to, e.metadata().unwrap().permissions()).unwrap();
        } else {
            fs::copy(e.path(), &to).unwrap();
            filetime::set_file_mtime(&to, filetime::FileTime::from_unix_time(1_234_567_890, 0)).unwrap();
        }
    }
}
