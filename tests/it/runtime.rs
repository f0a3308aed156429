//! Straight into the runtimes: containerd (a private daemon per test, judged by `ctr`) and
//! podman (a private vfs store, judged by `podman run`). Every containerd test needs root;
//! without it, or without the tools, it says SKIP and why.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hoist_testkit::containerd::Containerd;
use serde_json::Value;

/// What the test image's command prints.
const HELLO: &str = "hello from hoist";

/// containerd for this test, or a skip (and return) with the reason it cannot run here
/// (not installed, not root); a containerd that does not start fails the test.
macro_rules! containerd_or_skip {
    () => {{
        hoist_testkit::require!("/bin/busybox");
        match Containerd::start_or_skip(hoist_testkit::test_name!()) {
            Some(c) => c,
            None => return,
        }
    }};
}

/// A build directory with busybox (a static binary: no libraries needed) and a build file
/// whose command prints [`HELLO`]; `platforms` as the build file takes them, `extra` appended
/// (another layer, say).
fn build_dir(dir: &Path, platforms: &[&str], extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    let platforms: Vec<String> = platforms.iter().map(|p| format!("{p:?}")).collect();
    let toml = format!(
        "platforms = [{}]\ncompression = \"gzip:1\"\ncmd = [\"/bin/busybox\", \"echo\", \"{HELLO}\"]\n\
         [[layers]]\nfiles = [ {{ source = \"busybox\", target = \"/bin/busybox\", mode = 0o755 }} ]\n{extra}",
        platforms.join(", ")
    );
    std::fs::write(dir.join("hoist.toml"), toml).unwrap();
    dir.join("hoist.toml")
}

/// `hoist ARGS` with its own store and the harness's snapshotter; must succeed; stdout.
#[track_caller]
fn hoist_ok(c: &Containerd, store: &Path, args: &[&str]) -> String {
    let out = hoist_cmd()
        .env("HOIST_STORE", store)
        .env("CONTAINERD_SNAPSHOTTER", c.snapshotter())
        .args(args)
        .output()
        .unwrap();
    assert_success(&format!("hoist {}", args.join(" ")), &out).trim().to_string()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `containerd:SOCKET#NS/NAME`.
fn ep(c: &Containerd, ns: &str, name: &str) -> String {
    format!("containerd:{}#{ns}/{name}", c.socket().display())
}

/// `ctr -n NS images ls` as name -> digest.
fn images(c: &Containerd, ns: &str) -> BTreeMap<String, String> {
    c.ctr_ok(&["-n", ns, "images", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.to_string()))
        })
        .collect()
}

/// The digests `ctr -n NS content ls` lists, each once (asserted).
fn content(c: &Containerd, ns: &str) -> Vec<String> {
    let out = c.ctr_ok(&["-n", ns, "content", "ls", "-q"]);
    let list: Vec<String> = out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    let mut unique = list.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), list.len(), "a blob listed twice: {out}");
    list
}

/// `ctr -n NS images check` says every image is complete, and no ingest or lease is left
/// (but the lease of a killed hoist, named `hoist-<pid>-…`, which expires by itself).
#[track_caller]
fn clean(c: &Containerd, ns: &str) {
    clean_but(c, ns, None)
}

#[track_caller]
fn clean_but(c: &Containerd, ns: &str, killed: Option<u32>) {
    let check = c.ctr_ok(&["-n", ns, "images", "check"]);
    for l in check.lines().skip(1) {
        assert!(l.contains("complete"), "images check: {check}");
        assert!(!l.contains("incomplete") && !l.contains("missing"), "images check: {check}");
    }
    let active = c.ctr_ok(&["-n", ns, "content", "active"]);
    assert_eq!(active.lines().skip(1).count(), 0, "ingests left: {active}");
    let leases = c.ctr_ok(&["-n", ns, "leases", "ls"]);
    let ours = |l: &&str| killed.is_some_and(|pid| l.starts_with(&format!("hoist-{pid}-")));
    assert_eq!(leases.lines().skip(1).filter(|l| !ours(l)).count(), 0, "leases left: {leases}");
}

