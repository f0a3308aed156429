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
/// `.dockerignore`, a symlinked `.dockerignore` never followed, and a `--chmod` that expands
/// to nothing (no chmod: BuildKit's testCopyChmod).
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
         COPY . /all/\nCOPY sub/dir1 /d6\nLABEL legacy some value\nCOPY <<robots.txt <<b.c /h/\nUser-agent: *\nrobots.txt\nb\nb.c\n\
         ARG MODE\nCOPY --chmod=${MODE} foo.go /plainmode\n",
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
    let ctx_mode = fs::metadata(ctx.join("foo.go")).unwrap().mode() & 0o7777;
    assert_eq!(m("plainmode").mode() & 0o7777, ctx_mode, "an empty --chmod keeps the file's mode");
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

/// Symbolic `--chmod` modes (BuildKit's Dockerfile frontend 1.14+, chmod(1)'s grammar with
/// BSD `setmode` semantics and no umask) apply to each copied file's own mode, directories
/// included (`X`: execute for directories and files that have one); octal modes replace it;
/// a value that looks numeric but is not octal, or is not the grammar, is refused.
#[test]
fn symbolic_chmod_applies_to_each_copied_file() {
    hoist_testkit::require!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("d/sub")).unwrap();
    let file = |p: &str, mode: u32| {
        let p = ctx.join(p);
        if !p.exists() {
            fs::write(&p, "x").unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    file("exe", 0o644);
    file("w", 0o666);
    file("d/f", 0o600);
    file("d/x", 0o700);
    file("d/sub", 0o700);
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY --chmod=u+x exe /a\nCOPY --chmod=go-w w /b\nCOPY --chmod=a=rX d /c/\n\
         ADD --chmod=u=rw,g=r,o= w /e\nCOPY --chmod=g=u,o-rwx d/x /g\nCOPY --chmod=+t,a+rwx d /s/\n\
         COPY --chmod=0750 exe /oct\n",
    )
    .unwrap();
    let dest = t.join("oci");
    assert_success("hoist build", &build(&t.join("store"), &ctx, &dest, &[]));
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("a"), 0o744, "u+x");
    assert_eq!(mode("b"), 0o644, "go-w");
    assert_eq!((mode("c/f"), mode("c/x"), mode("c/sub")), (0o444, 0o555, 0o555), "a=rX");
    assert_eq!(mode("e"), 0o640, "u=rw,g=r,o=");
    assert_eq!(mode("g"), 0o770, "g=u,o-rwx");
    assert_eq!((mode("s/sub"), mode("s/f")), (0o1777, 0o1777), "+t,a+rwx");
    assert_eq!(mode("oct"), 0o750, "octal replaces");

    refused(t, &ctx, "FROM scratch\nCOPY --chmod=u+z exe /f\n", &["--chmod=u+z", "invalid chmod parameter"]);
    refused(t, &ctx, "FROM scratch\nCOPY --chmod=17777 exe /f\n", &["between 0 and 07777"]);
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
    refused(t, &ctx, "FROM scratch\nCOPY --chmod=64a f /f\n", &["--chmod=64a", "it should be octal string"]);
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

