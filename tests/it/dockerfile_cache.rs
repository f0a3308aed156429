//! The Dockerfile build cache shared through a registry (`--cache-to` / `--cache-from`,
//! buildx's flags) on the real registry: a second machine (a fresh store) runs no step the
//! cache holds and gets the same digest; `mode=min` leaves out the steps of other stages; a
//! cache naming a layer the registry no longer has is a miss, not an error; `type=local`.
//! What ran is read from the build's step log, never from timing.

use crate::common::*;
use crate::dockerfile::{busybox_root, BUSYBOX};

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;

/// The layer digests of the only image in the OCI layout `dir`.
fn image_layers(dir: &Path) -> Vec<String> {
    let blob = |d: &str| -> Value {
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap())
            .unwrap()
    };
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = blob(index["manifests"][0]["digest"].as_str().unwrap());
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// The digest of the last layer of the only image in the OCI layout `dir`.
fn last_layer(dir: &Path) -> String {
    image_layers(dir).last().unwrap().clone()
}

/// `DELETE /v2/REPO/blobs/DIGEST` on the registry (deletion is enabled there).
fn delete_blob(reg: &TestRegistry, repo: &str, digest: &str) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", reg.port())).unwrap();
    write!(s, "DELETE /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", reg.host())
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "blob delete: {answer}");
}

/// `hoist build` of `ctx` in `store` with `extra` flags: (stdout digest, stderr).
fn build(store: &Path, out: &Path, ctx: &Path, extra: &[&str]) -> (String, String) {
    let o = format!("type=oci,dest={},tar=false", out.display());
    let mut args = vec!["build", "-t", "img:latest", "-o", &o];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let r = hoist_in(store, &args);
    let digest = assert_success("hoist build", &r).trim().to_string();
    (digest, String::from_utf8_lossy(&r.stderr).into_owned())
}

#[test]
fn registry_cache_runs_nothing_on_a_fresh_store() {
    hoist_testkit::require!("runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS tools\nCOPY root/ /\nRUN echo tool > /tool && echo scratch > /not-copied\n\
         FROM scratch\nCOPY root/ /\nCOPY --from=tools /tool /tool\nRUN cat /tool > /copied && echo ran >> /copied\n\
         RUN true\n",
    )
    .unwrap();
    let max = format!("{}/cache:max", reg.host());
    let min = format!("{}/cache:min", reg.host());
    let local = t.join("localcache");

    // Machine 1 runs every RUN and exports three caches.
    let (d1, log) = build(
        &t.join("store1"),
        &t.join("out1"),
        &ctx,
        &[
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
            "--cache-to",
            &format!("type=registry,ref={min}"),
            "--cache-to",
            &format!("type=local,dest={},mode=max", local.display()),
        ],
    );
    assert!(log.contains("3 RUN executed"), "{log}");
    // The cache is an OCI artifact in the registry.
    let m = ok("inspect cache", hoist(["inspect", "--raw", &format!("docker://{max}")]));
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.hoist.build-cache.v1", "{m}");
    assert_eq!(m["config"]["mediaType"], "application/vnd.hoist.build-cache.steps.v1+json");

    // Machine 2: a fresh store and a fresh checkout of the context (other mtimes, another
    // path), the max cache: no RUN, the same image.
    let cp = std::process::Command::new("cp")
        .args(["-r", "--preserve=mode"])
        .arg(&ctx)
        .arg(t.join("ctx2"))
        .status()
        .unwrap();
    assert!(cp.success());
    let ctx = t.join("ctx2");
    let (d2, log) =
        build(&t.join("store2"), &t.join("out2"), &ctx, &["--cache-from", &format!("type=registry,ref={max}")]);
    assert!(log.contains("0 RUN executed"), "{log}");
    assert_eq!(d2, d1);
    assert_eq!(
        fs::read_to_string(t.join("out2/index.json")).unwrap(),
        fs::read_to_string(t.join("out1/index.json")).unwrap()
    );
    // It fetched the image's layers and none of the cached layers nothing read: the tools
    // stage's RUN layer, replaced by a cached COPY --from, stays in the registry.
    let has = |store: &str, digest: &str| {
        t.join(store).join("blobs/sha256").join(digest.trim_start_matches("sha256:")).is_file()
    };
    let image_layers = image_layers(&t.join("out1"));
    let cached: Vec<String> =
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    let unread: Vec<&String> = cached.iter().filter(|d| !image_layers.contains(d)).collect();
    assert!(!unread.is_empty(), "the max cache holds the tools stage's RUN layer: {m}");
    assert!(image_layers.iter().all(|d| has("store2", d)));
    assert!(unread.iter().all(|d| !has("store2", d)), "fetched a layer no step read: {unread:?}");

    // mode=min holds the image's steps only: the tools stage runs again, the rest does not.
    let (d3, log) =
        build(&t.join("store3"), &t.join("out3"), &ctx, &["--cache-from", &format!("type=registry,ref={min}")]);
    assert!(log.contains("1 RUN executed"), "{log}");
    assert_eq!(d3, d1);

    // type=local: an OCI layout directory.
    let (d4, log) = build(
        &t.join("store4"),
        &t.join("out4"),
        &ctx,
        &["--cache-from", &format!("type=local,src={}", local.display())],
    );
    assert!(log.contains("0 RUN executed"), "{log}");
    assert_eq!(d4, d1);

    // The registry loses the last RUN's layer: that step is a miss and runs; the build works.
    delete_blob(&reg, "cache", &last_layer(&t.join("out1")));
    let (d5, log) =
        build(&t.join("store5"), &t.join("out5"), &ctx, &["--cache-from", &format!("type=registry,ref={max}")]);
    assert!(log.contains("1 RUN executed") && log.contains("not fetched"), "{log}");
    assert_eq!(d5, d1);

    // A cache that does not exist yet (the first build of a team) is a warning.
    let (d6, log) = build(
        &t.join("store6"),
        &t.join("out6"),
        &ctx,
        &["--cache-from", &format!("type=registry,ref={}/cache:none", reg.host())],
    );
    assert!(log.contains("3 RUN executed") && log.contains("cache:none"), "{log}");
    assert_eq!(d6, d1);
}