/// `ctr run --rm IMAGE` prints [`HELLO`].
#[track_caller]
fn runs(c: &Containerd, ns: &str, image: &str, id: &str) {
    let out = c.ctr_ok(&["-n", ns, "run", "--rm", "--snapshotter", c.snapshotter(), image, id]);
    assert_eq!(out.trim(), HELLO, "ctr run {image}");
}

/// The blobs and documents under `root` in the layout `store` (what containerd must hold).
fn digests_under(store: &Path, root: &str) -> Vec<String> {
    let layout = hoist::transport::layout::Layout::open(store).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let desc = hoist::transport::Source::resolve(&layout, Some(&root.into())).await.unwrap();
        let (mut docs, mut blobs) = (Vec::new(), Vec::new());
        hoist_testkit::conformance::walk(&layout, &desc, &mut docs, &mut blobs).await;
        let mut all: Vec<String> = docs.iter().map(|(d, _)| d.to_string()).collect();
        all.extend(blobs.iter().map(|b| b.digest.to_string()));
        all.sort();
        all.dedup();
        all
    })
}

#[test]
fn containerd_receives_built_images_and_runs_them() {
    let c = containerd_or_skip!();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let ns = "hoist-test";

    // A multi-platform index through --output type=containerd (every key).
    let file = build_dir(&t.path().join("multi"), &["linux/amd64", "linux/arm64"], "");
    let out = format!("type=containerd,address={},namespace={ns},name=bb:multi,unpack=true", c.socket().display());
    let multi = hoist_ok(&c, &store, &["build", "-q", "-f", file.to_str().unwrap(), "-o", &out]);
    // One platform, through `hoist copy` from the store.
    let file = build_dir(&t.path().join("single"), &["linux/amd64"], "[env]\nIMAGE = \"single\"\n");
    let single = hoist_ok(&c, &store, &["build", "-q", "-f", file.to_str().unwrap()]);
    let src = format!("oci:{}@{single}", store.display());
    let report = json(&hoist_ok(&c, &store, &["copy", "-q", "--format", "json", &src, &ep(&c, ns, "me/bb:single")]));
    assert!(report["report"]["blobsUploaded"].as_u64().unwrap() > 0, "{report}");

    let listed = images(&c, ns);
    assert_eq!(listed.get("docker.io/library/bb:multi"), Some(&multi), "{listed:?}");
    assert_eq!(listed.get("docker.io/me/bb:single"), Some(&single), "{listed:?}");
    let blobs = content(&c, ns);
    for d in digests_under(&store, &multi).iter().chain(&digests_under(&store, &single)) {
        assert!(blobs.contains(d), "{d} missing from ctr content ls: {blobs:?}");
    }
    clean(&c, ns);
    runs(&c, ns, "docker.io/library/bb:multi", "multi");
    runs(&c, ns, "docker.io/me/bb:single", "single");

    // A second copy transfers nothing (and leaves everything as it was).
    let again = json(&hoist_ok(&c, &store, &["copy", "-q", "--format", "json", &src, &ep(&c, ns, "me/bb:single")]));
    assert_eq!(again["report"]["blobsUploaded"], 0, "{again}");
    let src_multi = format!("oci:{}@{multi}", store.display());
    let again = json(&hoist_ok(&c, &store, &["copy", "-q", "--format", "json", &src_multi, &ep(&c, ns, "bb:multi")]));
    assert_eq!(again["report"]["blobsUploaded"], 0, "{again}");
    assert_eq!(content(&c, ns), blobs);
    clean(&c, ns);

    // --unpack=false: the content only (`images check` says not unpacked), same digest.
    hoist_ok(&c, &store, &["copy", "-q", "--unpack=false", &src, &ep(&c, "plain", "bb:single")]);
    let check = c.ctr_ok(&["-n", "plain", "images", "check"]);
    let line = check.lines().find(|l| l.contains("docker.io/library/bb:single")).unwrap_or_default();
    assert!(line.contains(&single) && line.contains("complete") && line.trim_end().ends_with("false"), "{check}");

    // An unknown snapshotter is named in the error, before any image record points anywhere.
    let bad = hoist_cmd()
        .env("HOIST_STORE", &store)
        .env("CONTAINERD_SNAPSHOTTER", "no-such-snapshotter")
        .args(["copy", "-q", &src, &ep(&c, "other", "bb:bad")])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("snapshotter \"no-such-snapshotter\" is not loaded"), "{err}");
    assert!(images(&c, "other").is_empty());
}

