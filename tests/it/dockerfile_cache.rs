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

/// The digest of the last layer of the only image in the OCI layout `dir`.
fn last_layer(dir: &Path) -> String {
    let blob = |d: &str| -> Value {
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap())
            .unwrap()
    };
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = blob(index["manifests"][0]["digest"].as_str().unwrap());
    m["layers"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap().to_string()
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
