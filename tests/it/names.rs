//! Image names as docker, podman, skopeo and containerd write and look them up: normalized
//! names in docker-archive `RepoTags` and `io.containerd.image.name`, `type=oci,name=` as
//! BuildKit writes it, `ref.name`s holding `:` and `/` addressed as skopeo does, and what
//! `hoist tags` lists always addressable. Judged by `ctr` (a containerd of the test's own),
//! podman and skopeo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hoist_testkit::containerd::Containerd;

use crate::common::*;

/// A build file for a runnable image: busybox-static (or the host's static busybox) as
/// `/bin/busybox`, entrypoint printing `hello-from-hoist`. None when there is no busybox.
fn busybox_build_file(dir: &Path) -> Option<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(Path::new).find(|p| p.exists())?;
    std::fs::copy(busybox, dir.join("busybox")).expect("copy busybox");
    let file = dir.join("hoist.toml");
    std::fs::write(
        &file,
        "entrypoint = [\"/bin/busybox\", \"echo\", \"hello-from-hoist\"]\nsource_date_epoch = 1700000000\n\
         [[layers]]\nfiles = [ { source = \"busybox\", target = \"/bin/\", mode = 0o755 } ]\n",
    )
    .expect("write build file");
    Some(file)
}

/// `hoist build` of `file` into a store under `dir` with `outputs`; returns the root digest.
fn build(dir: &Path, file: &Path, outputs: &[String]) -> String {
    let mut args = vec!["build".to_string(), "--store".into(), dir.join("store").display().to_string()];
    args.extend(["-f".into(), file.display().to_string()]);
    for o in outputs {
        args.extend(["--output".into(), o.clone()]);
    }
    assert_success("hoist build", &hoist(&args)).trim().to_string()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `index.json` (or another member) of a tar, read with the system `tar`.
fn tar_member(file: &Path, member: &str) -> serde_json::Value {
    let out = Command::new("tar").arg("-xOf").arg(file).arg(member).output().expect("tar");
    assert_success(&format!("tar -xOf {member}"), &out);
    serde_json::from_slice(&out.stdout).expect("json member")
}

/// docker-archive and `type=oci,name=` output, imported by `ctr -n k8s.io images import`
/// (what Kubernetes nodes see): stored under the normalized name, and `ctr run` starts the
/// image by the normalized form of the short name given to hoist.
#[test]
fn ctr_imports_and_runs_by_the_normalized_name() {
    let t = tempfile::tempdir().unwrap();
    let Some(file) = busybox_build_file(t.path()) else { hoist_testkit::skip!("no static busybox") };
    let Some(ctrd) = Containerd::start_or_skip(hoist_testkit::test_name!()) else { return };
    let (docker, oci) = (t.path().join("d.tar"), t.path().join("o.tar"));
    build(
        t.path(),
        &file,
        &[
            format!("type=docker,dest={},name=me/app:v1", docker.display()),
            format!("type=oci,dest={},name=me/oci:v2", oci.display()),
        ],
    );
    // What the archives say, in docker's and BuildKit's spelling.
    let m = tar_member(&docker, "manifest.json");
    assert_eq!(m[0]["RepoTags"], serde_json::json!(["docker.io/me/app:v1"]), "{m}");
    let i = tar_member(&oci, "index.json");
    let ann = &i["manifests"][0]["annotations"];
    assert_eq!(ann["io.containerd.image.name"], "docker.io/me/oci:v2", "{i}");
    assert_eq!(ann["org.opencontainers.image.ref.name"], "v2", "{i}");

    for f in [&docker, &oci] {
        let out = ctrd.ctr(&["-n", "k8s.io", "images", "import", f.to_str().unwrap()]);
        assert_success(&format!("ctr images import {}\n{}", f.display(), ctrd.log()), &out);
    }
    let listed = text(&ctrd.ctr(&["-n", "k8s.io", "images", "ls", "-q"]));
    let names: Vec<&str> = listed.lines().collect();
    assert!(names.contains(&"docker.io/me/app:v1") && names.contains(&"docker.io/me/oci:v2"), "{listed}");
    for (i, name) in ["me/app:v1", "me/oci:v2"].iter().enumerate() {
        let full = hoist::model::reference::normalize_name(name).unwrap();
        let out = ctrd.ctr(&["-n", "k8s.io", "run", "--rm", &full, &format!("names-test-{i}")]);
        let stdout = assert_success(&format!("ctr run {full}\n{}", ctrd.log()), &out);
        assert_eq!(stdout.trim(), "hello-from-hoist", "{full}");
    }
}

/// podman in a private vfs store, or None (a skip) when podman is not installed; panics when
/// it is installed but does not work.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new(test: &str) -> Option<Podman> {
        if !hoist_testkit::tools::require(test, "podman") {
            return None;
        }
        let p = Podman { dir: tempfile::tempdir().unwrap() };
        // Installed but not working here is a failure, not a skip.
        assert_success("podman images (probe)", &p.run(&["images"]));
        Some(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        assert_success(&format!("podman {}", args.join(" ")), &self.run(args))
    }
}

