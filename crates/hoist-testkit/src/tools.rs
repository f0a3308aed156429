//! The independent tools that judge hoist, and the checks a test makes before using one:
//! one sha256 helper (not hoist's own hashing), one skopeo helper, [`have`], and the skip
//! macros ([`require!`](crate::require), [`optional!`](crate::optional), [`skip!`](crate::skip),
//! [`skip_part!`](crate::skip_part), [`require_root!`](crate::require_root)) that make a test say
//! `SKIP <test>: why` instead of returning silently. Every skip goes through [`skip_note`]: with
//! `CI=true` a skip fails the test unless `tests/skips-allowed.txt` names it with a reason.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};

use crate::registry::TestRegistry;

/// `sha256:<hex>` of `data`, computed with the `sha2` crate (not with hoist's digest code).
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// The lowercase hex SHA-256 of `data` (no `sha256:` prefix).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
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

/// The reviewed list of tests allowed to skip when `CI=true`, relative to the workspace root:
/// one `module::test: reason` line each (colon and space after the name; `#` starts a comment). Keep it short: a judge that
/// can be installed is installed by `.ci/run` instead.
pub const SKIP_ALLOW_LIST: &str = "tests/skips-allowed.txt";

/// Whether this is a CI run (`CI=true` or `CI=1`, as CI services and `.ci/run`'s callers set
/// it): a skip then fails the test unless [`SKIP_ALLOW_LIST`] names it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The allow-list file of this workspace.
pub fn skip_allow_list_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(SKIP_ALLOW_LIST)
}

/// The `(test, reason)` entries of an allow-list text; `Err` names a line without a reason.
pub fn parse_skip_allow_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once(": ").filter(|(_, why)| !why.trim().is_empty()) {
            Some((test, why)) if !test.trim().is_empty() && !test.contains(' ') => {
                out.push((test.trim().to_string(), why.trim().to_string()))
            }
            _ => return Err(format!("line {}: `{line}` is not `module::test: reason`", n + 1)),
        }
    }
    Ok(out)
}

/// The verdict on a skip of `test` under CI given the allow-list `text`: `Ok(reason)` when the
/// list names the test exactly (no prefixes or patterns: each entry is reviewed on its own).
pub fn skip_allowed(text: &str, test: &str) -> Result<String, String> {
    let entries = parse_skip_allow_list(text)?;
    entries
        .into_iter()
        .find(|(t, _)| t == test)
        .map(|(_, why)| why)
        .ok_or_else(|| format!("{test} is not on the allow-list"))
}

/// The one place every skip goes through: prints `SKIP <test>: <why>` (`SKIP part of <test>: …`
/// when `part`) on stderr and, when [`in_ci`], panics unless [`SKIP_ALLOW_LIST`] names the test.
/// Tests reach it through [`require!`](crate::require), [`optional!`](crate::optional),
/// [`skip!`](crate::skip), [`skip_part!`](crate::skip_part) and
/// [`require_root!`](crate::require_root); helpers that return `None` call it directly.
#[track_caller]
pub fn skip_note(test: &str, part: bool, why: &str) {
    let what = if part { format!("SKIP part of {test}") } else { format!("SKIP {test}") };
    eprintln!("{what}: {why}");
    if !in_ci() {
        return;
    }
    let path = skip_allow_list_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match skip_allowed(&text, test) {
        Ok(reason) => eprintln!("  (allowed in CI by {SKIP_ALLOW_LIST}: {reason})"),
        Err(no) => panic!(
            "{what}: {why}\nCI=true: a skip is a failure ({no}). Install the judge in .ci/run, \
             or add `{test}: <reason>` to {SKIP_ALLOW_LIST} for review."
        ),
    }
}

/// The Debian package that installs `tool`, as `.ci/run` installs it.
fn package_of(tool: &str) -> &str {
    match tool {
        "htpasswd" => "apache2-utils",
        "mkfs.xfs" => "xfsprogs",
        "filefrag" => "e2fsprogs",
        "ctr" => "containerd",
        "rpmbuild" => "rpm",
        "dockerd" | "docker" => "docker.io",
        "go" => "golang-go",
        "/bin/busybox" => "busybox-static",
        other => other,
    }
}