#[test]
fn containerd_pulls_from_the_registry_and_pushes_back() {
    hoist_testkit::require!("skopeo");
    let c = containerd_or_skip!();
    let reg = TestRegistry::plain();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let file = build_dir(&t.path().join("b"), &["linux/amd64", "linux/arm64"], "");
    let root = hoist_ok(&c, &store, &["build", "-q", "-f", file.to_str().unwrap()]);
    let host = reg.host();
    hoist_ok(
        &c,
        &store,
        &["copy", "-q", &format!("oci:{}@{root}", store.display()), &format!("docker://{host}/bb:v1")],
    );

    // Registry -> containerd: the name keeps its registry, the digest is the registry's.
    let ns = "k8s.io";
    hoist_ok(&c, &store, &["copy", "-q", &format!("docker://{host}/bb:v1"), &ep(&c, ns, &format!("{host}/bb:v1"))]);
    let listed = images(&c, ns);
    assert_eq!(listed.get(&format!("{host}/bb:v1")), Some(&root), "{listed:?}");
    clean(&c, ns);
    runs(&c, ns, &format!("{host}/bb:v1"), "pulled");

    // containerd -> registry: same digest, by skopeo.
    hoist_ok(&c, &store, &["copy", "-q", &ep(&c, ns, &format!("{host}/bb:v1")), &format!("docker://{host}/back:v1")]);
    let raw = skopeo_raw(&reg, &format!("{host}/back:v1"));
    assert_eq!(sha256(&raw), root);

    // A namespace that does not exist is said so.
    let out = hoist_cmd()
        .env("HOIST_STORE", &store)
        .args(["copy", "-q", &ep(&c, "missing", "bb:v1"), &format!("oci:{}/x", t.path().display())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespace \"missing\""), "{err}");
}

#[test]
fn containerd_resumes_a_killed_copy() {
    let c = containerd_or_skip!();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    // A large layer of random bytes, stored uncompressed: the copy takes long enough to kill.
    let dir = t.path().join("b");
    std::fs::create_dir_all(&dir).unwrap();
    let mut big = vec![0u8; 128 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut big);
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    drop(big);
    let file =
        build_dir(&dir, &["linux/amd64"], "[[layers]]\nfiles = [ { source = \"big.bin\", target = \"/big.bin\" } ]\n");
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("gzip:1", "none")).unwrap();
    let root = hoist_ok(&c, &store, &["build", "-q", "-f", file.to_str().unwrap()]);
    let src = format!("oci:{}@{root}", store.display());
    let ns = "resume";
    let dst = ep(&c, ns, "bb:big");

    // Kill hoist -9 once containerd's ingest holds part of the big layer.
    let ingest = c.root().join("io.containerd.content.v1.content/ingest");
    let mut child = hoist_cmd()
        .env("HOIST_STORE", &store)
        .env("CONTAINERD_SNAPSHOTTER", c.snapshotter())
        .args(["copy", "-q", "-j", "1", &src, &dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = |min: u64| {
        walkdir::WalkDir::new(&ingest)
            .into_iter()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name() == "data" && e.metadata().is_ok_and(|m| m.len() >= min))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !partial(16 << 20) && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    // A lost race is a failure, not a skip: 112 MiB were still to come when the ingest held 16.
    assert!(!status.success(), "the copy finished before it could be killed (the kill race was lost)");
    let active = c.ctr_ok(&["-n", ns, "content", "active"]);
    assert!(active.contains("hoist-sha256:"), "no partial ingest after the kill: {active}");
    assert!(images(&c, ns).is_empty(), "an image record before its content was complete");
    // What containerd's content store holds of the big layer (its ingest's data file).
    let kept = walkdir::WalkDir::new(&ingest)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "data")
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    assert!(kept >= 16 << 20, "the ingest holds {kept} bytes after the kill");

    // What the image has that containerd has not committed yet (the big layer, perhaps the
    // busybox one and the documents), in bytes.
    let committed = content(&c, ns);
    let missing: u64 = digests_under(&store, &root)
        .iter()
        .filter(|d| !committed.contains(d))
        .map(|d| std::fs::metadata(store.join("blobs/sha256").join(&d[7..])).unwrap().len())
        .sum();
    // The second run continues the ingest and leaves containerd clean. It talks to containerd
    // through a counting socket relay: it sends what is missing less what the ingest kept,
    // plus gRPC framing and requests (1 MiB); a restart would send the whole big layer again.
    let relay = UnixRelay::start(c.socket(), &t.path().join("relay.sock"));
    let dst_relayed = format!("containerd:{}#{ns}/bb:big", relay.path.display());
    let out = hoist_cmd()
        .env("HOIST_STORE", &store)
        .env("CONTAINERD_SNAPSHOTTER", c.snapshotter())
        .args(["copy", &src, &dst_relayed])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_success("hoist copy (again)", &out);
    assert!(err.contains("resuming sha256:"), "the second copy did not resume: {err}");
    let sent = relay.sent();
    let bound = missing - kept + (1 << 20);
    eprintln!("containerd resume: {kept} bytes kept by the ingest, {sent} sent by the re-run");
    assert!(sent <= bound, "the re-run sent containerd {sent} bytes (> {bound}): it did not continue the ingest");
    assert_eq!(images(&c, ns).get("docker.io/library/bb:big"), Some(&root));
    content(&c, ns);
    clean_but(&c, ns, Some(child.id()));
    runs(&c, ns, "docker.io/library/bb:big", "big");
}