/// The lines of a build's step log for `keyword` steps: (step, taken from a cache).
fn steps(log: &str, keyword: &str) -> Vec<(String, bool)> {
    log.lines()
        .filter(|l| l.starts_with(&format!("  {keyword} ")))
        .map(|l| (l.trim().trim_end_matches(" CACHED").to_string(), l.ends_with(" CACHED")))
        .collect()
}

/// COPY from the build context is keyed by what it copies (names, modes and content digests
/// of the selected files and the options, not mtimes), as BuildKit keys it, and taken from a
/// `--cache-from` cache like any step: a fresh store with an unchanged context (a fresh copy,
/// other mtimes) rebuilds no COPY layer and runs no RUN; a changed file invalidates from its
/// COPY on, and only from there.
#[test]
fn registry_cache_takes_context_copies_and_a_changed_file_invalidates_from_its_copy() {
    hoist_testkit::require!("runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::create_dir_all(ctx.join("a/sub")).unwrap();
    fs::write(ctx.join("a/one"), "one\n").unwrap();
    fs::write(ctx.join("a/sub/two"), "two\n").unwrap();
    fs::write(ctx.join("b"), "b\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\nCOPY a/ /a/\nRUN cat /a/one /a/sub/two > /all\nCOPY b /b\nRUN cat /b >> /all\n",
    )
    .unwrap();
    let cache = format!("{}/cache:ctx", reg.host());
    let (d1, log) = build(
        &t.join("store1"),
        &t.join("out1"),
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert!(log.contains("2 RUN executed"), "{log}");
    let copies = steps(&log, "COPY");
    assert_eq!(copies.len(), 3, "{log}");
    assert!(copies.iter().all(|(_, cached)| !cached), "{log}");

    // A fresh store and a fresh copy of the context: every step comes from the cache.
    let copy_of = |to: &str| {
        let cp = std::process::Command::new("cp")
            .args(["-r", "--preserve=mode"])
            .arg(&ctx)
            .arg(t.join(to))
            .status()
            .unwrap();
        assert!(cp.success());
        t.join(to)
    };
    let ctx2 = copy_of("ctx2");
    let from = format!("type=registry,ref={cache}");
    let (d2, log) = build(&t.join("store2"), &t.join("out2"), &ctx2, &["--cache-from", &from]);
    assert!(log.contains("0 RUN executed"), "{log}");
    let copies = steps(&log, "COPY");
    assert_eq!(copies.len(), 3, "{log}");
    assert!(copies.iter().all(|(_, cached)| *cached), "every COPY is taken from the cache: {log}");
    assert_eq!(d2, d1);
    // The keys of the COPY steps need no parent filesystem: with every step a hit, no layer
    // was unpacked (`COPY a/ /a/` has a parent layer; its key once unpacked it).
    let unpacked: Vec<_> = fs::read_dir(t.join("store2/build-cache/layers"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(unpacked.is_empty(), "a warm build unpacked layers: {unpacked:?}");

    // One changed file: its COPY and what follows are rebuilt, the steps before it are not.
    let ctx3 = copy_of("ctx3");
    fs::write(ctx3.join("b"), "changed\n").unwrap();
    let (d3, log) = build(&t.join("store3"), &t.join("out3"), &ctx3, &["--cache-from", &from]);
    assert!(log.contains("1 RUN executed"), "{log}");
    let copies = steps(&log, "COPY");
    assert_eq!(
        copies.iter().map(|(s, cached)| (s.as_str(), *cached)).collect::<Vec<_>>(),
        [("COPY root/ /", true), ("COPY a/ /a/", true), ("COPY b /b", false)],
        "{log}"
    );
    // (a RUN that runs is logged as "[stage] RUN ...", a cached one as "  RUN ... CACHED")
    assert_eq!(steps(&log, "RUN"), [("RUN cat /a/one /a/sub/two > /all".to_string(), true)], "{log}");
    assert_ne!(d3, d1);
    let (l1, l3) = (image_layers(&t.join("out1")), image_layers(&t.join("out3")));
    assert_eq!(l1.len(), 5);
    assert_eq!(l1[..3], l3[..3], "the layers before the changed COPY are the cached ones");
    assert_ne!(l1[3], l3[3]);
}