fn missing(tool: &str) -> String {
    format!("{tool} not found (not on PATH; .ci/run installs it: apt-get install {})", package_of(tool))
}

/// `have(tool)`; when it is missing, a skip of the whole `test` ([`skip_note`]). Tests use it
/// through [`require!`](crate::require), which also names the test and returns.
#[track_caller]
pub fn require(test: &str, tool: &str) -> bool {
    let ok = have(tool);
    if !ok {
        skip_note(test, false, &missing(tool));
    }
    ok
}

/// `have(tool)`, for a check that is one part of a test; when the tool is missing, a skip of
/// that part ([`skip_note`]). Tests use it through [`optional!`](crate::optional).
#[track_caller]
pub fn optional(test: &str, tool: &str) -> bool {
    let ok = have(tool);
    if !ok {
        skip_note(test, true, &missing(tool));
    }
    ok
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The test's name as libtest prints it (`module::test_name`, what `cargo test FILTER` takes)
/// from the `type_name` of an item declared inside the test (what
/// [`test_name!`](crate::test_name) passes): drops the crate, the item and any `{{closure}}`
/// (async tests).
pub fn test_name_of(type_name: &str) -> &str {
    let mut name = type_name.strip_suffix("::__here").unwrap_or(type_name);
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name.split_once("::").map_or(name, |(_crate, path)| path)
}

/// The path of the function this is written in, without the crate
/// (`archive::docker_archive_is_loaded_by_podman`), for skip notes.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn __here() {}
        fn type_name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        $crate::tools::test_name_of(type_name_of(__here))
    }};
}

/// Returns from the test (after a `SKIP <test>: <tool> not found (...)` note) unless every
/// tool is installed: `require!("skopeo", "umoci");`. Under `CI=true` a missing tool fails the
/// test unless the allow-list names it: `.ci/run` installs every tool a test requires.
#[macro_export]
macro_rules! require {
    ($($tool:expr),+ $(,)?) => {
        $(
            if !$crate::tools::require($crate::test_name!(), $tool) {
                return;
            }
        )+
    };
}

/// Whether `tool` is installed, for one part of a test: `if optional!("skopeo") { ... }`; says
/// `SKIP part of <test>: ...` when it is not.
#[macro_export]
macro_rules! optional {
    ($tool:expr) => {
        $crate::tools::optional($crate::test_name!(), $tool)
    };
}

/// Returns from the test after printing `SKIP <test>: <why>` (`why` as in `format!`), for a
/// test that cannot run here for another reason than a missing tool. Under `CI=true` it fails
/// the test instead, unless the allow-list names it ([`skip_note`]). Never for a failure: a
/// judge that is installed but does not work, or a race the test lost, is a panic.
#[macro_export]
macro_rules! skip {
    ($($why:tt)+) => {{
        $crate::tools::skip_note($crate::test_name!(), false, &format!($($why)+));
        return;
    }};
}

/// Notes that one part of the test does not run here (`SKIP part of <test>: <why>`) and goes
/// on; under `CI=true` a failure unless allow-listed, like [`skip!`](crate::skip).
#[macro_export]
macro_rules! skip_part {
    ($($why:tt)+) => {{
        $crate::tools::skip_note($crate::test_name!(), true, &format!($($why)+));
    }};
}

/// Returns from the test (a [`skip!`](crate::skip)) unless it runs as root: `require_root!("mknod");`.
#[macro_export]
macro_rules! require_root {
    ($($why:tt)+) => {
        if !$crate::tools::is_root() {
            $crate::skip!("needs root ({})", format!($($why)+));
        }
    };
}

/// The environment variable that tells a re-run test binary which test it runs for
/// [`in_own_process!`](crate::in_own_process).
pub const OWN_PROCESS_ENV: &str = "HOIST_TESTKIT_OWN_PROCESS";

/// Whether the test named `test` is to run its body in this process: yes in the process
/// [`in_own_process!`](crate::in_own_process) started for it; otherwise this runs the test
/// binary again for that one test (`--exact`), passes its output on, panics unless it passed,
/// and says no.
pub fn run_in_own_process(test: &str) -> bool {
    if std::env::var(OWN_PROCESS_ENV).is_ok_and(|t| t == test) {
        return true;
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    let out = Command::new(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS_ENV, test)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} in its own process failed ({})", out.status);
    assert!(stdout.contains(" 1 passed;"), "{test}: the test binary run for it did not run it");
    false
}