/// The transport conformance suite (the library's `Containerd` needs the `containerd` feature).
#[cfg(feature = "containerd")]
mod conformance {
    use async_trait::async_trait;
    use hoist::transport::containerd::{Containerd as Ctrd, ContainerdTarget};
    use hoist::transport::{Destination, Source};
    use hoist::Descriptor;
    use hoist_testkit::containerd::Containerd;

    /// The transport conformance suite, one containerd per fresh destination (one content store:
    /// containerd shares blobs across namespaces), unpack off (the sample layout's layers are not
    /// all tars).
    struct CtrHarness {
        c: Containerd,
        ns: String,
    }

    impl CtrHarness {
        fn target(&self) -> ContainerdTarget {
            let mut t = ContainerdTarget::new(
                Some(self.c.socket().to_path_buf()),
                Some(self.ns.clone()),
                "sample".parse().unwrap(),
            );
            t.unpack = false;
            t
        }
    }

    #[async_trait]
    impl hoist_testkit::conformance::Harness for CtrHarness {
        fn name(&self) -> &str {
            "containerd"
        }
        async fn destination(&self) -> Box<dyn Destination> {
            Box::new(Ctrd::connect(self.target()).unwrap())
        }
        async fn reopen(&self) -> Box<dyn Source> {
            Box::new(Ctrd::connect(self.target()).unwrap())
        }
        async fn is_untouched(&self, corrupt: &Descriptor) -> bool {
            // Neither committed nor an ingest of it kept. Other layers' lanes, cancelled when the
            // copy failed, may keep their (correct) ingests to resume from: that is by design.
            let blobs = self.c.ctr_ok(&["-n", &self.ns, "content", "ls", "-q"]);
            let active = self.c.ctr_ok(&["-n", &self.ns, "content", "active"]);
            let digest = corrupt.digest.to_string();
            !blobs.contains(&digest) && !active.contains(&digest)
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn containerd_conformance() {
        if let Err(why) = Containerd::start() {
            hoist_testkit::skip!("{why}");
        }
        hoist_testkit::conformance::run(|| CtrHarness {
            c: Containerd::start().expect("containerd started a moment ago"),
            ns: "conformance".into(),
        })
        .await;
    }

    /// A layout whose one blob breaks off after `after` bytes (a dropped connection).
    struct Cut {
        inner: hoist::transport::layout::Layout,
        target: hoist::Digest,
        after: usize,
    }

    #[async_trait]
    impl Source for Cut {
        fn location(&self) -> String {
            Source::location(&self.inner)
        }
        async fn resolve(&self, r: Option<&hoist::TagOrDigest>) -> hoist::Result<Descriptor> {
            self.inner.resolve(r).await
        }
        async fn fetch_manifest_bytes(&self, d: &Descriptor) -> hoist::Result<bytes::Bytes> {
            self.inner.fetch_manifest_bytes(d).await
        }
        async fn open_blob(&self, d: &Descriptor, offset: u64) -> hoist::Result<hoist::transport::BlobStream> {
            use tokio::io::AsyncReadExt;
            let s = self.inner.open_blob(d, offset).await?;
            if d.digest != self.target {
                return Ok(s);
            }
            let mut head = Vec::new();
            s.take(self.after as u64).read_to_end(&mut head).await.unwrap();
            let parts = vec![Ok(bytes::Bytes::from(head)), Err(std::io::Error::other("connection cut"))];
            Ok(Box::pin(tokio_util::io::StreamReader::new(futures::stream::iter(parts))))
        }
    }

    /// Progress that keeps the notes.
    #[derive(Default)]
    struct Notes(std::sync::Mutex<Vec<String>>);
    impl hoist::transport::Progress for Notes {
        fn message(&self, msg: &str) {
            self.0.lock().unwrap().push(msg.to_string());
        }
    }

    /// A source that breaks off mid-blob leaves containerd's ingest in place; the next copy
    /// continues it from its offset (containerd checks the whole digest at commit).
    #[tokio::test(flavor = "multi_thread")]
    async fn containerd_continues_a_broken_transfer() {
        let c = match Containerd::start() {
            Ok(c) => c,
            Err(why) => hoist_testkit::skip!("{why}"),
        };
        let t = tempfile::tempdir().unwrap();
        let layout = hoist::transport::layout::Layout::create(t.path().join("src")).unwrap();
        let mut big = vec![0u8; 8 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut big);
        let blob = Descriptor::of_bytes(hoist::model::media::OCI_LAYER_TAR, &big);
        layout.write_blob_bytes(&blob, &big).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cdesc = Descriptor::of_bytes(hoist::model::media::OCI_CONFIG, config);
        layout.write_blob_bytes(&cdesc, config).unwrap();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": hoist::model::media::OCI_MANIFEST, "config": cdesc, "layers": [blob],
        }))
        .unwrap();
        let mdesc = Descriptor::of_bytes(hoist::model::media::OCI_MANIFEST, &m);
        layout.write_blob_bytes(&mdesc, &m).unwrap();
        let mut target =
            ContainerdTarget::new(Some(c.socket().to_path_buf()), Some("cut".into()), "cut:v1".parse().unwrap());
        target.unpack = false;
        let opts = hoist::copy::CopyOptions::default();
        let tags = vec!["v1".to_string()];

