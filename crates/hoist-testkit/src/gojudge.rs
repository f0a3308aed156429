//! Judges built from a peer's own Go code, offline: Debian packages Go libraries as source
//! (`golang-github-*-dev` under /usr/share/gocode), and `go build` in GOPATH mode builds a
//! small program of `judges/NAME/main.go` against them. Built once per test process into
//! `target/gojudge/` (the Go build cache beside it), so a re-run only relinks.
//!
//! - `semver`: Masterminds/semver v3 (`golang-github-masterminds-semver-dev`), the library
//!   skopeo sync reads `images-by-semver` with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Where Debian keeps Go library sources.
pub const GOCODE: &str = "/usr/share/gocode";

/// The Go source directory judge `name` needs, under [`GOCODE`], and its Debian package.
pub fn dependency(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "semver" => Some(("src/github.com/Masterminds/semver", "golang-github-masterminds-semver-dev")),
        _ => None,
    }
}

/// Why judge `name` cannot be built here (no `go`, its library source missing), if so.
pub fn missing(name: &str) -> Option<String> {
    if !crate::tools::have("go") {
        return Some("go not found (.ci/run installs golang-go)".into());
    }
    let (dir, pkg) = dependency(name)?;
    (!Path::new(GOCODE).join(dir).is_dir()).then(|| format!("{GOCODE}/{dir} missing (.ci/run installs {pkg})"))
}

/// The judge `name`, built (once per process); panics with go's output when the build fails.
pub fn build(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = kit.join("../../target/gojudge");
    let gopath = out_dir.join(format!("gopath-{}", std::process::id()));
    let src = gopath.join("src").join(format!("{name}judge"));
    std::fs::create_dir_all(&src).expect("judge source dir");
    std::fs::copy(kit.join("judges").join(name).join("main.go"), src.join("main.go")).expect("copy judge source");
    let bin = out_dir.join(format!("{name}-judge"));
    let tmp_bin = out_dir.join(format!("{name}-judge.{}", std::process::id()));
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp_bin)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:{GOCODE}", gopath.display()))
        .env("GOCACHE", out_dir.join("cache"))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    let _ = std::fs::remove_dir_all(&gopath);
    assert!(
        out.status.success(),
        "go build of the {name} judge failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp_bin, &bin).expect("install judge");
    built.insert(name.to_string(), bin.clone());
    bin
}
