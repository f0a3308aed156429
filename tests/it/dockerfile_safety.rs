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

// ---------------------------------------------------------------- never through a symlink

/// A layer tar of `(path, kind, data, link)` members (root-owned; links 0777, others 0644).
fn layer_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mode = if *kind == tar::EntryType::Symlink { 0o777 } else { 0o644 };
        crate::cli_export::entry(&mut b, path, *kind, mode, (0, 0), data, *link);
    }
    b.into_inner().unwrap()
}

/// Build, in `dir`, `FROM oci:LAYOUT AS base` + `COPY --from=base / /` of an image whose
/// layers are `layers`, with the copy snapshotter: every layer is unpacked on its own (the
/// one extraction, overlayfs format), then the stack is copied into one tree. Returns the
/// build's output and the OCI layout it wrote.
fn build_on_layers(dir: &Path, layers: &[&[u8]]) -> (std::process::Output, std::path::PathBuf) {
    let layout = dir.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let (m, d) = hoist_testkit::fixtures::write_image(&layout, layers, "hostile");
    hoist_testkit::fixtures::write_index(&layout, &[("v1", &m, &d)]);
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM oci:{}:v1 AS base\nFROM scratch\nCOPY --from=base / /\n", layout.display()),
    )
    .unwrap();
    let dest = dir.join("oci");
    (build(&dir.join("store"), &ctx, &dest, &["--snapshotter", "copy"]), dest)
}

/// A directory outside every build root, holding `target` ("keep") and `secret`.
fn outside_dir(t: &Path) -> std::path::PathBuf {
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("target"), "keep\n").unwrap();
    fs::write(outside.join("secret"), "secret\n").unwrap();
    outside
}

/// What is in `outside` besides the two files `outside_dir` put there.
fn extra_files(outside: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "target" && n != "secret")
        .collect();
    v.sort();
    v
}

/// #25, Dockerfile snapshots: a symlink made in an earlier layer, then used as a parent in a
/// later one, never takes the later layer's file outside the root: the later layer's
/// directory replaces the link (as overlayfs shows it), in the unpacked layer and in the
/// copied snapshot. Within one layer (`esc -> OUTSIDE`, then `esc/sub/owned`) the member is
/// refused and no directory is made outside either. Judged by the outside directory's
/// listing and umoci's unpack of the image.
#[test]
fn snapshot_never_writes_through_an_earlier_layers_symlink() {
    hoist_testkit::require!("umoci");
    hoist_testkit::require_root!("layers are unpacked with their owners");
    use tar::EntryType::{Regular, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let outside = outside_dir(t);
    let out_s = outside.to_str().unwrap();
    let mut problems = Vec::new();

    let l1 = layer_tar(&[("esc", Symlink, b"", Some(out_s))]);
    let l2 = layer_tar(&[("esc/owned", Regular, b"pwned\n", None)]);
    let (out, dest) = build_on_layers(&t.join("across"), &[&l1, &l2]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !extra_files(&outside).is_empty() {
        problems.push(format!("across layers: written outside: {:?} ({err})", extra_files(&outside)));
    } else if !out.status.success() {
        problems.push(format!("across layers: build failed: {err}"));
    } else {
        let root = unpack(&dest, &t.join("across/bundle")).join("rootfs");
        let m = fs::symlink_metadata(root.join("esc")).unwrap();
        if !m.is_dir() || fs::read_to_string(root.join("esc/owned")).ok().as_deref() != Some("pwned\n") {
            problems.push("across layers: /esc is not the later layer's directory".into());
        }
    }

    let l = layer_tar(&[("esc", Symlink, b"", Some(out_s)), ("esc/sub/owned", Regular, b"pwned\n", None)]);
    let (out, _) = build_on_layers(&t.join("within"), &[&l]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !extra_files(&outside).is_empty() {
        problems.push(format!("within a layer: written outside: {:?} ({err})", extra_files(&outside)));
    }
    if out.status.success() || !err.contains("symlink") {
        problems.push(format!("within a layer: not refused by name: {err}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// #25, Dockerfile snapshots: a symlink at a path that a file replaces (the final path
/// component) is replaced, never written through: in a later layer (the copied snapshot) and
/// in the same layer (the unpack). The outside file keeps its bytes; the image holds the file.
#[test]
fn snapshot_replaces_a_symlink_at_the_final_component() {
    hoist_testkit::require!("umoci");
    hoist_testkit::require_root!("layers are unpacked with their owners");
    use tar::EntryType::{Regular, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let outside = outside_dir(t);
    let target = outside.join("target");
    let link = Some(target.to_str().unwrap());
    let mut problems = Vec::new();
    let across: [Vec<u8>; 2] = [layer_tar(&[("f", Symlink, b"", link)]), layer_tar(&[("f", Regular, b"new\n", None)])];
    let within = [layer_tar(&[("f", Symlink, b"", link), ("f", Regular, b"new\n", None)])];
    for (name, layers) in [("across", &across[..]), ("within", &within[..])] {
        let refs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
        let (out, dest) = build_on_layers(&t.join(name), &refs);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if fs::read_to_string(&target).unwrap() != "keep\n" {
            problems.push(format!("{name}: written through the link: {err}"));
            fs::write(&target, "keep\n").unwrap();
        } else if !out.status.success() {
            problems.push(format!("{name}: build failed: {err}"));
        } else {
            let root = unpack(&dest, &t.join(name).join("bundle")).join("rootfs");
            let f = root.join("f");
            if !fs::symlink_metadata(&f).unwrap().is_file() || fs::read_to_string(&f).unwrap() != "new\n" {
                problems.push(format!("{name}: /f is not the new file"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// #25, Dockerfile snapshots: a hard link whose target is outside the root (by `..`, by an
/// absolute path, through a symlink to outside) is refused, and the outside file never gets
/// a link (its link count stays 1) nor a change.
#[test]
fn snapshot_refuses_a_hard_link_out_of_the_root() {
    hoist_testkit::require_root!("layers are unpacked with their owners");
    use tar::EntryType::{Link, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let outside = outside_dir(t);
    let secret = outside.join("secret");
    // from the layer's unpack directory (t/CASE/store/build-cache/layers/.unpack-X) up to t
    let up = "../../../../../outside/secret".to_string();
    let abs = secret.to_str().unwrap().to_string();
    let cases: [(&str, Vec<u8>); 3] = [
        ("dotdot", layer_tar(&[("h", Link, b"", Some(&up))])),
        ("absolute", layer_tar(&[("h", Link, b"", Some(&abs))])),
        (
            "via-symlink",
            layer_tar(&[("l", Symlink, b"", Some(outside.to_str().unwrap())), ("h", Link, b"", Some("l/secret"))]),
        ),
    ];
    let mut problems = Vec::new();
    for (name, layer) in &cases {
        let (out, _) = build_on_layers(&t.join(name), &[layer]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let m = fs::metadata(&secret).unwrap();
        if m.nlink() != 1 || fs::read_to_string(&secret).unwrap() != "secret\n" {
            problems.push(format!("{name}: the outside file got a link ({} links): {err}", m.nlink()));
        }
        if out.status.success() {
            problems.push(format!("{name}: a hard link out of the root was accepted"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