/// Runs the rest of the test in a process of its own (the test binary run again for this one
/// test), for a test that measures processes it starts: a child's peak RSS (`ru_maxrss`)
/// includes the peak of the process that spawned it, and the one test binary's peak is
/// whatever its other tests used.
#[macro_export]
macro_rules! in_own_process {
    () => {
        if !$crate::tools::run_in_own_process($crate::test_name!()) {
            return;
        }
    };
}

/// A `Command` for skopeo with `--insecure-policy` (no /etc/containers/policy.json needed).
pub fn skopeo_cmd() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

/// Runs `skopeo --insecure-policy ARGS` and returns its output. Check with
/// [`require!`](crate::require) first.
pub fn skopeo<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    skopeo_cmd().args(args).output().unwrap_or_else(|e| panic!("cannot run skopeo: {e}"))
}

/// The raw bytes of the manifest `reference` (`HOST/REPO:TAG` or `HOST/REPO@DIGEST`) on `reg`,
/// as skopeo reads them (`skopeo inspect --raw`). Panics unless skopeo succeeds.
pub fn skopeo_raw(reg: &TestRegistry, reference: &str) -> Vec<u8> {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{reference}"));
    let out = skopeo(&args);
    assert_success("skopeo inspect --raw", &out);
    out.stdout
}

/// `sha256:<hex>` of the manifest `repo:tag` on `registry` (asked with skopeo, not hoist).
pub fn registry_manifest_digest(reg: &TestRegistry, repo_tag: &str) -> String {
    sha256(&skopeo_raw(reg, &format!("{}/{repo_tag}", reg.host())))
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

/// stdout + stderr of a finished command, as text.
pub fn output_text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_test() {
        assert_eq!(crate::test_name!(), "tools::tests::names_the_test");
        let in_async = async { crate::test_name!() };
        let name = block_on(in_async);
        assert_eq!(name, "tools::tests::names_the_test");
        assert_eq!(test_name_of("it::a::b::{{closure}}::{{closure}}::__here"), "a::b");
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn finds_tools() {
        assert!(have("sh"));
        assert!(have("/bin/sh"));
        assert!(!have("surely-no-such-tool-here"));
        assert!(crate::optional!("sh"));
    }

    #[test]
    fn allow_list_names_tests_with_reasons() {
        let text = "# reviewed\n\na::b: needs a GPU # comment\nc::d:   needs KVM\n";
        assert_eq!(skip_allowed(text, "a::b").unwrap(), "needs a GPU");
        assert_eq!(skip_allowed(text, "c::d").unwrap(), "needs KVM");
        assert!(skip_allowed(text, "a::bc").is_err());
        assert!(skip_allowed(text, "a::").is_err());
        assert!(parse_skip_allow_list("a::b\n").is_err(), "an entry without a reason");
        assert!(parse_skip_allow_list("a::b:  \n").is_err(), "an empty reason");
        let repo = std::fs::read_to_string(skip_allow_list_path()).expect("the allow-list is in the repo");
        parse_skip_allow_list(&repo).expect("the repo's allow-list parses");
    }

    /// A skip under `CI=true` fails the test unless allow-listed: run in a child process of this
    /// test binary, so that setting `CI` touches no other test.
    #[test]
    fn a_skip_fails_under_ci() {
        if std::env::var_os("HOIST_TESTKIT_SKIP_CHILD").is_some() {
            require("tools::tests::not_on_the_list", "surely-no-such-tool-here");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let run = |ci: &str| {
            Command::new(&exe)
                .args(["tools::tests::a_skip_fails_under_ci", "--exact", "--nocapture"])
                .env("HOIST_TESTKIT_SKIP_CHILD", "1")
                .env("CI", ci)
                .output()
                .unwrap()
        };
        let out = run("true");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a skip passed under CI=true: {err}");
        assert!(err.contains("SKIP tools::tests::not_on_the_list: surely-no-such-tool-here not found"), "{err}");
        assert!(err.contains("CI=true: a skip is a failure"), "{err}");
        let out = run("false");
        assert!(out.status.success(), "a skip failed outside CI: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn sha256_is_the_known_value() {
        assert_eq!(sha256(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
