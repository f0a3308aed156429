//! Dockerfile builds (`hoist build [-f Dockerfile] CONTEXT`), judged against `buildah build`
//! (vfs storage, runc) from the same context: `umoci unpack` of both gives the same tree and
//! the configs agree; the image runs under runc; builds are reproducible and cached.
//! The base image is made here from Debian's busybox-static and served by the real registry.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

pub(crate) const BUSYBOX: &str = "/bin/busybox";

/// Everything these tests need, or a SKIP line saying what is missing.
macro_rules! require_all {
    () => {
        hoist_testkit::require!("buildah", "umoci", "runc", BUSYBOX);
        hoist_testkit::require_root!("RUN steps mount and chroot");
    };
}

/// A busybox root filesystem: the static binary, applet symlinks, /etc files, the mount
/// points a real base image has.
pub(crate) fn busybox_root(dir: &Path) {
    for d in ["bin", "etc", "dev", "proc", "sys", "run", "tmp", "root", "home/user"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "ls", "mkdir", "rm", "touch", "chmod", "cp", "ln", "mv", "env", "id", "date", "sed",
        "true",
    ] {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
        .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\nstaff:x:50:\n").unwrap();
    for f in ["hosts", "hostname", "resolv.conf"] {
        fs::write(dir.join("etc").join(f), "").unwrap();
    }
}

/// Build the busybox base with hoist (TOML build file) and push it to `reg` as `base:v1`.
pub(crate) fn push_base(t: &Path, reg: &TestRegistry) -> String {
    let root = t.join("baseroot");
    busybox_root(&root);
    let toml = t.join("base.toml");
    fs::write(
        &toml,
        format!(
            "platforms = [\"linux/amd64\"]\ncmd = [\"/bin/sh\"]\n[env]\nPATH = \"/usr/sbin:/usr/bin:/sbin:/bin\"\n[[layers]]\nfiles = [{{ source = \"{}\", target = \"/\" }}]\n",
            root.display()
        ),
    )
    .unwrap();
    let name = format!("{}/base:v1", reg.host());
    let out = hoist_in(
        &t.join("basestore"),
        &["build", "-f", toml.to_str().unwrap(), "--output", &format!("type=registry,name={name}")],
    );
    assert_success("hoist build base", &out);
    name
}

fn buildah(t: &Path, args: &[&str]) -> Output {
    Command::new("buildah")
        .arg("--root")
        .arg(t.join("buildah-root"))
        .arg("--runroot")
        .arg(t.join("buildah-run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .env("BUILDAH_ISOLATION", "chroot")
        .output()
        .expect("run buildah")
}

/// buildah build CONTEXT into an OCI layout `dest:latest`.
fn buildah_build(t: &Path, ctx: &Path, dest: &Path, extra: &[&str]) {
    let tag = format!("localhost/df-{}:latest", dest.file_name().unwrap().to_str().unwrap());
    let mut a = vec!["build", "--tls-verify=false", "--runtime", "runc", "--isolation", "chroot", "-t", &tag];
    a.extend(extra);
    let ctxs = ctx.to_str().unwrap();
    a.push(ctxs);
    assert_success("buildah build", &buildah(t, &a));
    let d = format!("oci:{}:latest", dest.display());
    assert_success("buildah push", &buildah(t, &["push", &tag, &d]));
}

fn hoist_build(store: &Path, ctx: &Path, dest: &Path, extra: &[&str]) -> (String, String) {
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let mut a = vec!["build", "-t", "img:latest", "--output", &o];
    a.extend(extra);
    a.push(ctx.to_str().unwrap());
    let out = hoist_in(store, &a);
    let digest = assert_success("hoist build", &out).trim().to_string();
    (digest, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// path → "type mode uid:gid content-or-target" of every entry under `root`.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let what = if m.file_type().is_symlink() {
            format!("l -> {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("d {:o}", m.mode() & 0o7777)
        } else {
            format!("f {:o} {}", m.mode() & 0o7777, hoist_testkit::tools::sha256_hex(&fs::read(e.path()).unwrap()))
        };
        out.insert(rel, format!("{what} {}:{}", m.uid(), m.gid()));
    }
    out
}

pub(crate) fn unpack(layout: &Path, dest: &Path) -> PathBuf {
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:latest", layout.display())])
        .arg(dest)
        .output()
        .unwrap();
    assert_success("umoci unpack", &out);
    dest.to_path_buf()
}

pub(crate) fn config_of(layout: &Path) -> Value {
    let idx: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let m = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let man: Value = serde_json::from_slice(&fs::read(blob(&m)).unwrap()).unwrap();
    serde_json::from_slice(&fs::read(blob(man["config"]["digest"].as_str().unwrap())).unwrap()).unwrap()
}

/// `skip`: paths where buildah and BuildKit (whose semantics hoist follows) differ: the
/// mount points of cache, bind and tmpfs mounts, which BuildKit keeps and buildah removes;
/// VOLUME directories, which buildah makes at the next RUN and BuildKit does not.
fn assert_same_image(t: &Path, name: &str, hoist_layout: &Path, buildah_layout: &Path, skip: &[&str]) {
    let h = tree(&unpack(hoist_layout, &t.join(format!("{name}-hu"))).join("rootfs"));
    let b = tree(&unpack(buildah_layout, &t.join(format!("{name}-bu"))).join("rootfs"));
    let diff: Vec<String> = h
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| h.get(*k) != b.get(*k) && !skip.contains(&k.as_str()))
        .map(|k| format!("{k}: hoist {:?} buildah {:?}", h.get(k), b.get(k)))
        .collect();
    assert!(diff.is_empty(), "{name}: trees differ:\n{}", diff.join("\n"));
    let (hc, mut bc) = (config_of(hoist_layout), config_of(buildah_layout));
    // buildah's own label
    if let Some(l) = bc["config"]["Labels"].as_object_mut() {
        l.remove("io.buildah.version");
    }
    for field in ["Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes", "StopSignal"] {
        let norm = |v: &Value| match v {
            Value::Null => Value::Null,
            Value::String(s) if s.is_empty() => Value::Null,
            // BuildKit's scratch has WorkingDir "/", buildah's none: the same directory
            Value::String(s) if field == "WorkingDir" && s == "/" => Value::Null,
            Value::Object(o) if o.is_empty() => Value::Null,
            v => v.clone(),
        };
        assert_eq!(norm(&hc["config"][field]), norm(&bc["config"][field]), "{name}: config {field}");
    }
}

/// One context exercising most of the language.
fn rich_context(dir: &Path, base: &str) {
    fs::create_dir_all(dir.join("app/sub")).unwrap();
    fs::write(dir.join("app/a.txt"), "a\n").unwrap();
    fs::write(dir.join("app/sub/b.sh"), "#!/bin/sh\necho b\n").unwrap();
    fs::set_permissions(dir.join("app/sub/b.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("app/secret.log"), "no\n").unwrap();
    fs::write(dir.join("one.conf"), "1").unwrap();
    fs::write(dir.join("two.conf"), "2").unwrap();
    symlink("a.txt", dir.join("app/link")).unwrap();
    fs::write(dir.join(".dockerignore"), "app/*.log\n").unwrap();
    // a tar for ADD to extract
    let tarp = dir.join("files.tar");
    let mut b = tar::Builder::new(fs::File::create(&tarp).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(50);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, "x/in-tar.txt", &b"tar"[..]).unwrap();
    b.finish().unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            r#"# syntax=docker/dockerfile:1
ARG BASE={base}
FROM $BASE AS build
ARG GREETING=hello
ENV OUT=/out \
    NAME="the world"
WORKDIR $OUT
COPY app/ ./app/
COPY *.conf conf/
RUN echo "$GREETING ${{NAME}}" > greeting && \
    mkdir -p made/deep && touch made/deep/f && chmod 600 made/deep/f && \
    rm -rf /home/user && echo changed > /etc/hostname && ln -s greeting made/link
RUN --mount=type=cache,target=/cache echo cached > /cache/c && cp /cache/c cache-copy && test -d /cache
RUN rm conf/one.conf

FROM {base}
LABEL org.example.a="1" b=two
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
COPY --from=build /out /srv
COPY --chown=1000:50 --chmod=640 one.conf /etc/own.conf
ADD files.tar /opt/
COPY --from={base} /etc/passwd /etc/passwd.copy
USER user
WORKDIR /home/user/w
RUN id -u > uid.txt && id -g >> uid.txt
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /srv/greeting"]
"#
        ),
    )
    .unwrap();
}

#[test]
fn dockerfile_builds_match_buildah_and_run() {
    require_all!();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = push_base(t, &reg);
    let ctx = t.join("ctx");
    rich_context(&ctx, &base);

    let (hl, bl) = (t.join("hoist-oci"), t.join("buildah-oci"));
    let (digest, log) = hoist_build(&t.join("store"), &ctx, &hl, &["--build-arg", "GREETING=hi"]);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(log.contains("4 RUN executed"), "{log}");
    buildah_build(t, &ctx, &bl, &["--build-arg", "GREETING=hi"]);
    assert_same_image(t, "rich", &hl, &bl, &["data"]);

    // The image runs: its CMD prints the greeting the first stage wrote.
    let bundle = t.join("rich-hu");
    let cfg_path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    // this sandbox lacks CAP_SYS_RESOURCE: no rlimits; host network namespace
    spec["process"]["rlimits"] = Value::Array(vec![]);
    spec["process"]["terminal"] = Value::Bool(false);
    fs::write(&cfg_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = Command::new("runc")
        .arg("--root")
        .arg(t.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("hoist-df-{}", std::process::id()))
        .output()
        .unwrap();
    assert_eq!(assert_success("runc run", &out).trim(), "hi the world");
    // ... and under podman: a cached build delivered with `--output type=podman` (explicit
    // ulimits: this sandbox cannot raise them)
    if hoist_testkit::optional!("podman") {
        let ps = t.join("podman");
        fs::create_dir_all(&ps).unwrap();
        let conf = ps.join("storage.conf");
        fs::write(
            &conf,
            format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n", ps.display()),
        )
        .unwrap();
        let out = hoist_cmd()
            .env("HOIST_STORE", t.join("store"))
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["build", "--build-arg", "GREETING=hi", "-o", "type=podman,name=rich:v1", ctx.to_str().unwrap()])
            .output()
            .unwrap();
        assert_success("hoist build -o type=podman", &out);
        let out = Command::new("podman")
            .arg("--root")
            .arg(ps.join("root"))
            .arg("--runroot")
            .arg(ps.join("run"))
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .args(["--storage-driver", "vfs", "--runtime", "runc", "run", "--rm", "--ulimit", "nofile=1024:1024"])
            .args(["--ulimit", "nproc=1024:1024", "localhost/rich:v1"])
            .output()
            .unwrap();
        assert_eq!(assert_success("podman run", &out).trim(), "hi the world");
    }

    // A second build with the cache runs nothing and gives the same image.
    let (again, log) = hoist_build(&t.join("store"), &ctx, &t.join("again"), &["--build-arg", "GREETING=hi"]);
    assert_eq!(again, digest);
    assert!(log.contains("0 RUN executed"), "{log}");
    // Changing one copied file rebuilds from that COPY on: RUN steps after it run again.
    fs::write(ctx.join("app/a.txt"), "changed\n").unwrap();
    let (changed, log) = hoist_build(&t.join("store"), &ctx, &t.join("changed"), &["--build-arg", "GREETING=hi"]);
    assert_ne!(changed, digest);
    assert!(log.contains("4 RUN executed"), "{log}");
}

#[test]
fn same_dockerfile_in_two_places_gives_one_digest() {
    require_all!();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = push_base(t, &reg);
    let mut digests = Vec::new();
    for (i, sde) in ["0", "0"].iter().enumerate() {
        let ctx = t.join(format!("place{i}/deeper/ctx"));
        rich_context(&ctx, &base);
        let dest = t.join(format!("out{i}"));
        let o = format!("type=oci,dest={},tar=false", dest.display());
        let out = hoist_cmd()
            .env("HOIST_STORE", t.join(format!("store{i}")))
            .env("SOURCE_DATE_EPOCH", sde)
            .args(["build", "--output", &o, ctx.to_str().unwrap()])
            .output()
            .unwrap();
        digests.push(assert_success("hoist build", &out).trim().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn unknown_instruction_and_copy_of_a_url_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::write(t.join("Dockerfile"), "FROM scratch\nFROBNICATE x\n").unwrap();
    let out = hoist_in(&t.join("store"), &["build", t.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:2") && err.contains("FROBNICATE"), "{err}");
    // ADD fetches URLs (tests/it/dockerfile_remote.rs); COPY refuses them, as BuildKit does
    fs::write(t.join("Dockerfile"), "FROM scratch\nCOPY https://example.invalid/x /x\n").unwrap();
    let out = hoist_in(&t.join("store"), &["build", t.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("can't be a URL for COPY"), "{err}");
}

#[test]
fn scratch_copy_build_without_run_matches_buildah() {
    hoist_testkit::require!("buildah", "umoci");
    hoist_testkit::require_root!("buildah with vfs needs root here");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("d/e")).unwrap();
    fs::write(ctx.join("d/e/f"), "f").unwrap();
    fs::write(ctx.join("g"), "g").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG DIR=opt\nCOPY d /$DIR/d\nCOPY g /${DIR:-x}/\nCOPY --chmod=700 g /x/y/z\nENV A=1\nCMD [\"/x\"]\n",
    )
    .unwrap();
    let (hl, bl) = (t.join("h"), t.join("b"));
    hoist_build(&t.join("store"), &ctx, &hl, &[]);
    buildah_build(t, &ctx, &bl, &[]);
    assert_same_image(t, "scratch", &hl, &bl, &[]);
}

/// Heredocs (RUN script and COPY file), a secret that never lands in a layer, ARG scoping
/// (a global ARG is empty inside a stage unless redeclared), judged by umoci's unpack.
#[test]
fn heredocs_secrets_and_arg_scoping() {
    require_all!();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = push_base(t, &reg);
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(t.join("token"), "s3cret").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "ARG BASE={base}\nARG GLOBAL=g\nFROM $BASE\nARG V=v1\nRUN <<EOF\necho \"script $V\" > /script.txt\necho \"global=[$GLOBAL]\" >> /script.txt\nEOF\nCOPY <<-EOT /etc/motd\n\twelcome $V\n\tEOT\nARG GLOBAL\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /got && echo \"$GLOBAL\" > /global\nCMD [\"cat\", \"/etc/motd\"]\n"
        ),
    )
    .unwrap();
    let dest = t.join("oci");
    let secret = format!("id=tok,src={}", t.join("token").display());
    let (_, log) = hoist_build(&t.join("store"), &ctx, &dest, &["--secret", &secret]);
    assert!(log.contains("2 RUN executed"), "{log}");
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    assert_eq!(fs::read_to_string(root.join("script.txt")).unwrap(), "script v1\nglobal=[]\n");
    assert_eq!(fs::read_to_string(root.join("etc/motd")).unwrap(), "welcome v1\n");
    assert_eq!(fs::read_to_string(root.join("got")).unwrap(), "s3cret");
    assert_eq!(fs::read_to_string(root.join("global")).unwrap(), "g\n");
    assert!(!root.join("run/secrets/tok").exists(), "the secret's mount point stays out of the image");
    // and no layer blob holds the secret
    for e in fs::read_dir(dest.join("blobs/sha256")).unwrap() {
        let raw = fs::read(e.unwrap().path()).unwrap();
        let plain = {
            let mut d = flate2::read::GzDecoder::new(&raw[..]);
            let mut v = Vec::new();
            if std::io::Read::read_to_end(&mut d, &mut v).is_ok() {
                v
            } else {
                raw.clone()
            }
        };
        let names: Vec<String> = tar::Archive::new(&plain[..])
            .entries()
            .map(|it| it.filter_map(|e| e.ok()).map(|e| e.path().unwrap().display().to_string()).collect())
            .unwrap_or_default();
        assert!(!names.iter().any(|n| n.contains("secrets")), "{names:?}");
    }
}

/// `--secret id=ID,env=VAR` and the short `--secret id=ID` (the variable ID, as buildx
/// finds it) give a RUN the value of hoist's environment variable: the image holds its
/// hash, written by the RUN, and no output of hoist holds the value.
#[test]
fn secret_from_env_reaches_run() {
    require_all!();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = push_base(t, &reg);
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nRUN --mount=type=secret,id=tok --mount=type=secret,id=HOIST_IT_SHORT,env=S,required \
             busybox sha256sum /run/secrets/tok > /tok.sha && printf %s \"$S\" | busybox sha256sum > /short.sha\n"
        ),
    )
    .unwrap();
    let (tok, short) = ("env-given tok 41d7", "short-form 9c2e");
    let dest = t.join("oci");
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let out = hoist_cmd()
        .env("HOIST_STORE", t.join("store"))
        .env("HOIST_IT_TOK", tok)
        .env("HOIST_IT_SHORT", short)
        .args(["build", "-t", "img:latest", "--output", &o, "--secret", "id=tok,env=HOIST_IT_TOK"])
        .args(["--secret", "id=HOIST_IT_SHORT", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success("hoist build --secret env", &out);
    for v in [tok, short] {
        let seen = [&out.stdout, &out.stderr].iter().any(|o| String::from_utf8_lossy(o).contains(v));
        assert!(!seen, "the secret's value is in hoist's output");
    }
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    let hash = |f: &str| fs::read_to_string(root.join(f)).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(hash("tok.sha"), hoist_testkit::tools::sha256_hex(tok.as_bytes()));
    assert_eq!(hash("short.sha"), hoist_testkit::tools::sha256_hex(short.as_bytes()));
}

/// `--secret` naming an environment variable that is not set, or a key buildx does not
/// know, fails before anything is built, naming the variable or the key.
#[test]
fn secret_env_unset_or_unknown_key_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\n").unwrap();
    for (spec, says) in [
        ("id=tok,env=HOIST_IT_UNSET", "secret tok: the environment variable HOIST_IT_UNSET is not set"),
        ("type=env,id=HOIST_IT_UNSET", "the environment variable HOIST_IT_UNSET is not set"),
        ("id=tok,src=f,mode=0400", "unknown key \"mode\""),
    ] {
        let out = hoist_cmd()
            .env("HOIST_STORE", tmp.path().join("store"))
            .env_remove("HOIST_IT_UNSET")
            .args(["build", "--output", "type=oci,dest=never", "--secret", spec])
            .arg(&ctx)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains(says), "{spec}: {err}");
    }
}

/// `--platform a,b` builds every platform of a Dockerfile without RUN into one index;
/// RUN for a foreign architecture without binfmt is refused before anything is built.
#[test]
fn multi_platform_without_run_and_foreign_run_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f"), "f").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n").unwrap();
    let out = hoist_in(&t.join("store"), &["--platform", "linux/amd64,linux/arm64", "build", ctx.to_str().unwrap()]);
    let digest = assert_success("hoist build", &out).trim().to_string();
    let blob = t.join("store/blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let idx: Value = serde_json::from_slice(&fs::read(blob).unwrap()).unwrap();
    let ms = idx["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2, "{idx}");
    assert_eq!(ms[1]["platform"]["architecture"], "arm64");

    hoist_testkit::require_root!("RUN steps mount and chroot");
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        hoist_testkit::skip!("binfmt for arm64 is registered here");
    }
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\nRUN true\n").unwrap();
    let out = hoist_in(&t.join("store2"), &["--platform", "linux/arm64", "build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("binfmt"), "{err}");
    assert!(
        !t.join("store2/blobs").exists() || fs::read_dir(t.join("store2/blobs/sha256")).map_or(0, |d| d.count()) == 0
    );
}

/// The stat cache's racy-clean rule (src/dockerfile/statcache.rs): a file changed less than
/// `RACY_MARGIN_NS` before it was hashed is hashed again next time. Test contexts are written
/// just before the build, so this waits until the clock is past the newest ctime under `dir`
/// plus that margin (an observed condition, not a fixed sleep).
fn age_past_racy_margin(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let newest = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128)
        .max()
        .unwrap_or(0);
    let now = || {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        d.as_nanos() as i128
    };
    while now() <= newest + hoist::dockerfile::statcache::RACY_MARGIN_NS {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The files (not directories) under `root` that the processes traced into `trace` opened
/// (`strace -f -y -e trace=open,openat`: the fd each open returned is shown with its path),
/// relative to `root`, sorted, each once.
fn opened_files_under(trace: &Path, root: &Path) -> Vec<String> {
    let text = fs::read_to_string(trace).unwrap();
    let mut files: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("O_DIRECTORY"))
        .filter_map(|l| {
            let ret = l.rsplit_once(") = ")?.1;
            let path = ret.split_once('<')?.1.strip_suffix('>')?;
            let rel = Path::new(path).strip_prefix(root).ok()?;
            Some(rel.to_string_lossy().into_owned())
        })
        .filter(|rel| !rel.is_empty() && Path::new(root).join(rel).is_file())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// `N context files hashed (M from the stat cache)` of a build's summary line.
fn hashed_counts(log: &str) -> (usize, usize) {
    let line = log.lines().find(|l| l.contains("context files hashed")).unwrap_or_else(|| panic!("{log}"));
    let num_before = |pat: &str| -> usize {
        let head = &line[..line.find(pat).unwrap_or_else(|| panic!("{line}"))];
        head.trim_end().rsplit(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    (num_before(" context files hashed"), num_before(" from the stat cache"))
}

/// A second build of an unchanged context reads no file contents (every digest from the stat
/// cache) and a COPY --from is cached without mounting or hashing its source; a rewrite that
/// keeps size and mtime is still seen (ctime moved) and rebuilds only that COPY.
#[test]
fn cached_build_hashes_nothing_and_sees_same_size_rewrites() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    for i in 0..200 {
        let d = ctx.join(format!("tree/d{}", i % 10));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    fs::write(ctx.join("one"), "aaaa").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS data\nCOPY tree/ /data/\nFROM scratch\nCOPY --from=data /data /data\nCOPY one /one\n",
    )
    .unwrap();
    age_past_racy_margin(&ctx);
    // Which context files a build opens is observed from outside, with strace (hoist's own
    // counts in its summary are checked too).
    let traced = hoist_testkit::optional!("strace");
    // the copied snapshot: COPY --from needs no overlay mount (nor root) on a cache miss
    let build_traced = |dest: &str, extra: &[&str], trace: Option<&Path>| {
        let o = format!("type=oci,dest={},tar=false", t.join(dest).display());
        let mut a = vec!["build", "--snapshotter", "copy", "-t", "img:latest", "--output", &o];
        a.extend(extra);
        a.push(ctx.to_str().unwrap());
        let mut cmd = match trace.filter(|_| traced) {
            Some(log) => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-y", "-e", "trace=open,openat", "-o"]).arg(log).arg(hoist_bin());
                c
            }
            None => hoist_cmd(),
        };
        let out = cmd.env("HOIST_STORE", t.join("store")).env_remove("SOURCE_DATE_EPOCH").args(&a).output().unwrap();
        let digest = assert_success("hoist build", &out).trim().to_string();
        (digest, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let build = |dest: &str, extra: &[&str]| build_traced(dest, extra, None);
    let (first, log) = build("o1", &[]);
    assert_eq!(hashed_counts(&log), (201, 0), "{log}");
    let trace = t.join("open.log");
    let (second, log) = build_traced("o2", &[], Some(&trace));
    assert_eq!(second, first);
    assert_eq!(hashed_counts(&log), (0, 201), "{log}");
    assert!(log.contains("3 steps cached"), "{log}");
    if traced {
        let opened = opened_files_under(&trace, &ctx);
        assert_eq!(opened, ["Dockerfile"], "the cached build opened context files");
    }
    // same size, same mtime, other content
    let f = ctx.join("one");
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    fs::write(&f, "bbbb").unwrap();
    fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
    let (third, log) = build_traced("o3", &[], Some(&trace));
    assert_ne!(third, first, "the rewrite must be seen");
    assert_eq!(hashed_counts(&log), (1, 200), "{log}");
    assert!(log.contains("2 steps cached"), "{log}");
    if traced {
        // the one rewritten file is read again, and no other
        let opened = opened_files_under(&trace, &ctx);
        assert_eq!(opened, ["Dockerfile", "one"], "the rebuild opened other context files");
    }
    // and what it built is what a build without any cache builds
    let (fresh, log) = build("o4", &["--no-cache"]);
    assert_eq!(fresh, third);
    assert_eq!(hashed_counts(&log), (201, 0), "{log}");
}

/// RUN that creates, modifies, deletes, chmods and replaces a directory gives the same
/// layers on overlayfs and on a copied snapshot (a copy of the layers diffed afterwards).
#[test]
fn copied_snapshot_gives_the_layers_overlayfs_gives() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::create_dir_all(ctx.join("root/opt/d/sub")).unwrap();
    fs::write(ctx.join("root/opt/d/sub/old"), "old").unwrap();
    fs::write(ctx.join("root/opt/keep"), "keep").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS base\nCOPY root/ /\n\
         RUN mkdir -p /new/deep && echo n > /new/deep/f && echo more >> /etc/passwd && rm /etc/group \
         && rm -rf /home && chmod 700 /tmp && rm -rf /opt/d && mkdir /opt/d && echo y > /opt/d/y \
         && ln -s /etc/passwd /new/link && touch /etc/hostname && chown 1000:50 /opt/keep\n\
         RUN rm /new/deep/f && echo again > /etc/hostname\n\
         FROM base\nCOPY --from=base /new /copied\nCMD [\"cat\", \"/etc/hostname\"]\n",
    )
    .unwrap();
    let mut digests = Vec::new();
    for snap in ["overlay", "copy"] {
        let dest = t.join(format!("oci-{snap}"));
        let o = format!("type=oci,dest={},tar=false", dest.display());
        let out = hoist_cmd()
            .env("HOIST_STORE", t.join(format!("store-{snap}")))
            .env("HOIST_SNAPSHOTTER", snap)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["build", "-t", "img:latest", "--output", &o, ctx.to_str().unwrap()])
            .output()
            .unwrap();
        digests.push(assert_success(&format!("hoist build ({snap})"), &out).trim().to_string());
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("2 RUN executed"), "{log}");
        assert_eq!(log.contains("copied snapshot"), snap == "copy", "{log}");
    }
    assert_eq!(digests[0], digests[1], "overlay and copy snapshots must give the same image");
    let root = unpack(&t.join("oci-copy"), &t.join("bundle")).join("rootfs");
    assert!(!root.join("etc/group").exists() && !root.join("home").exists() && !root.join("opt/d/sub").exists());
    assert_eq!(fs::read_to_string(root.join("opt/d/y")).unwrap(), "y\n");
    assert_eq!(fs::read_to_string(root.join("etc/hostname")).unwrap(), "again\n");
    assert!(!root.join("new/deep/f").exists() && root.join("copied/deep").is_dir());
    assert_eq!(fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::metadata(root.join("opt/keep")).unwrap().uid(), 1000);
}

/// ONBUILD is recorded in the image config; a build FROM that image runs the triggers right
/// after FROM (as BuildKit does) and does not pass them on.
#[test]
fn onbuild_triggers_run_in_the_child_build() {
    hoist_testkit::require!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (pctx, cctx) = (t.join("parent"), t.join("child"));
    fs::create_dir_all(&pctx).unwrap();
    fs::create_dir_all(&cctx).unwrap();
    fs::write(pctx.join("a"), "a").unwrap();
    fs::write(pctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\nONBUILD COPY b /b\nONBUILD LABEL child.built=yes\n")
        .unwrap();
    let parent = t.join("parent-oci");
    hoist_build(&t.join("store"), &pctx, &parent, &[]);
    let pc = config_of(&parent);
    assert_eq!(pc["config"]["OnBuild"], serde_json::json!(["COPY b /b", "LABEL child.built=yes"]), "{pc}");
    fs::write(cctx.join("b"), "b").unwrap();
    fs::write(cctx.join("c"), "c").unwrap();
    fs::write(cctx.join("Dockerfile"), format!("FROM oci:{}:latest\nCOPY c /c\n", parent.display())).unwrap();
    let child = t.join("child-oci");
    hoist_build(&t.join("store"), &cctx, &child, &[]);
    let cc = config_of(&child);
    assert_eq!(cc["config"]["Labels"]["child.built"], "yes", "{cc}");
    assert!(cc["config"].get("OnBuild").is_none_or(|v| v.is_null()), "{cc}");
    let root = unpack(&child, &t.join("bundle")).join("rootfs");
    for f in ["a", "b", "c"] {
        assert_eq!(fs::read_to_string(root.join(f)).unwrap(), f);
    }
}

/// A build FROM the SBOM test image (its layers written by tar-rs with the owner fields left
/// empty, which Go's archive/tar, and so BuildKit, containerd and umoci, read as root) unpacks
/// it: a RUN on it sees `var/lib/dpkg/status` owned by root with its mode, `COPY --from` of it
/// copies the bytes, and `--output type=local` of it exports it. Before, each failed with
/// "failed to unpack .../var/lib/dpkg/status".
#[test]
fn build_from_an_image_with_empty_owner_fields() {
    hoist_testkit::require!("umoci", "runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fx = crate::sbom::fixture(&t.join("base"));
    let base = format!("oci:{}:v1", fx.layout.display());
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS sbom\n\
             FROM {base} AS run\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox stat -c '%u:%g %a' /var/lib/dpkg/status /lib/ld-musl-x86_64.so.1 > /owners\"]\n\
             FROM scratch\n\
             COPY --from=sbom /var/lib/dpkg/status /status\n\
             COPY --from=run /owners /owners\n"
        ),
    )
    .unwrap();
    let store = t.join("store");
    let dest = t.join("oci");
    hoist_build(&store, &ctx, &dest, &[]);
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    assert_eq!(fs::read(root.join("status")).unwrap(), fs::read(fx.admindir.join("status")).unwrap());
    assert_eq!(fs::read_to_string(root.join("owners")).unwrap(), "0:0 644\n0:0 755\n");
    // the filesystem export reads the same layers
    let out_dir = t.join("exported");
    fs::write(ctx.join("Dockerfile"), format!("FROM {base}\n")).unwrap();
    let o = format!("type=local,dest={}", out_dir.display());
    assert_success(
        "hoist build --output type=local",
        &hoist_in(&store, &["build", "--output", &o, ctx.to_str().unwrap()]),
    );
    let m = fs::symlink_metadata(out_dir.join("var/lib/dpkg/status")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o644));
}

/// `RUN --mount=type=cache,sharing=private` under contention: while one build's step holds
/// the cache `contended`, another build's step with the same id (same store) gets a fresh,
/// empty directory of its own, and what it writes there never reaches the cache. The steps
/// meet through FIFOs in a second, shared cache (no sleeps, no timing): step A writes its
/// mark into the cache, tells the test it is inside, and waits; the test runs build B to its
/// end, then lets A finish. (Were `private` to wait for the cache as `locked` does, B would
/// wait for A and this test would hang.)
#[test]
fn private_cache_mount_in_use_gives_another_step_its_own_directory() {
    use std::io::Read;
    hoist_testkit::require!("runc", "mkfifo", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (store, ctx) = (t.join("store"), t.join("ctx"));
    busybox_root(&ctx.join("root"));
    let dockerfile = |name: &str, run: &str| {
        let p = t.join(name);
        fs::write(&p, format!("FROM scratch\nCOPY root/ /\nRUN {run}\n")).unwrap();
        p
    };
    let build = |df: &Path, out: &Path| -> Command {
        let mut c = hoist_cmd();
        let o = format!("type=local,dest={}", out.display());
        c.env("HOIST_STORE", &store).args(["build", "-f", df.to_str().unwrap(), "-o", &o, ctx.to_str().unwrap()]);
        c
    };
    let sync = "--mount=type=cache,id=hoist-sync,target=/s";
    let private = "--mount=type=cache,id=contended,target=/c,sharing=private";

    // The meeting point: two FIFOs in the cache `hoist-sync`, found in the store by a mark.
    let setup = dockerfile("Dockerfile.setup", &format!("{sync} touch /s/hoist-sync-mark"));
    assert_success("setup build", &build(&setup, &t.join("out0")).output().unwrap());
    let mark = walkdir::WalkDir::new(&store)
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name() == "hoist-sync-mark")
        .expect("the sync cache in the store");
    let dir = mark.path().parent().unwrap().to_path_buf();
    let (f1, f2) = (dir.join("f1"), dir.join("f2"));
    assert!(Command::new("mkfifo").arg(&f1).arg(&f2).status().unwrap().success());

    let a = dockerfile(
        "Dockerfile.a",
        &format!("{private} {sync} echo a > /c/owner && echo in > /s/f1 && read x < /s/f2 && cat /c/owner > /a-saw"),
    );
    let a_err = fs::File::create(t.join("a.err")).unwrap();
    let mut child = build(&a, &t.join("out-a")).stdout(std::process::Stdio::null()).stderr(a_err).spawn().unwrap();
    // If A ends before it writes to f1, open f1 for writing so the read below sees the end.
    let watch = {
        let f1 = f1.clone();
        std::thread::spawn(move || {
            let status = child.wait().unwrap();
            use std::os::unix::fs::OpenOptionsExt;
            let _ = fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&f1);
            status
        })
    };
    let mut said = String::new();
    fs::File::open(&f1).unwrap().read_to_string(&mut said).unwrap();
    assert_eq!(said, "in\n", "step A did not get inside: {}", fs::read_to_string(t.join("a.err")).unwrap());

    // A holds the cache: B's step gets an empty directory, and its write stays there.
    let b = dockerfile("Dockerfile.b", &format!("{private} ls -A /c > /b-saw && echo b > /c/owner"));
    let out = build(&b, &t.join("out-b")).output().unwrap();
    assert_success("build B", &out);
    assert_eq!(fs::read_to_string(t.join("out-b/b-saw")).unwrap(), "", "B saw A's cache");

    fs::write(&f2, "go\n").unwrap();
    let status = watch.join().unwrap();
    assert!(status.success(), "build A: {}", fs::read_to_string(t.join("a.err")).unwrap());
    assert_eq!(fs::read_to_string(t.join("out-a/a-saw")).unwrap(), "a\n", "B's write reached A's cache");

    // The cache is A's: B's directory was thrown away.
    let c = dockerfile("Dockerfile.c", &format!("{private} cat /c/owner > /c-saw"));
    assert_success("build C", &build(&c, &t.join("out-c")).output().unwrap());
    assert_eq!(fs::read_to_string(t.join("out-c/c-saw")).unwrap(), "a\n");
}