/// `COPY --parents` as BuildKit copies it (its `dockerfile_parents_test.go` cases on a
/// busybox stage): a source keeps its path below the context or stage root, or below a `/./`
/// pivot; wildcards on both sides of the pivot, `**`, several sources into one tree; the
/// directories on the way keep their own modes; a wildcard matching nothing copies nothing,
/// a missing plain path is an error; `.dockerignore` and `--exclude` still apply.
#[test]
fn copy_parents_as_buildkit_copies() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::create_dir_all(ctx.join("foo1/foo2")).unwrap();
    fs::write(ctx.join("foo1/foo2/bar"), "testing").unwrap();
    fs::write(ctx.join("foo1/foo2/baz"), "testing2").unwrap();
    fs::write(ctx.join("foo1/foo2/ignored"), "no").unwrap();
    fs::write(ctx.join("foo1/foo2/x.tmp"), "no").unwrap();
    fs::set_permissions(ctx.join("foo1"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(ctx.join("foo1/foo2"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(ctx.join(".dockerignore"), "foo1/foo2/ignored\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS base\nCOPY root/ /\nWORKDIR /test\n\
         RUN mkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2 && touch a/b/c/d/foo a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz && chmod 700 a/b\n\
         FROM scratch AS middle\nCOPY --from=base --parents /test/a/b/./c/d /out/\n\
         FROM scratch AS end\nCOPY --from=base --parents /test/a/b/c/d/. /out/\n\
         FROM scratch AS start\nCOPY --from=base --parents ./test/a/b/c/d /out/\n\
         FROM scratch AS double\nCOPY --from=base --parents /test/a/./b/./c /out/\n\
         FROM scratch AS wildcard\nCOPY --from=base --parents /test/a/./*/c /out/\n\
         FROM scratch AS doublewildcard\nCOPY --from=base --parents /test/a/b*/./c/**/e /out/\n\
         FROM scratch AS doubleinputs\nCOPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/\n\
         FROM scratch AS nomatch\nCOPY --from=base --parents /test/a/b/./c9* /test/a/b9*/c /out/\n\
         FROM scratch\nCOPY --parents foo1/foo2/bar /ctx/\nWORKDIR /test\nCOPY --parents --exclude=**/*.tmp foo1/foo2/ba* foo1/foo2/*.tmp .\n\
         COPY --parents foo1 /all/\n\
         COPY --from=middle /out /middle\nCOPY --from=end /out /end\nCOPY --from=start /out /start\n\
         COPY --from=double /out /double\nCOPY --from=wildcard /out /wildcard\nCOPY --from=doublewildcard /out /doublewildcard\n\
         COPY --from=doubleinputs /out /doubleinputs\nCOPY --from=nomatch /out /nomatch\n",
    )
    .unwrap();
    let dest = t.join("oci");
    assert_success("hoist build", &build(&t.join("store"), &ctx, &dest, &[]));
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    let mut paths: Vec<String> = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(&root).unwrap().to_string_lossy().into_owned())
        .collect();
    paths.sort();
    let expect = [
        "all",
        "all/foo1",
        "all/foo1/foo2",
        "all/foo1/foo2/bar",
        "all/foo1/foo2/baz",
        "all/foo1/foo2/x.tmp",
        "ctx",
        "ctx/foo1",
        "ctx/foo1/foo2",
        "ctx/foo1/foo2/bar",
        "double",
        "double/b",
        "double/b/c",
        "double/b/c/d",
        "double/b/c/d/e",
        "double/b/c/d/e/bay",
        "double/b/c/d/foo",
        "doubleinputs",
        "doubleinputs/c",
        "doubleinputs/c/d",
        "doubleinputs/c/d/e",
        "doubleinputs/c/d/e/bar",
        "doubleinputs/d",
        "doubleinputs/d/e",
        "doubleinputs/d/e/baz",
        "doubleinputs/d/e2",
        "doubleinputs/d/e2/baz",
        "doublewildcard",
        "doublewildcard/c",
        "doublewildcard/c/d",
        "doublewildcard/c/d/e",
        "doublewildcard/c/d/e/bar",
        "doublewildcard/c/d/e/bay",
        "end",
        "end/test",
        "end/test/a",
        "end/test/a/b",
        "end/test/a/b/c",
        "end/test/a/b/c/d",
        "end/test/a/b/c/d/e",
        "end/test/a/b/c/d/e/bay",
        "end/test/a/b/c/d/foo",
        "middle",
        "middle/c",
        "middle/c/d",
        "middle/c/d/e",
        "middle/c/d/e/bay",
        "middle/c/d/foo",
        "nomatch",
        "start",
        "start/test",
        "start/test/a",
        "start/test/a/b",
        "start/test/a/b/c",
        "start/test/a/b/c/d",
        "start/test/a/b/c/d/e",
        "start/test/a/b/c/d/e/bay",
        "start/test/a/b/c/d/foo",
        "test",
        "test/foo1",
        "test/foo1/foo2",
        "test/foo1/foo2/bar",
        "test/foo1/foo2/baz",
        "wildcard",
        "wildcard/b",
        "wildcard/b/c",
        "wildcard/b/c/d",
        "wildcard/b/c/d/e",
        "wildcard/b/c/d/e/bay",
        "wildcard/b/c/d/foo",
        "wildcard/b2",
        "wildcard/b2/c",
        "wildcard/b2/c/d",
        "wildcard/b2/c/d/e",
        "wildcard/b2/c/d/e/bar",
    ];
    assert_eq!(paths, expect, "what --parents copied");
    let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(fs::read_to_string(root.join("ctx/foo1/foo2/bar")).unwrap(), "testing");
    assert_eq!(
        (mode("ctx/foo1"), mode("ctx/foo1/foo2"), mode("test/foo1")),
        (0o700, 0o750, 0o700),
        "parents keep theirs"
    );
    assert_eq!((mode("start/test/a/b"), mode("end/test/a/b"), mode("start/test/a")), (0o700, 0o700, 0o755));
    let m = fs::symlink_metadata(root.join("ctx/foo1")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "context files are root's");

    // a plain path that does not exist is an error; `--parents=false` is plain COPY
    refused(t, &ctx, "FROM scratch\nCOPY --parents foo1/nope /x/\n", &["foo1/nope", "not found"]);
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY --parents=false foo1/foo2/bar /x/\n").unwrap();
    let dest = t.join("oci2");
    assert_success("hoist build --parents=false", &build(&t.join("store"), &ctx, &dest, &[]));
    assert!(unpack(&dest, &t.join("bundle2")).join("rootfs/x/bar").is_file());
}

/// `RUN --mount` options as BuildKit reads them: tmpfs `size=`; `type=ssh` without `--ssh`
/// (optional: no socket, SSH_AUTH_SOCK still set; `required`: an error naming the id);
/// refused with BuildKit's words: `mode`/`uid`/`gid` on tmpfs and bind mounts, an unknown
/// key, an unknown `sharing`, a secret `from`, an ssh `source`, a mount from the current stage;
/// `--ssh` naming no socket.
#[test]
fn run_mount_options_as_buildkit_reads_them() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\n\
         RUN --mount=type=tmpfs,target=/t,size=1m busybox df -k /t > /tmpfs-df\n\
         RUN --mount=type=ssh echo \"$SSH_AUTH_SOCK\" > /ssh-env && (test -e \"$SSH_AUTH_SOCK\" && echo present || echo absent) > /ssh-sock\n",
    )
    .unwrap();
    let dest = t.join("oci");
    let out = hoist_cmd()
        .env("HOIST_STORE", t.join("store"))
        .env_remove("SSH_AUTH_SOCK")
        .args(["build", "-t", "img:latest", "--output", &format!("type=oci,dest={},tar=false", dest.display())])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success("hoist build", &out);
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    let df = fs::read_to_string(root.join("tmpfs-df")).unwrap();
    let line = df.lines().last().unwrap_or_default().split_whitespace().collect::<Vec<_>>();
    assert_eq!((line.get(1), line.last()), (Some(&"1024"), Some(&"/t")), "a 1 MiB tmpfs: {df}");
    assert_eq!(fs::read_to_string(root.join("ssh-env")).unwrap(), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(fs::read_to_string(root.join("ssh-sock")).unwrap(), "absent\n");
    assert!(!root.join("run/buildkit").exists(), "the ssh mount point is not left in the layer");

    let pre = "FROM scratch AS a\nCOPY root/ /\n";
    let cases: &[(&str, &[&str])] = &[
        ("RUN --mount=type=ssh,id=git,required=true true", &["no SSH key \"git\" forwarded", "--ssh git"]),
        ("RUN --mount=type=tmpfs,target=/t,mode=0700 true", &["mode not allowed for \"tmpfs\" type mounts"]),
        ("RUN --mount=type=bind,target=/t,uid=1 true", &["uid not allowed for \"bind\" type mounts"]),
        ("RUN --mount=type=cache,target=/c,bogus=1 true", &["unexpected key 'bogus' in 'bogus=1'"]),
        ("RUN --mount=type=cache,target=/c,sharing=bogus true", &["unsupported sharing value \"bogus\""]),
        ("RUN --mount=type=bind,target=/c,size=1m true", &["unexpected key 'size' for mount type 'bind'"]),
        ("RUN --mount=type=secret,id=x,from=a true", &["secret mount should not have a from"]),
        ("RUN --mount=type=ssh,source=x true", &["ssh does not support source"]),
        ("RUN --mount=from=a,target=/x true", &["cannot mount from stage \"a\""]),
    ];
    for (run, needles) in cases {
        refused(t, &ctx, &format!("{pre}{run}\n"), needles);
    }
    for bad in ["default=/nonexistent/agent.sock", "default=a,b"] {
        let out = hoist_in(
            &t.join("store"),
            &["build", "--ssh", bad, "-o", "type=oci,dest=/dev/null", ctx.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(2), "--ssh {bad}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
