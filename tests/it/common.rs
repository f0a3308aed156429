//! Shared helpers of hoist's integration tests: the `hoist` binary this test run built, and
//! what the test kit (`crates/hoist-testkit`) offers: a real registry per test, token
//! servers, and the independent tools (skopeo, ...) that judge what hoist did.
//!
//! Use from a test module with `use crate::common;` and `use common::*;`. The fault-injecting
//! proxy is `hoist_testkit::proxy`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(unused_imports)]
pub use hoist_testkit::fixtures::copy_tree;
#[allow(unused_imports)]
pub use hoist_testkit::registry::{self, LoggedRequest, RegistryOpts, TestRegistry};
#[allow(unused_imports)]
pub use hoist_testkit::token::{self, TokenOpts, TokenRequest, TokenServer, TOKEN_SERVICE};
#[allow(unused_imports)]
pub use hoist_testkit::tools::*;

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

/// `hoist ARGS` with its own build store (`HOIST_STORE`) and no `SOURCE_DATE_EPOCH` from the
/// caller's environment; the output, whatever the exit status.
pub fn hoist_in(store: &Path, args: &[&str]) -> Output {
    hoist_cmd().env("HOIST_STORE", store).env_remove("SOURCE_DATE_EPOCH").args(args).output().expect("run hoist")
}

/// Asserts that `out` (of the step `what`) succeeded; its stdout, trimmed.
#[track_caller]
pub fn ok(what: &str, out: Output) -> String {
    assert_success(what, &out).trim().to_string()
}

/// Every regular file below `dir` (outside `.cache` directories, where huggingface_hub keeps
/// its own state) by its path relative to `dir`, with its `sha256:` digest.
pub fn file_digests(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && !e.path().components().any(|c| c.as_os_str() == ".cache"))
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().to_string();
            (rel, sha256(&std::fs::read(e.path()).unwrap()))
        })
        .collect()
}

/// `hoist build` of `examples/hoist.toml` (two platforms unless `extra` says `--platform`) with
/// the store `store` and `--output OUTPUT`; panics naming `OUTPUT` when it fails.
pub fn build_example(store: &Path, extra: &[&str], output: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hoist.toml");
    let mut args = vec!["build", "--store", store.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["-f", file.to_str().unwrap(), "--output", output]);
    assert_success(&format!("hoist build -> {output}"), &hoist(&args));
}
