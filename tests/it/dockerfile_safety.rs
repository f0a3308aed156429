//! Dockerfile builds never reach the build host: absolute symlinks of a stage or of the
//! context resolve inside that root, a `rw` bind mount writes to a throwaway copy, a RUN
//! layer keeps the metadata of the directories above what it changed, and a step's cache
//! key holds everything that changes its result (USER for WORKDIR). Judged with umoci's
//! unpack of the built image and by the bytes of the context.

use crate::common;
use crate::dockerfile::{busybox_root, tree, unpack, BUSYBOX};

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use common::*;

/// `hoist build` of `ctx` into an OCI layout `dest` (tag `latest`), with `store`.
fn build(store: &Path, ctx: &Path, dest: &Path, extra: &[&str]) -> std::process::Output {
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let mut a = vec!["build", "-t", "img:latest", "--output", &o];
    a.extend(extra);
    a.push(ctx.to_str().unwrap());
    hoist_in(store, &a)
}

/// `COPY --from` of a stage's absolute symlink reads the stage's file, never the host's; a
/// link whose target the stage lacks is an error (as in BuildKit and buildah), and so is a
/// context symlink pointing at a host path.
#[test]
fn stage_symlinks_resolve_inside_the_stage_never_on_the_host() {
    hoist_testkit::require!("umoci");
    let host = fs::read("/etc/hostname").unwrap_or_default();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("root/bin")).unwrap();
    fs::create_dir_all(ctx.join("root/etc")).unwrap();
    fs::create_dir_all(ctx.join("root/usr/lib")).unwrap();
    fs::write(ctx.join("root/etc/hostname"), "stage\n").unwrap();
    fs::write(ctx.join("root/usr/lib/os-release"), "stage-os\n").unwrap();
    symlink("/etc/hostname", ctx.join("root/bin/myexe")).unwrap();
    symlink("/usr/lib", ctx.join("root/lib")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS builder\nCOPY root/ /\n\
         FROM scratch\nCOPY --from=builder /bin/myexe /bin/\nCOPY --from=builder /lib/os-release /os\n",
    )
    .unwrap();
    let dest = t.join("oci");
    let out = build(&t.join("store"), &ctx, &dest, &["--snapshotter", "copy"]);
    assert_success("hoist build", &out);
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    let got = fs::read(root.join("bin/myexe")).unwrap();
    assert_eq!(got, b"stage\n", "the stage's /etc/hostname, not the host's");
    assert_ne!(got, host);
    assert_eq!(fs::read(root.join("os")).unwrap(), b"stage-os\n");

    // The stage lacks the link's target: an error naming the source, nothing from the host.
    fs::remove_file(ctx.join("root/etc/hostname")).unwrap();
    let out = build(&t.join("store"), &ctx, &t.join("oci2"), &["--snapshotter", "copy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/bin/myexe") && err.contains("not found"), "{err}");
    assert!(!t.join("oci2").exists());

    // A context symlink to a host path resolves inside the context (where it is missing).
    let ctx2 = t.join("ctx2");
    fs::create_dir_all(&ctx2).unwrap();
    symlink("/etc/hostname", ctx2.join("hn")).unwrap();
    fs::write(ctx2.join("Dockerfile"), "FROM scratch\nCOPY hn /hn\n").unwrap();
    let out = build(&t.join("store"), &ctx2, &t.join("oci3"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("hn") && err.contains("not found"), "{err}");
}

/// A `rw` bind mount of the context sees and changes a copy: the RUN reads what it wrote,
/// the context stays byte-identical, and a relative context path (`-f rw/Dockerfile
/// rw/sub`) binds the right directory.
#[test]
fn rw_bind_mount_leaves_the_context_byte_identical() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sub = t.join("rw/sub");
    busybox_root(&sub.join("root"));
    fs::write(sub.join("input_file"), "hello\n").unwrap();
    fs::write(
        t.join("rw/Dockerfile"),
        "FROM scratch\nCOPY root/ /\n\
         RUN --mount=type=bind,source=.,target=/test,rw echo world > /test/input_file && cat /test/input_file > /seen\n\
         RUN --mount=type=bind,source=input_file,target=/in,rw echo again > /in && cat /in >> /seen\n",
    )
    .unwrap();
    let before = tree(&sub);
    let dest = t.join("oci");
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let out = hoist_cmd()
        .current_dir(t)
        .env("HOIST_STORE", t.join("store"))
        .args(["build", "-t", "img:latest", "-o", &o, "-f", "rw/Dockerfile", "rw/sub"])
        .output()
        .unwrap();
    assert_success("hoist build (relative context)", &out);
    assert_eq!(tree(&sub), before, "the build context changed");
    assert_eq!(fs::read_to_string(sub.join("input_file")).unwrap(), "hello\n");
    let root = unpack(&dest, &t.join("bundle")).join("rootfs");
    assert_eq!(fs::read_to_string(root.join("seen")).unwrap(), "world\nagain\n");
    assert!(!root.join("test/input_file").exists(), "the mount's contents stay out of the layer");
}

/// A RUN after `WORKDIR /home/http/public` (under a `/home/http` that is 2755 1000:1000)
/// keeps that directory's metadata: neither the WORKDIR layer nor the RUN layer re-emits it
/// as 0755 root. A failing RUN is a build failure (exit 1) naming the step and exit code.
#[test]
fn run_layer_keeps_parent_directory_metadata() {
    hoist_testkit::require!("runc", "umoci", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS base\nCOPY root/ /\n\
         RUN mkdir -p /home/http && chown 1000:1000 /home/http && chmod 2755 /home/http\n\
         FROM base\nWORKDIR /home/http/public\nRUN touch made && mkdir -p /home/http/other\n",
    )
    .unwrap();
    for snap in ["overlay", "copy"] {
        let dest = t.join(format!("oci-{snap}"));
        let out = build(&t.join(format!("store-{snap}")), &ctx, &dest, &["--snapshotter", snap]);
        assert_success("hoist build", &out);
        let root = unpack(&dest, &t.join(format!("bundle-{snap}"))).join("rootfs");
        let m = fs::metadata(root.join("home/http")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o2755, 1000, 1000), "{snap}: /home/http lost its metadata");
        assert!(root.join("home/http/public/made").is_file());
    }

    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\nRUN echo about to fail && exit 3\n").unwrap();
    let out = build(&t.join("store-overlay"), &ctx, &t.join("failed"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Dockerfile:3") && err.contains("RUN echo about to fail"), "{err}");
    assert!(err.contains("did not complete successfully: exit code: 3"), "{err}");
    assert!(!err.contains("malformed"), "{err}");
}

/// WORKDIR makes its directory as the stage's USER, so USER is part of the step's key: a
/// build without that USER does not reuse the directory a build with it made.
#[test]
fn user_changes_the_workdir_cache_key() {
    hoist_testkit::require!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f"), "f").unwrap();
    let store = t.join("store");
    let mut owners = Vec::new();
    for (i, user) in ["USER 1000:1000\n", ""].iter().enumerate() {
        fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nCOPY f /f\n{user}WORKDIR /made\n")).unwrap();
        let dest = t.join(format!("oci{i}"));
        assert_success("hoist build", &build(&store, &ctx, &dest, &["--snapshotter", "copy"]));
        let root = unpack(&dest, &t.join(format!("bundle{i}"))).join("rootfs");
        let m = fs::metadata(root.join("made")).unwrap();
        owners.push((m.uid(), m.gid()));
    }
    assert_eq!(owners, vec![(1000, 1000), (0, 0)]);
}