/// `podman load` of hoist's docker-archive and `type=oci,name=` output names the image as
/// given (normalized), not `localhost/<something>` or `<none>`; and what podman saves
/// (`ref.name` `localhost/app:v1`, `RepoTags` `localhost/app:v1`) is addressed by hoist with
/// the names podman printed, and listed by `hoist tags` in a form that addresses it.
#[test]
fn podman_names_round_trip() {
    hoist_testkit::require!("skopeo");
    let Some(podman) = Podman::new(hoist_testkit::test_name!()) else { return };
    let t = tempfile::tempdir().unwrap();
    let Some(file) = busybox_build_file(t.path()) else { hoist_testkit::skip!("no static busybox") };
    let (docker, oci) = (t.path().join("d.tar"), t.path().join("o.tar"));
    build(
        t.path(),
        &file,
        &[
            format!("type=docker,dest={},name=me/app:v1", docker.display()),
            format!("type=oci,dest={},name=me/oci:v2", oci.display()),
        ],
    );
    podman.ok(&["load", "-i", docker.to_str().unwrap()]);
    podman.ok(&["load", "-i", oci.to_str().unwrap()]);
    let listed = podman.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains("docker.io/me/app:v1"), "{listed}");
    assert!(listed.contains("docker.io/me/oci:v2"), "{listed}");

    // podman's own names, saved both ways.
    podman.ok(&["tag", "docker.io/me/app:v1", "localhost/app:v1"]);
    let (p_oci, p_docker) = (t.path().join("p-oci.tar"), t.path().join("p-docker.tar"));
    podman.ok(&["save", "--format", "oci-archive", "-o", p_oci.to_str().unwrap(), "localhost/app:v1"]);
    podman.ok(&["save", "--format", "docker-archive", "-o", p_docker.to_str().unwrap(), "localhost/app:v1"]);
    for (transport, f) in [("oci-archive", &p_oci), ("docker-archive", &p_docker)] {
        let tags = assert_success("hoist tags", &hoist(["tags", &format!("{transport}:{}", f.display())]));
        assert!(tags.lines().any(|l| l == "localhost/app:v1"), "{transport}: {tags}");
        for tag in tags.lines() {
            let src = format!("{transport}:{}:{tag}", f.display());
            let dst = t.path().join(format!("from-{transport}"));
            let out = hoist(["copy", &src, &format!("oci:{}:{tag}", dst.display())]);
            assert_success(&format!("hoist copy {src}"), &out);
            // skopeo reads the same image (podman rewrote the manifest: compare configs)
            // under the same name from hoist's layout.
            let config = |r: &str| sha256(&skopeo(["inspect", "--config", "--raw", r]).stdout);
            assert_eq!(config(&format!("oci:{}:{tag}", dst.display())), config(&src), "{src}");
        }
    }
}

/// skopeo writes `ref.name`s with `:` and `/` into a layout (`oci:DIR:localhost/app:v1`);
/// hoist resolves that name, a docker-archive name by its short and full form, and lists
/// names `hoist inspect` and `hoist copy` take back.
#[test]
fn skopeo_names_are_addressable() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let Some(file) = busybox_build_file(t.path()) else { hoist_testkit::skip!("no static busybox") };
    let src = t.path().join("src");
    let digest = build(t.path(), &file, &[format!("oci:{}:v1", src.display())]);
    let layout = t.path().join("sk");
    let archive = t.path().join("sk.tar");
    let dtar = t.path().join("sk-docker.tar");
    for dst in [
        format!("oci:{}:localhost/app:v1", layout.display()),
        format!("oci:{}:docker.io/library/alpine:3", layout.display()),
        format!("oci-archive:{}:localhost/app:v1", archive.display()),
        format!("docker-archive:{}:alpine:3", dtar.display()),
    ] {
        assert_success("skopeo copy", &skopeo(["copy", &format!("oci:{}:v1", src.display()), &dst]));
    }
    let tags = assert_success("hoist tags", &hoist(["tags", &format!("oci:{}", layout.display())]));
    assert_eq!(tags.lines().collect::<Vec<_>>(), ["localhost/app:v1", "docker.io/library/alpine:3"]);
    let mut addressed = vec![
        format!("oci-archive:{}:localhost/app:v1", archive.display()),
        format!("oci:{}:alpine:3", layout.display()),
        format!("docker-archive:{}:alpine:3", dtar.display()),
        format!("docker-archive:{}:docker.io/library/alpine:3", dtar.display()),
    ];
    addressed.extend(tags.lines().map(|tag| format!("oci:{}:{tag}", layout.display())));
    for name in &addressed {
        let out = hoist(["--format", "json", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&assert_success(&format!("hoist inspect {name}"), &out))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = v["digest"].as_str().or_else(|| v["descriptor"]["digest"].as_str()).unwrap_or_default();
        // A docker-archive has no manifest bytes: its digest is of the manifest hoist makes.
        if !name.starts_with("docker-archive:") {
            assert_eq!(got, digest, "{name}: {v}");
        }
    }
}

