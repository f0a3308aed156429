//! Dockerfile semantics where hoist follows BuildKit (the reference; the facts come from
//! BuildKit's frontend tests and from building the same files with Debian's dockerd 20.10):
//! what it accepts, what it refuses and with which words, what it writes. Judged with
//! umoci's unpack of the image and the image config.

use crate::common;
use crate::dockerfile::{busybox_root, config_of, unpack, BUSYBOX};

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use serde_json::Value;

fn build(store: &Path, ctx: &Path, dest: &Path, extra: &[&str]) -> std::process::Output {
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let mut a = vec!["build", "-t", "img:latest", "--output", &o, "--snapshotter", "copy"];
    a.extend(extra);
    a.push(ctx.to_str().unwrap());
    hoist_in(store, &a)
}

/// Build `dockerfile` in `ctx` and expect a failure whose message holds every `needles`.
fn refused(t: &Path, ctx: &Path, dockerfile: &str, needles: &[&str]) {
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = build(&t.join("store"), ctx, &t.join("refused"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{dockerfile}: built, expected a refusal");
    for n in needles {
        assert!(err.contains(n), "{dockerfile}: {n:?} not in {err}");
    }
    assert!(!t.join("refused").exists());
}

/// What BuildKit accepts and writes: `COPY --chown=:`, a wildcard matching nothing next
/// to a source that matches, one wildcard match copied to the destination name itself,
/// `COPY . dir/` and a missing directory destination made 0755, the legacy `LABEL key value`,
/// heredoc names with dots, `WorkingDir` `/` on scratch, `<Dockerfile>.dockerignore` before
/// `.dockerignore`, and a symlinked `.dockerignore` never followed.
#[test]
fn accepted_and_written_as_buildkit_does() {
    hoist_testkit::require!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("sub/dir1")).unwrap();
    fs::set_permissions(&ctx, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(ctx.join("sub/dir1"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(ctx.join("sub/dir1/foo"), "foo").unwrap();
    fs::write(ctx.join("foo.go"), "go").unwrap();
    fs::write(ctx.join("kept"), "kept").unwrap();
    fs::write(ctx.join("dropped"), "dropped").unwrap();
    fs::create_dir_all(t.join("df")).unwrap();
    fs::write(
        t.join("df/Dockerfile"),
        "FROM scratch\nCOPY --chown=: foo.go /owned\nCOPY foo.go nomatch* /any/\nCOPY f*.go /single.go\n\
         COPY . /all/\nCOPY sub/dir1 /d6\nLABEL legacy some value\nCOPY <<robots.txt <<b.c /h/\nUser-agent: *\nrobots.txt\nb\nb.c\n",
    )
    .unwrap();
    // beside the Dockerfile: wins over the context's (which would drop `kept`)
    fs::write(t.join("df/Dockerfile.dockerignore"), "dropped\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "kept\n").unwrap();
    let dest = t.join("oci");
    let out = build(&t.join("store"), &ctx, &dest, &["-f", t.join("df/Dockerfile").to_str().unwrap()]);
    assert_success("hoist build", &out);
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    let m = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!((m("owned").uid(), m("owned").gid()), (0, 0));
    assert!(root.join("any/foo.go").is_file());
    assert!(m("single.go").is_file(), "one wildcard match is copied to the destination name");
    assert_eq!(m("all").mode() & 0o7777, 0o755, "the context root's mode is not copied");
    assert_eq!(m("d6").mode() & 0o7777, 0o755, "a missing destination directory is 0755");
    assert_eq!(m("all/sub/dir1").mode() & 0o7777, 0o700, "directories inside keep theirs");
    assert!(root.join("all/kept").is_file() && !root.join("all/dropped").exists());
    assert_eq!(fs::read_to_string(root.join("h/robots.txt")).unwrap(), "User-agent: *\n");
    assert_eq!(fs::read_to_string(root.join("h/b.c")).unwrap(), "b\n");
    let c = config_of(&dest);
    assert_eq!(c["config"]["Labels"]["legacy"], "some value", "{c}");
    assert_eq!(c["config"]["WorkingDir"], "/", "{c}");

    // A .dockerignore that is a symlink (here to a file outside the context) is not read.
    let ctx2 = t.join("ctx2");
    fs::create_dir_all(&ctx2).unwrap();
    fs::write(t.join("outside-ignore"), "f\n").unwrap();
    symlink(t.join("outside-ignore"), ctx2.join(".dockerignore")).unwrap();
    fs::write(ctx2.join("f"), "f").unwrap();
    fs::write(ctx2.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    assert_success("hoist build (symlinked .dockerignore)", &build(&t.join("store"), &ctx2, &t.join("oci2"), &[]));
}

/// What BuildKit refuses, hoist refuses with BuildKit's reason: a variable in `--from`
/// (COPY and RUN --mount), a stage name with symbols or a variable, `--from` without a
/// value or naming its own stage; `FROM 0` names an image, not stage 0.
#[test]
fn refused_as_buildkit_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f"), "f").unwrap();
    let why = "variable expansion is not supported for --from";
    refused(t, &ctx, "ARG X=a\nFROM scratch AS a\nCOPY f /f\nFROM scratch\nCOPY --from=$X /f /g\n", &[why]);
    refused(t, &ctx, "FROM scratch\nRUN --mount=type=bind,from=${X},target=/x true\n", &[why]);
    refused(t, &ctx, "FROM scratch AS platform-arm/v7\nCOPY f /f\n", &["invalid name for build stage"]);
    refused(t, &ctx, "ARG VAR=x\nFROM scratch AS ${VAR}\nCOPY f /f\n", &["invalid name for build stage"]);
    refused(t, &ctx, "FROM scratch AS a\nCOPY --from f /f\n", &["--from needs a value"]);
    refused(t, &ctx, "FROM scratch AS a\nCOPY --from=a /f /g\n", &["circular dependency"]);
    // `FROM 0` is the image `0` (which cannot be pulled here), never stage 0
    refused(t, &ctx, "FROM scratch\nCOPY f /f\nFROM 0\n", &["docker.io"]);
}

/// `FROM --platform=$BUILDPLATFORM` builds its stage for the host and runs its RUN natively
/// whatever `--platform` targets, with BuildKit's TARGETPLATFORM/BUILDPLATFORM; a bare RUN
/// runs `sh -c ""`, and `--mount=type=bind,from=` (empty) binds the context.
#[test]
fn buildplatform_stage_runs_natively_for_every_target() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::write(ctx.join("f"), "from the context\n").unwrap();
    let host = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    let foreign = if host == "amd64" { "arm64" } else { "amd64" };
    fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM scratch AS build\nCOPY root/ /\nARG TARGETPLATFORM\nARG BUILDPLATFORM\nARG TARGETARCH\n\
         RUN\n\
         RUN --mount=type=bind,from=,target=/c echo \"$BUILDPLATFORM->$TARGETPLATFORM $TARGETARCH $(busybox uname -m)\" > /out && cat /c/f >> /out\n\
         FROM scratch\nCOPY --from=build /out /out\n",
    )
    .unwrap();
    let dest = t.join("oci");
    let pf = format!("linux/{host},linux/{foreign}");
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let out = hoist_in(
        &t.join("store"),
        &["--platform", &pf, "build", "-t", "img:latest", "--output", &o, ctx.to_str().unwrap()],
    );
    assert_success("hoist build --platform", &out);
    let idx: Value = serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| dest.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index: Value =
        serde_json::from_slice(&fs::read(blob(idx["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let ms = index["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2, "{index}");
    let uname = if host == "amd64" { "x86_64" } else { "aarch64" };
    for (m, arch) in ms.iter().zip([host, foreign]) {
        assert_eq!(m["platform"]["architecture"], arch);
        let man: Value = serde_json::from_slice(&fs::read(blob(m["digest"].as_str().unwrap())).unwrap()).unwrap();
        let layer = man["layers"][0]["digest"].as_str().unwrap();
        let raw = fs::read(blob(layer)).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&raw[..]));
        let mut text = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("out") {
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            }
        }
        assert_eq!(text, format!("linux/{host}->linux/{arch} {arch} {uname}\nfrom the context\n"));
    }
}

/// A COPY destination that is a symlink, or lies under one, is followed inside the image
/// (`COPY x /etc/hbase` with /etc/hbase -> /usr/local/hbase writes /usr/local/hbase/x), and
/// a WORKDIR that is a dangling symlink creates the link's target.
#[test]
fn copy_destination_and_workdir_follow_symlinks_inside_the_image() {
    hoist_testkit::require!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("root/usr/local/hbase")).unwrap();
    fs::create_dir_all(ctx.join("root/etc")).unwrap();
    fs::create_dir_all(ctx.join("root/home")).unwrap();
    symlink("/usr/local/hbase", ctx.join("root/etc/hbase")).unwrap();
    symlink("/home/real", ctx.join("root/home/link")).unwrap();
    fs::write(ctx.join("x"), "x").unwrap();
    fs::write(ctx.join("y"), "y").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\nCOPY x /etc/hbase\nWORKDIR /home/link\nCOPY y .\n")
        .unwrap();
    let dest = t.join("oci");
    assert_success("hoist build", &build(&t.join("store"), &ctx, &dest, &[]));
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    assert_eq!(fs::read_to_string(root.join("usr/local/hbase/x")).unwrap(), "x");
    assert!(fs::symlink_metadata(root.join("etc/hbase")).unwrap().file_type().is_symlink(), "the link stays a link");
    assert!(fs::symlink_metadata(root.join("home/real")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(root.join("home/real/y")).unwrap(), "y");
    assert_eq!(config_of(&dest)["config"]["WorkingDir"], "/home/link");
}

/// COPY heredocs keep their quotes and take backslash escapes as BuildKit's lexer does; a
/// RUN heredoc starting with `#!` runs as that script (not expanded); `COPY --exclude`;
/// `--label` and `--iidfile`; `RUN --network=none` sees only a loopback interface;
/// `--security=insecure` is refused by name.
#[test]
fn heredoc_text_exclude_labels_and_network_none() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::create_dir_all(ctx.join("dir")).unwrap();
    for f in ["keep.txt", "drop.log", "dir/a.txt", "dir/b.log"] {
        fs::write(ctx.join(f), f).unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nRUN ln -s busybox /bin/awk\nARG V=v\n\
         COPY <<EOF /q\n\"quoted $V\" \\$V \\\\\nEOF\n\
         RUN <<EOF\n#!/bin/awk -f\nBEGIN { print \"awk ran $V\" > \"/awk\" }\nEOF\n\
         COPY --exclude=*.log --exclude=root . /ctx/\nCOPY --exclude=**/*.log dir /d2/\n\
         RUN --network=none cat /proc/net/dev > /netdev\n",
    )
    .unwrap();
    let dest = t.join("oci");
    let iid = t.join("iid");
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let out = hoist_in(
        &t.join("store"),
        &[
            "build",
            "-t",
            "img:latest",
            "-o",
            &o,
            "--label",
            "team=core",
            "--iidfile",
            iid.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    let digest = assert_success("hoist build", &out).trim().to_string();
    assert_eq!(fs::read_to_string(&iid).unwrap(), digest);
    assert_eq!(config_of(&dest)["config"]["Labels"]["team"], "core");
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    assert_eq!(fs::read_to_string(root.join("q")).unwrap(), "\"quoted v\" $V \\\n");
    assert_eq!(fs::read_to_string(root.join("awk")).unwrap(), "awk ran $V\n");
    assert!(root.join("ctx/keep.txt").is_file() && root.join("ctx/dir/a.txt").is_file());
    assert!(!root.join("ctx/drop.log").exists() && !root.join("ctx/root").exists());
    assert!(root.join("ctx/dir/b.log").is_file(), "*.log matches the top level only");
    assert!(root.join("d2/a.txt").is_file() && !root.join("d2/b.log").exists());
    let netdev = fs::read_to_string(root.join("netdev")).unwrap();
    let ifaces: Vec<&str> = netdev.lines().filter_map(|l| l.split_once(':')).map(|(n, _)| n.trim()).collect();
    assert_eq!(ifaces, vec!["lo"], "{netdev}");

    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\nRUN --security=insecure true\n").unwrap();
    let out = hoist_in(
        &t.join("store"),
        &["build", "-o", &format!("type=oci,dest={}", t.join("x").display()), ctx.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--security=insecure is not supported"), "{err}");
}

/// `--build-context NAME=oci-layout://DIR:TAG`: `FROM NAME` and `COPY --from=NAME` use that
/// image (buildx's named contexts); a directory as a named context is refused by name.
#[test]
fn named_build_context_from_an_oci_layout() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base_ctx = t.join("basectx");
    busybox_root(&base_ctx.join("root"));
    fs::write(base_ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\nCOPY marker /marker\n").unwrap();
    fs::write(base_ctx.join("marker"), "from the named context").unwrap();
    let base = t.join("base");
    let o = format!("type=oci,dest={},tar=false", base.display());
    assert_success("base", &hoist_in(&t.join("store"), &["build", "-t", "b:v1", "-o", &o, base_ctx.to_str().unwrap()]));
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM mybase\nRUN cat /marker > /seen\nCOPY --from=other /marker /again\n")
        .unwrap();
    let dest = t.join("oci");
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let named = format!("mybase=oci-layout://{}:v1", base.display());
    let other = format!("other=docker-image://oci:{}:v1", base.display());
    let out = hoist_in(
        &t.join("store"),
        &[
            "build",
            "-t",
            "img:latest",
            "-o",
            &o,
            "--build-context",
            &named,
            "--build-context",
            &other,
            ctx.to_str().unwrap(),
        ],
    );
    assert_success("hoist build", &out);
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    assert_eq!(fs::read_to_string(root.join("seen")).unwrap(), "from the named context");
    assert_eq!(fs::read_to_string(root.join("again")).unwrap(), "from the named context");

    // a named directory that does not exist is refused by name before anything is built
    let missing = t.join("missing");
    let out = hoist_in(
        &t.join("store"),
        &["build", "-o", &o, "--build-context", &format!("mybase={}", missing.display()), ctx.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--build-context mybase=") && err.contains("missing"), "{err}");
}
