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

/// The RUN steps a build executed, by their log lines (`[stage] RUN ...`; a cached one is
/// logged as `  RUN ... CACHED`).
fn ran(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.starts_with('[') && l.contains("] RUN ")).map(str::to_string).collect()
}

/// The config of the image `reference` (any hoist reference), as JSON.
fn config_of(reference: &str) -> Value {
    serde_json::from_str(&ok("inspect --config", hoist(["inspect", "--config", reference]))).unwrap()
}

/// `--cache-to type=inline` puts the image's steps in its config; a fresh store with
/// `--cache-from IMAGE` runs no RUN, and with `--cache-to type=inline` again gets the same
/// digest (without it, the same image minus the table). An image built FROM it does not
/// inherit the table.
#[test]
fn inline_cache_in_the_image_config_runs_nothing_on_a_fresh_store() {
    hoist_testkit::require!("runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::write(ctx.join("a"), "a\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS base\nCOPY root/ /\nRUN echo one > /one\nFROM base\nCOPY a /a\nRUN cat /one /a > /both\n",
    )
    .unwrap();
    let image = format!("{}/app:inline", reg.host());
    let push = format!("type=registry,name={image}");

    let (d1, log) = build(&t.join("store1"), &t.join("out1"), &ctx, &["--cache-to", "type=inline", "-o", &push]);
    assert!(log.contains("2 RUN executed"), "{log}");
    let config = config_of(&format!("docker://{image}"));
    let table =
        config["hoist.build-cache.v1"]["steps"].as_object().unwrap_or_else(|| panic!("no inline cache: {config}"));
    let layers = image_layers(&t.join("out1"));
    let named: Vec<&str> = table.values().filter_map(|e| e["layer"]["digest"].as_str()).collect();
    assert!(layers.iter().all(|l| named.contains(&l.as_str())), "every layer's step is in the table: {config}");

    // Machine 2: a fresh store and a fresh copy of the context.
    let ctx2 = t.join("ctx2");
    let cp = std::process::Command::new("cp").args(["-r", "--preserve=mode"]).arg(&ctx).arg(&ctx2).status().unwrap();
    assert!(cp.success());
    let (d2, log) =
        build(&t.join("store2"), &t.join("out2"), &ctx2, &["--cache-from", &image, "--cache-to", "type=inline"]);
    assert!(log.contains("0 RUN executed"), "{log}");
    assert!(ran(&log).is_empty(), "{log}");
    assert_eq!(
        steps(&log, "RUN"),
        [("RUN echo one > /one".to_string(), true), ("RUN cat /one /a > /both".to_string(), true)]
    );
    assert_eq!(d2, d1, "the same image, its inline cache included");

    // Without --cache-to type=inline: nothing runs either; the config has no table.
    let (d3, log) =
        build(&t.join("store3"), &t.join("out3"), &ctx2, &["--cache-from", &format!("type=registry,ref={image}")]);
    assert!(log.contains("0 RUN executed"), "{log}");
    assert_ne!(d3, d1);
    assert_eq!(image_layers(&t.join("out3")), layers);
    assert!(config_of(&format!("oci:{}", t.join("out3").display())).get("hoist.build-cache.v1").is_none());

    // An image built FROM the inline-cached image does not carry its table.
    let ctx4 = t.join("ctx4");
    fs::create_dir_all(&ctx4).unwrap();
    fs::write(ctx4.join("Dockerfile"), format!("FROM {image}\nLABEL derived=yes\n")).unwrap();
    build(&t.join("store4"), &t.join("out4"), &ctx4, &[]);
    let derived = config_of(&format!("oci:{}", t.join("out4").display()));
    assert_eq!(derived["config"]["Labels"]["derived"], "yes", "{derived}");
    assert!(derived.get("hoist.build-cache.v1").is_none(), "{derived}");

    // mode=max does not fit in an image; a ref does not either.
    for bad in ["type=inline,mode=max", "type=inline,ref=x"] {
        let r = hoist_in(&t.join("store5"), &["build", "--cache-to", bad, ctx.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(2), "{bad}: {}", String::from_utf8_lossy(&r.stderr));
    }
}

/// `--no-cache-filter STAGE` runs exactly that stage's steps; the other stages' steps come
/// from the cache (the local one, and a `--cache-from` one on a fresh store).
#[test]
fn no_cache_filter_runs_exactly_that_stage() {
    hoist_testkit::require!("runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    busybox_root(&ctx.join("root"));
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS tools\nCOPY root/ /\nRUN echo tool > /tool\n\
         FROM tools AS data\nRUN echo data > /data\nRUN echo more >> /data\n\
         FROM tools\nCOPY --from=data /data /data\nRUN cat /data > /final\n",
    )
    .unwrap();
    let cache = format!("{}/cache:filter", reg.host());
    let (d1, log) = build(
        &t.join("store1"),
        &t.join("out1"),
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert!(log.contains("4 RUN executed"), "{log}");

    // The same store: only the data stage's two RUNs run; the layers they make are the same,
    // so the COPY --from and the last RUN stay cached.
    let (d2, log) = build(&t.join("store1"), &t.join("out2"), &ctx, &["--no-cache-filter", "data"]);
    assert_eq!(ran(&log), ["[data] RUN echo data > /data", "[data] RUN echo more >> /data"], "{log}");
    assert!(log.contains("2 RUN executed"), "{log}");
    assert!(log.contains("[data] FROM tools (no cache: --no-cache-filter)"), "{log}");
    assert_eq!(d2, d1);

    // A fresh store reading the registry cache, the first stage by index: only its RUN runs.
    let (d3, log) = build(
        &t.join("store3"),
        &t.join("out3"),
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}"), "--no-cache-filter", "0"],
    );
    assert_eq!(ran(&log), ["[tools] RUN echo tool > /tool"], "{log}");
    assert_eq!(d3, d1);

    // Two filters.
    let (_, log) =
        build(&t.join("store1"), &t.join("out4"), &ctx, &["--no-cache-filter", "tools", "--no-cache-filter", "data"]);
    assert_eq!(ran(&log).len(), 3, "{log}");

    // A stage the Dockerfile does not have is bad input.
    let r = hoist_in(&t.join("store1"), &["build", "--no-cache-filter", "nosuch", ctx.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("nosuch"));
}

/// Base images are resolved at the registry on every build: a base tag moved in the registry
/// is picked up with `--pull`, and without it too (what hoist always does; the store keeps no
/// base tags), and the steps after its FROM run again.
#[test]
fn a_retagged_base_is_picked_up_with_and_without_pull() {
    hoist_testkit::require!("runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base_ctx = t.join("base");
    busybox_root(&base_ctx.join("root"));
    fs::write(base_ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\nCOPY v /v\n").unwrap();
    let base = format!("{}/base:latest", reg.host());
    let push_base = |v: &str, n: usize| -> String {
        fs::write(base_ctx.join("v"), v).unwrap();
        let (d, _) = build(
            &t.join("base-store"),
            &t.join(format!("base-out{n}")),
            &base_ctx,
            &["-o", &format!("type=registry,name={base}")],
        );
        d
    };
    let app = t.join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("Dockerfile"), format!("FROM {base}\nRUN cat /v > /seen\n")).unwrap();
    let store = t.join("store");
    let seen = |out: &Path| -> String {
        let layers = image_layers(out);
        let blob =
            fs::read(out.join("blobs/sha256").join(layers.last().unwrap().trim_start_matches("sha256:"))).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
        let text = String::from_utf8_lossy(&tar).into_owned();
        ["one", "two", "three"].iter().find(|v| text.contains(&format!("{v}\n"))).unwrap().to_string()
    };

    let b1 = push_base("one\n", 1);
    let (a1, log) = build(&store, &t.join("out1"), &app, &[]);
    assert!(log.contains(&format!("image {base}: {b1}")) && log.contains("1 RUN executed"), "{log}");
    assert_eq!(seen(&t.join("out1")), "one");

    // The tag moves: --pull takes the new base, and the RUN after it runs again.
    let b2 = push_base("two\n", 2);
    assert_ne!(b2, b1);
    let (a2, log) = build(&store, &t.join("out2"), &app, &["--pull"]);
    assert!(log.contains(&format!("image {base}: {b2}")) && log.contains("1 RUN executed"), "{log}");
    assert_ne!(a2, a1);
    assert_eq!(seen(&t.join("out2")), "two");
    // Unchanged: --pull still takes the cache.
    let (a2b, log) = build(&store, &t.join("out2b"), &app, &["--pull"]);
    assert!(log.contains("0 RUN executed"), "{log}");
    assert_eq!(a2b, a2);

    // Without --pull the same: the registry is asked, not the store.
    let b3 = push_base("three\n", 3);
    let (_, log) = build(&store, &t.join("out3"), &app, &[]);
    assert!(log.contains(&format!("image {base}: {b3}")) && log.contains("1 RUN executed"), "{log}");
    assert_eq!(seen(&t.join("out3")), "three");
}

/// A second machine's build with `--cache-from` that pushes its image to another repository
/// of the registry holding the cache and the base image mounts every layer there (`POST
/// .../blobs/uploads/?mount=DIGEST&from=REPO` answered 201: the base's layer from the base's
/// repository, the cached steps' layers from the cache's) and uploads none; the image is the
/// first machine's. Read from the registry's own request log.
#[test]
fn a_pushed_build_mounts_the_layers_of_its_cache_and_base() {
    hoist_testkit::require!("runc", BUSYBOX);
    hoist_testkit::require_root!("RUN steps mount and chroot");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let host = reg.host();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base_ctx = t.join("base");
    busybox_root(&base_ctx.join("root"));
    fs::write(base_ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\n").unwrap();
    let push = |name: &str| format!("type=registry,name={host}/{name}");
    build(&t.join("store0"), &t.join("out0"), &base_ctx, &["-o", &push("base:1")]);

    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("f"), "file\n").unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM {host}/base:1\nRUN echo app > /app\nCOPY f /f\n")).unwrap();
    let cache = format!("{host}/cache:app");
    let (d1, log) = build(
        &t.join("store1"),
        &t.join("out1"),
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache}"), "-o", &push("app:1")],
    );
    assert!(log.contains("1 RUN executed"), "{log}");
    let layers = image_layers(&t.join("out1"));
    assert_eq!(layers.len(), 3, "base, RUN, COPY: {layers:?}");

    // Machine 2: a fresh store, the cache, a push to another repository.
    let before = reg.requests().len();
    let (d2, log) = build(
        &t.join("store2"),
        &t.join("out2"),
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}"), "-o", &push("app2:1")],
    );
    assert!(log.contains("0 RUN executed"), "{log}");
    assert_eq!(d2, d1, "the same image");
    assert_eq!(registry_manifest_digest(&reg, "app2:1"), d1);
    let reqs: Vec<LoggedRequest> = reg.requests().into_iter().skip(before).collect();
    for (l, from) in layers.iter().zip(["base", "cache", "cache"]) {
        let mounted = reqs.iter().any(|r| {
            r.method == "POST"
                && r.path.starts_with("/v2/app2/blobs/uploads/")
                && r.path.contains(&format!("mount={l}"))
                && r.path.contains(&format!("from={from}"))
                && r.status == 201
        });
        assert!(mounted, "layer {l} is mounted from {from}: {reqs:#?}");
        let sent = reqs.iter().any(|r| {
            (r.method == "PUT" || r.method == "PATCH") && r.path.contains("/blobs/") && r.path.contains(&l[7..])
        });
        assert!(!sent, "layer {l} was uploaded: {reqs:#?}");
    }
    assert!(!reqs.iter().any(|r| r.method == "PATCH"), "{reqs:#?}");

    // To another registry nothing can be mounted: the layers are uploaded, the image is the same.
    let other = TestRegistry::start(RegistryOpts::plain());
    let (d3, log) = build(
        &t.join("store3"),
        &t.join("out3"),
        &ctx,
        &[
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "-o",
            &format!("type=registry,name={}/app:1", other.host()),
        ],
    );
    assert!(log.contains("0 RUN executed"), "{log}");
    assert_eq!(d3, d1);
    let reqs = other.requests();
    assert!(!reqs.iter().any(|r| r.path.contains("mount=")), "{reqs:#?}");
    for l in &layers {
        assert!(
            reqs.iter().any(|r| r.method == "PUT" && r.path.contains(&l[7..]) && r.status == 201),
            "{l}: {reqs:#?}"
        );
    }
}

/// A build's cache layers reach the store through the graph copy, as a base image's do:
/// the layers a `--cache-from` cache holds for the image are fetched (in the background from
/// the start, then awaited) with no more than `--jobs` transfers at once, each reported once
/// to the build's progress; a second build into that store fetches and reports nothing.
/// COPY steps only, from an OCI layout cache: no runtime, no registry.
#[tokio::test]
async fn cache_layers_come_through_the_graph_copy_with_progress_and_jobs() {
    use hoist::dockerfile::{build_dockerfile, BuildLog, CacheMode, DockerfileBuild};
    use hoist::model::descriptor::Descriptor;
    use hoist::model::digest::Digest;
    use hoist::transport::layout::Layout;
    use hoist::transport::{BlobOutcome, Progress};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    #[derive(Default)]
    struct Rec {
        active: AtomicUsize,
        max_active: AtomicUsize,
        done: Mutex<Vec<(Digest, BlobOutcome)>>,
    }
    impl Progress for Rec {
        fn start(&self, _d: &Descriptor) {
            let n = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_active.fetch_max(n, Ordering::SeqCst);
        }
        fn done(&self, d: &Descriptor, o: BlobOutcome) {
            self.active.fetch_sub(1, Ordering::SeqCst);
            self.done.lock().unwrap().push((d.digest.clone(), o));
        }
    }
    impl BuildLog for Rec {
        fn line(&self, _s: &str) {}
        fn transfers(&self) -> &dyn Progress {
            self
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let mut dockerfile = String::from("FROM scratch\n");
    for i in 0..5 {
        fs::write(ctx.join(format!("f{i}")), format!("layer {i}\n").repeat(20_000 * (i + 1))).unwrap();
        dockerfile.push_str(&format!("COPY f{i} /f{i}\n"));
    }
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let opts = DockerfileBuild { dockerfile: ctx.join("Dockerfile"), context: ctx.clone(), ..Default::default() };
    let quiet = |_: &str| {};

    // Machine 1 builds and exports its cache into its own store.
    let store1 = Layout::create(t.join("store1")).unwrap();
    let first = DockerfileBuild { cache_export: vec![CacheMode::Max], ..opts.clone() };
    let out1 = build_dockerfile(&store1, &first, &CacheIn(None), &quiet).await.unwrap();
    let cache = out1.caches[0].clone();
    let image: Vec<Digest> = {
        let m: Value = serde_json::from_slice(&fs::read(blob(&t.join("store1"), &out1.root.digest)).unwrap()).unwrap();
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().parse().unwrap()).collect()
    };
    assert_eq!(image.len(), 5);

    // Machine 2: a fresh store, the cache, --jobs 2.
    let store2 = Layout::create(t.join("store2")).unwrap();
    let second = DockerfileBuild { cache_from: vec!["cache".into()], jobs: Some(2), ..opts.clone() };
    let resolver = CacheIn(Some((t.join("store1"), cache)));
    let rec = Rec::default();
    let out2 = build_dockerfile(&store2, &second, &resolver, &rec).await.unwrap();
    assert_eq!(out2.root.digest, out1.root.digest);
    assert_eq!(out2.cached, 5, "every step from the cache");
    let mut done = rec.done.lock().unwrap().clone();
    done.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(Digest, BlobOutcome)> = image.iter().map(|d| (d.clone(), BlobOutcome::Uploaded)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(done, want, "each cache layer fetched once, and reported once");
    let max = rec.max_active.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "at most jobs=2 layers in flight, saw {max}");
    assert!(store2.fsck().await.unwrap().is_empty());

    // The same build again into that store: every layer is there; nothing moves or is reported.
    let rec = Rec::default();
    let out3 = build_dockerfile(&store2, &second, &resolver, &rec).await.unwrap();
    assert_eq!(out3.root.digest, out1.root.digest);
    assert!(rec.done.lock().unwrap().is_empty(), "{:?}", rec.done.lock().unwrap());
}

/// The path of the blob `d` in the OCI layout `dir`.
fn blob(dir: &Path, d: &hoist::model::digest::Digest) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(d.to_string().trim_start_matches("sha256:"))
}

/// A layer the build prefetched from a `--cache-from` cache but did not use (its step's key
/// changed) is held by nothing in the store: no root, no step-cache entry, just a blob that
/// nothing reachable names, which the store's gc (`store prune`) removes while the image's
/// layers stay. The build deletes nothing itself: another build in the same store (a shared
/// session lock, as gc's is exclusive) may be reading that blob. The prefetch is cut off when
/// the build ends, so the test puts the layer in the store as the prefetch does (the graph
/// copy from the cache) rather than race it.
#[tokio::test]
async fn a_prefetched_layer_the_build_did_not_use_is_left_to_gc() {
    use hoist::dockerfile::{build_dockerfile, CacheMode, DockerfileBuild};
    use hoist::model::descriptor::Descriptor;
    use hoist::transport::layout::Layout;
    use hoist::transport::NoProgress;
    let layers_of = |store: &Path, root: &Descriptor| -> Vec<Descriptor> {
        let m: Value = serde_json::from_slice(&fs::read(blob(store, &root.digest)).unwrap()).unwrap();
        m["layers"].as_array().unwrap().iter().map(|l| serde_json::from_value(l.clone()).unwrap()).collect()
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for i in 0..3 {
        fs::write(ctx.join(format!("f{i}")), format!("file {i}\n").repeat(10_000)).unwrap();
    }
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f0 /f0\nCOPY f1 /f1\nCOPY f2 /f2\n").unwrap();
    let opts = DockerfileBuild { dockerfile: ctx.join("Dockerfile"), context: ctx.clone(), ..Default::default() };
    let quiet = |_: &str| {};
    let (s1, s2) = (t.join("store1"), t.join("store2"));
    let store1 = Layout::create(&s1).unwrap();
    let first = DockerfileBuild { cache_export: vec![CacheMode::Max], ..opts.clone() };
    let out1 = build_dockerfile(&store1, &first, &CacheIn(None), &quiet).await.unwrap();
    let old = layers_of(&s1, &out1.root);
    let unused = old[2].clone();

    // f2 changes: its COPY is a miss, the cache's f2 layer is not used.
    fs::write(ctx.join("f2"), "changed\n").unwrap();
    let store2 = Layout::create(&s2).unwrap();
    hoist::copy::children(&store1, &store2, std::slice::from_ref(&unused), &Default::default(), &NoProgress)
        .await
        .unwrap();
    let second = DockerfileBuild { cache_from: vec!["cache".into()], ..opts.clone() };
    let out2 =
        build_dockerfile(&store2, &second, &CacheIn(Some((s1.clone(), out1.caches[0].clone()))), &quiet).await.unwrap();
    assert_eq!(out2.cached, 2, "f0 and f1 from the cache, f2 built");
    let new = layers_of(&s2, &out2.root);
    let digests = |v: &[Descriptor]| v.iter().map(|d| d.digest.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&new[..2]), digests(&old[..2]));
    assert_ne!(new[2].digest, unused.digest);
    assert!(blob(&s2, &unused.digest).is_file(), "the prefetched layer is in the store until gc");
    drop(store2);

    let report = Layout::open_for_gc(&s2).unwrap().gc(false).await.unwrap();
    assert!(report.removed.contains(&unused.digest), "{:?}", report.removed);
    assert!(!blob(&s2, &unused.digest).exists());
    for l in &new {
        assert!(blob(&s2, &l.digest).is_file(), "image layer {} kept", l.digest);
    }
    assert!(Layout::open(&s2).unwrap().fsck().await.unwrap().is_empty());
}

/// The resolver of the library-level cache tests: `cache` names the cache manifest `1` in the
/// layout `0`; nothing else resolves.
struct CacheIn(Option<(std::path::PathBuf, hoist::model::descriptor::Descriptor)>);

#[async_trait::async_trait]
impl hoist::dockerfile::ImageResolver for CacheIn {
    async fn resolve(
        &self,
        r: &str,
    ) -> hoist::Result<(Box<dyn hoist::transport::Source>, hoist::model::descriptor::Descriptor)> {
        let (Some((dir, root)), "cache") = (&self.0, r) else { panic!("the build resolves only its cache: {r}") };
        Ok((Box::new(hoist::transport::layout::Layout::open(dir)?), root.clone()))
    }
}