/// `org.opencontainers.image.base.name` is a plain distribution reference, never a transport
/// or local path.
#[test]
fn base_name_is_a_plain_reference() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let t = tempfile::tempdir().unwrap();
    let Some(file) = busybox_build_file(t.path()) else { hoist_testkit::skip!("no static busybox") };
    let base_layout = t.path().join("base");
    build(t.path(), &file, &[format!("oci:{}:v1", base_layout.display())]);
    let pushed = hoist(["push", &format!("oci:{}:v1", base_layout.display()), &format!("{}/base/img:v1", reg.host())]);
    assert_success("hoist push", &pushed);
    let cases = [
        (format!("docker://{}/base/img:v1", reg.host()), Some(format!("{}/base/img:v1", reg.host()))),
        (format!("{}/base/img:v1", reg.host()), Some(format!("{}/base/img:v1", reg.host()))),
        (format!("oci:{}:v1", base_layout.display()), None),
    ];
    for (i, (base, want)) in cases.iter().enumerate() {
        let out = t.path().join(format!("out{i}"));
        let args = [
            "build".to_string(),
            "--store".into(),
            t.path().join("store").display().to_string(),
            "-f".into(),
            file.display().to_string(),
            "--base".into(),
            base.clone(),
            "--output".into(),
            format!("oci:{}:x", out.display()),
        ];
        assert_success(&format!("hoist build --base {base}"), &hoist(&args));
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let d = index["manifests"][0]["digest"].as_str().unwrap().replace(':', "/");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("blobs").join(d)).unwrap()).unwrap();
        let name = m["annotations"]["org.opencontainers.image.base.name"].as_str().map(str::to_string);
        assert_eq!(&name, want, "--base {base}: {m}");
        if let Some(n) = &name {
            n.parse::<hoist::model::reference::Reference>().unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }
}

/// buildah in a private vfs store (`--root`/`--runroot` in `dir`), or None (a skip) when
/// buildah cannot run here (not installed, not root); panics when it is there but fails.
fn buildah_in<'a>(test: &str, dir: &'a Path) -> Option<impl Fn(&[&str]) -> Output + 'a> {
    if !hoist_testkit::tools::require(test, "buildah") {
        return None;
    }
    if !hoist_testkit::tools::is_root() {
        hoist_testkit::tools::skip_note(test, false, "buildah with a vfs store needs root");
        return None;
    }
    let run = move |args: &[&str]| {
        Command::new("buildah")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("STORAGE_DRIVER", "vfs")
            .env("BUILDAH_ISOLATION", "chroot")
            .output()
            .expect("run buildah")
    };
    // Installed but not working here is a failure, not a skip.
    assert_success("buildah images (probe)", &run(&["images"]));
    Some(run)
}

/// buildah's archives: `buildah from scratch` + `copy` + `commit`, then `buildah push` to a
/// docker-archive and an oci-archive under the name buildah printed (`buildah images`:
/// `localhost/bapp:v1`, in `RepoTags` and `ref.name`). hoist lists that name with `hoist
/// tags`, addresses each archive by it, and reads buildah's image (config bytes compared
/// with skopeo's reading of the same archive).
#[test]
fn buildah_archives_are_addressed_by_the_names_buildah_prints() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let Some(buildah) = buildah_in(hoist_testkit::test_name!(), t.path()) else { return };
    let ok = |args: &[&str]| assert_success(&format!("buildah {}", args.join(" ")), &buildah(args));
    let ctr = ok(&["from", "scratch"]).trim().to_string();
    std::fs::write(t.path().join("hello.txt"), "hello from buildah\n").unwrap();
    ok(&["copy", &ctr, t.path().join("hello.txt").to_str().unwrap(), "/hello.txt"]);
    ok(&["config", "--entrypoint", r#"["/hello"]"#, &ctr]);
    ok(&["commit", &ctr, "localhost/bapp:v1"]);
    let listed = ok(&["images", "--format", "{{.Name}}:{{.Tag}}"]);
    let name = listed.lines().find(|l| l.contains("bapp")).unwrap_or_else(|| panic!("{listed}")).to_string();
    assert_eq!(name, "localhost/bapp:v1");
    for transport in ["docker-archive", "oci-archive"] {
        let file = t.path().join(format!("{transport}.tar"));
        ok(&["push", &name, &format!("{transport}:{}:{name}", file.display())]);
        let tags = assert_success("hoist tags", &hoist(["tags", &format!("{transport}:{}", file.display())]));
        assert!(tags.lines().any(|l| l == name), "{transport}: hoist tags lists {tags:?}, buildah printed {name}");
        let src = format!("{transport}:{}:{name}", file.display());
        let dst = t.path().join(format!("from-{transport}"));
        assert_success(&format!("hoist copy {src}"), &hoist(["copy", &src, &format!("oci:{}:v1", dst.display())]));
        let config = |r: &str| sha256(&skopeo(["inspect", "--config", "--raw", r]).stdout);
        assert_eq!(config(&format!("oci:{}:v1", dst.display())), config(&src), "{src}");
        // skopeo 1.9 and umoci-style readers take the layout: OCI media types throughout.
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{src}");
    }
}