        let cut = Cut {
            inner: hoist::transport::layout::Layout::open(t.path().join("src")).unwrap(),
            target: blob.digest.clone(),
            after: 5 << 20,
        };
        let dst = Ctrd::connect(target.clone()).unwrap();
        let err = hoist::copy::graph(&cut, &dst, &mdesc, &tags, &opts, &hoist::transport::NoProgress).await;
        assert!(err.is_err(), "the cut transfer succeeded");
        drop(dst);
        let active = c.ctr_ok(&["-n", "cut", "content", "active"]);
        assert!(active.contains(&format!("hoist-{}", blob.digest)), "no ingest kept: {active}");

        let notes = Notes::default();
        let dst = Ctrd::connect(target).unwrap();
        hoist::copy::graph(&layout, &dst, &mdesc, &tags, &opts, &notes).await.unwrap();
        dst.finish().await.unwrap();
        let notes = notes.0.lock().unwrap().join("\n");
        assert!(notes.contains(&format!("resuming {} at byte", blob.digest)), "not resumed: {notes}");
        let images = c.ctr_ok(&["-n", "cut", "images", "ls"]);
        assert!(images.contains("docker.io/library/cut:v1") && images.contains(&mdesc.digest.to_string()), "{images}");
        let active = c.ctr_ok(&["-n", "cut", "content", "active"]);
        assert_eq!(active.lines().skip(1).count(), 0, "{active}");
        assert!(c.ctr_ok(&["-n", "cut", "content", "ls", "-q"]).contains(&blob.digest.to_string()));
    }
}

#[test]
fn containerd_without_a_socket_says_so() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("none.sock");
    let out = hoist(["copy", "-q", &format!("containerd:{}#default/a:b", sock.display()), "oci:/nonexistent/x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no containerd socket at {}", sock.display())), "{err}");
}

/// `podman --root R --runroot RR --storage-driver vfs ARGS` with what this sandbox allows:
/// runc, no cgroups, explicit ulimits (no CAP_SYS_RESOURCE to raise them).
fn podman(store: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("podman");
    c.arg("--root").arg(store.join("root")).arg("--runroot").arg(store.join("run"));
    c.args(["--storage-driver", "vfs", "--runtime", "runc"]);
    c.env("CONTAINERS_STORAGE_CONF", store.join("storage.conf"));
    c.args(args).output().unwrap()
}

#[test]
fn podman_runs_what_type_podman_wrote() {
    hoist_testkit::require!("podman", "runc", "/bin/busybox");
    let t = tempfile::tempdir().unwrap();
    let pstore = t.path().join("podman");
    std::fs::create_dir_all(&pstore).unwrap();
    std::fs::write(
        pstore.join("storage.conf"),
        format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n", pstore.display()),
    )
    .unwrap();
    // Installed but not working here is a failure, not a skip.
    assert_success("podman images (probe)", &podman(&pstore, &["images"]));
    let file = build_dir(&t.path().join("b"), &["linux/amd64"], "");
    let out = hoist_cmd()
        .env("HOIST_STORE", t.path().join("store"))
        .env("CONTAINERS_STORAGE_CONF", pstore.join("storage.conf"))
        .args(["build", "-q", "-f", file.to_str().unwrap(), "-o", "type=podman,name=bb:v1"])
        .output()
        .unwrap();
    let root = assert_success("hoist build -o type=podman", &out).trim().to_string();
    let listed = podman(&pstore, &["images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&format!("localhost/bb:v1 {root}")), "{listed}");
    let run = podman(
        &pstore,
        &["run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "localhost/bb:v1"],
    );
    assert!(run.status.success(), "podman run: {}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), HELLO);

    // A multi-platform index: podman takes this machine's image from it.
    let file = build_dir(&t.path().join("m"), &["linux/amd64", "linux/arm64"], "[env]\nIMAGE = \"multi\"\n");
    let out = hoist_cmd()
        .env("HOIST_STORE", t.path().join("store"))
        .env("CONTAINERS_STORAGE_CONF", pstore.join("storage.conf"))
        .args(["build", "-q", "-f", file.to_str().unwrap(), "-o", "type=podman,name=example.com/bb:multi"])
        .output()
        .unwrap();
    assert_success("hoist build -o type=podman (index)", &out);
    let run = podman(
        &pstore,
        &["run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "example.com/bb:multi"],
    );
    assert!(run.status.success(), "podman run: {}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), HELLO);
}

/// A byte-counting relay on a unix socket in front of containerd's: what a client sends
/// containerd, counted outside hoist. One thread pair per connection; stops with the test.
struct UnixRelay {
    path: PathBuf,
    up: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl UnixRelay {
    fn start(upstream: &Path, path: &Path) -> UnixRelay {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = UnixListener::bind(path).unwrap();
        let up = Arc::new(AtomicU64::new(0));
        let (counter, upstream) = (up.clone(), upstream.to_path_buf());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = UnixStream::connect(&upstream) else { return };
                let pipe = |mut from: UnixStream, mut to: UnixStream, count: Option<Arc<AtomicU64>>| {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = match std::io::Read::read(&mut from, &mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if let Some(c) = &count {
                                c.fetch_add(n as u64, Ordering::SeqCst);
                            }
                            if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), Some(counter.clone()));
                pipe(server, client, None);
            }
        });
        UnixRelay { path: path.to_path_buf(), up }
    }

    /// Bytes clients sent so far.
    fn sent(&self) -> u64 {
        self.up.load(std::sync::atomic::Ordering::SeqCst)
    }
}
