//! One conformance suite every transport runs: what goes in comes out byte for byte,
//! corrupt blobs are refused and leave nothing visible, and a second copy moves nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hoist::copy::{self, CopyOptions};
use hoist::transport::layout::Layout;
use hoist::transport::{BlobStream, Destination, NoProgress, Source};
use hoist::{Descriptor, Digest, Error};
use tokio::io::AsyncReadExt;

fn sample() -> Layout {
    Layout::open(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout")).unwrap()
}

/// How a transport under test is made: a fresh destination, and a way to read it back.
#[async_trait]
trait Harness: Send + Sync {
    fn name(&self) -> &str;
    async fn destination(&self) -> Box<dyn Destination>;
    async fn reopen(&self) -> Box<dyn Source>;
    /// Tags the transport can hold (docker-archive holds only images).
    fn tags(&self) -> Vec<&'static str> {
        vec!["multi", "artifact"]
    }
    /// Whether anything of a failed write may be visible (archives: the file must not exist).
    async fn is_untouched(&self, corrupt: &Descriptor) -> bool;
    /// Re-copying into the same destination is meaningful (not for write-once archives).
    fn rewritable(&self) -> bool {
        true
    }
}

/// Same as the sample layout, but one blob's bytes are altered (same size).
struct Corrupting {
    inner: Layout,
    target: Digest,
}

#[async_trait]
impl Source for Corrupting {
    fn location(&self) -> String {
        Source::location(&self.inner)
    }
    async fn resolve(&self, r: Option<&str>) -> hoist::Result<Descriptor> {
        self.inner.resolve(r).await
    }
    async fn fetch_manifest_bytes(&self, d: &Descriptor) -> hoist::Result<Bytes> {
        self.inner.fetch_manifest_bytes(d).await
    }
    async fn open_blob(&self, d: &Descriptor, offset: u64) -> hoist::Result<BlobStream> {
        let mut s = self.inner.open_blob(d, offset).await?;
        if d.digest != self.target {
            return Ok(s);
        }
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        buf[0] ^= 0x55;
        Ok(Box::pin(std::io::Cursor::new(buf)))
    }
}

async fn root(src: &dyn Source, tag: &str) -> Descriptor {
    src.resolve(Some(tag)).await.unwrap()
}

/// Every document and blob digest under `desc`, documents with their bytes.
async fn walk(src: &dyn Source, desc: &Descriptor, docs: &mut Vec<(Digest, Bytes)>, blobs: &mut Vec<Descriptor>) {
    let doc = src.fetch_document(desc).await.unwrap();
    docs.push((doc.digest.clone(), doc.bytes.clone()));
    for c in doc.children() {
        if hoist::model::media::is_document(&c.media_type) {
            Box::pin(walk(src, &c, docs, blobs)).await;
        } else {
            blobs.push(c);
        }
    }
}

async fn run_conformance(h: &dyn Harness) {
    let src = sample();
    let opts = CopyOptions::default();

    // 1. Round trip: same digests, same document bytes, same blob bytes.
    let dst = h.destination().await;
    let mut plan = Vec::new();
    for tag in h.tags() {
        plan.push((root(&src, tag).await, vec![tag.to_string()]));
    }
    let first = copy::graph_many(&src, dst.as_ref(), &plan, &opts, &NoProgress).await.unwrap();
    dst.finish().await.unwrap();
    drop(dst);
    assert!(first.blobs_uploaded > 0, "{}: nothing uploaded", h.name());
    let back = h.reopen().await;
    for tag in h.tags() {
        let want = root(&src, tag).await;
        let got = back.resolve(Some(tag)).await.unwrap_or_else(|e| panic!("{}: resolve {tag}: {e}", h.name()));
        assert_eq!(got.digest, want.digest, "{}: tag {tag}", h.name());
        let (mut want_docs, mut want_blobs) = (Vec::new(), Vec::new());
        walk(&src, &want, &mut want_docs, &mut want_blobs).await;
        let (mut got_docs, mut got_blobs) = (Vec::new(), Vec::new());
        walk(back.as_ref(), &got, &mut got_docs, &mut got_blobs).await;
        assert_eq!(got_docs, want_docs, "{}: documents under {tag}", h.name());
        assert_eq!(got_blobs, want_blobs, "{}: blob descriptors under {tag}", h.name());
        for b in &got_blobs {
            let mut s = back.open_blob(b, 0).await.unwrap();
            let mut bytes = Vec::new();
            s.read_to_end(&mut bytes).await.unwrap();
            assert_eq!(b.digest.same_alg_of(&bytes), b.digest, "{}: blob {}", h.name(), b.digest);
        }
    }

    // 2. A second copy into the same destination moves no blob.
    if h.rewritable() {
        let dst = h.destination().await;
        let second = copy::graph_many(&src, dst.as_ref(), &plan, &opts, &NoProgress).await.unwrap();
        dst.finish().await.unwrap();
        assert_eq!(second.blobs_uploaded, 0, "{}: second copy uploaded blobs", h.name());
    }
}

async fn run_refusal(h: &dyn Harness) {
    let src = sample();
    let art = root(&src, "multi").await;
    let (mut docs, mut blobs) = (Vec::new(), Vec::new());
    walk(&src, &art, &mut docs, &mut blobs).await;
    let victim = blobs.iter().find(|b| b.media_type.contains("layer")).unwrap().clone();
    let bad = Corrupting { inner: sample(), target: victim.digest.clone() };
    let dst = h.destination().await;
    let err = copy::graph(&bad, dst.as_ref(), &art, &["multi".into()], &CopyOptions::default(), &NoProgress).await;
    let err = err.expect_err("corrupt blob accepted");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{}: {err}", h.name());
    assert!(err.to_string().contains(&victim.digest.to_string()), "{}: error names the digest: {err}", h.name());
    drop(dst);
    assert!(h.is_untouched(&victim).await, "{}: corrupt content visible", h.name());
}

// ---- transports ----

struct LayoutH(PathBuf);
#[async_trait]
impl Harness for LayoutH {
    fn name(&self) -> &str {
        "layout"
    }
    async fn destination(&self) -> Box<dyn Destination> {
        Box::new(Layout::create(&self.0).unwrap())
    }
    async fn reopen(&self) -> Box<dyn Source> {
        Box::new(Layout::open(&self.0).unwrap())
    }
    async fn is_untouched(&self, corrupt: &Descriptor) -> bool {
        let l = Layout::open(&self.0).unwrap();
        !l.blob_path_of(&corrupt.digest).exists() && l.index_entries().unwrap().is_empty()
    }
}

struct OciArchiveH(PathBuf);
#[async_trait]
impl Harness for OciArchiveH {
    fn name(&self) -> &str {
        "oci-archive"
    }
    async fn destination(&self) -> Box<dyn Destination> {
        Box::new(hoist::transport::archive::oci::OciArchiveWriter::create(&self.0).await.unwrap())
    }
    async fn reopen(&self) -> Box<dyn Source> {
        Box::new(hoist::transport::archive::oci::OciArchive::open(&self.0).unwrap())
    }
    async fn is_untouched(&self, _: &Descriptor) -> bool {
        !self.0.exists() && no_temp_files(self.0.parent().unwrap())
    }
    fn rewritable(&self) -> bool {
        false
    }
}

struct DockerArchiveH(PathBuf);
#[async_trait]
impl Harness for DockerArchiveH {
    fn name(&self) -> &str {
        "docker-archive"
    }
    async fn destination(&self) -> Box<dyn Destination> {
        let p = hoist::Platform::parse("linux/amd64");
        Box::new(
            hoist::transport::archive::docker::DockerArchiveWriter::create(
                &self.0,
                vec!["example.com/conf:v1".into()],
                p,
            )
            .await
            .unwrap(),
        )
    }
    async fn reopen(&self) -> Box<dyn Source> {
        Box::new(hoist::transport::archive::docker::DockerArchive::open(&self.0).unwrap())
    }
    fn tags(&self) -> Vec<&'static str> {
        vec![]
    }
    async fn is_untouched(&self, _: &Descriptor) -> bool {
        !self.0.exists() && no_temp_files(self.0.parent().unwrap())
    }
    fn rewritable(&self) -> bool {
        false
    }
}

struct MemoryH(Arc<hoist::transport::memory::Memory>);
struct MemRef(Arc<hoist::transport::memory::Memory>);
#[async_trait]
impl Source for MemRef {
    fn location(&self) -> String {
        Source::location(self.0.as_ref())
    }
    async fn resolve(&self, r: Option<&str>) -> hoist::Result<Descriptor> {
        self.0.as_ref().resolve(r).await
    }
    async fn fetch_manifest_bytes(&self, d: &Descriptor) -> hoist::Result<Bytes> {
        self.0.as_ref().fetch_manifest_bytes(d).await
    }
    async fn open_blob(&self, d: &Descriptor, o: u64) -> hoist::Result<BlobStream> {
        self.0.as_ref().open_blob(d, o).await
    }
}
#[async_trait]
impl Destination for MemRef {
    fn location(&self) -> String {
        Destination::location(self.0.as_ref())
    }
    async fn has_blob(&self, d: &Descriptor) -> hoist::Result<bool> {
        self.0.has_blob(d).await
    }
    async fn has_manifest(&self, d: &Descriptor) -> hoist::Result<bool> {
        self.0.has_manifest(d).await
    }
    async fn push_blob(
        &self,
        d: &Descriptor,
        s: &dyn Source,
        p: &dyn hoist::transport::Progress,
    ) -> hoist::Result<hoist::transport::BlobOutcome> {
        self.0.push_blob(d, s, p).await
    }
    async fn push_manifest(&self, d: &Descriptor, b: Bytes, t: Option<&str>) -> hoist::Result<()> {
        self.0.push_manifest(d, b, t).await
    }
}
#[async_trait]
impl Harness for MemoryH {
    fn name(&self) -> &str {
        "memory"
    }
    async fn destination(&self) -> Box<dyn Destination> {
        Box::new(MemRef(self.0.clone()))
    }
    async fn reopen(&self) -> Box<dyn Source> {
        Box::new(MemRef(self.0.clone()))
    }
    async fn is_untouched(&self, corrupt: &Descriptor) -> bool {
        !self.0.has_blob(corrupt).await.unwrap() && self.0.roots().await.unwrap().is_empty()
    }
}

struct RegistryH {
    client: Arc<hoist::transport::registry::Client>,
    reference: hoist::model::reference::Reference,
}
#[async_trait]
impl Harness for RegistryH {
    fn name(&self) -> &str {
        "registry"
    }
    async fn destination(&self) -> Box<dyn Destination> {
        Box::new(self.client.repository(&self.reference))
    }
    async fn reopen(&self) -> Box<dyn Source> {
        Box::new(self.client.repository(&self.reference))
    }
    async fn is_untouched(&self, corrupt: &Descriptor) -> bool {
        let repo = self.client.repository(&self.reference);
        !repo.has_blob(corrupt).await.unwrap() && repo.tags().await.map(|t| t.is_empty()).unwrap_or(true)
    }
}

fn no_temp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().count() == 0
}

#[tokio::test]
async fn layout_conformance() {
    let t = tempfile::tempdir().unwrap();
    run_conformance(&LayoutH(t.path().join("a"))).await;
    // Blobs and index.json are readable like files other tools write (0644 less the umask).
    use std::os::unix::fs::PermissionsExt;
    let umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    let want = 0o644 & !(umask as u32);
    for f in std::fs::read_dir(t.path().join("a/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([t.path().join("a/index.json")])
    {
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, want, "{}", f.display());
    }
    run_refusal(&LayoutH(t.path().join("b"))).await;
}

#[tokio::test]
async fn oci_archive_conformance() {
    let t = tempfile::tempdir().unwrap();
    run_conformance(&OciArchiveH(t.path().join("a/x.tar"))).await;
    let d = t.path().join("b");
    std::fs::create_dir_all(&d).unwrap();
    run_refusal(&OciArchiveH(d.join("x.tar"))).await;
}

#[tokio::test]
async fn docker_archive_conformance() {
    let t = tempfile::tempdir().unwrap();
    // docker-archive holds one image: copy the amd64 child of the index, read it back.
    let h = DockerArchiveH(t.path().join("x.tar"));
    let src = sample();
    let idx = root(&src, "multi").await;
    let dst = h.destination().await;
    copy::graph(&src, dst.as_ref(), &idx, &[], &CopyOptions::default(), &NoProgress).await.unwrap();
    dst.finish().await.unwrap();
    let back = h.reopen().await;
    let got = back.resolve(None).await.unwrap();
    let doc = src.fetch_document(&idx).await.unwrap();
    let amd64 = doc.children().into_iter().find(|c| c.platform.as_ref().unwrap().architecture == "amd64").unwrap();
    assert_eq!(got.digest, amd64.digest, "docker-archive keeps the manifest digest");
    let d = t.path().join("b");
    std::fs::create_dir_all(&d).unwrap();
    run_refusal(&DockerArchiveH(d.join("x.tar"))).await;
}

#[tokio::test]
async fn memory_conformance() {
    run_conformance(&MemoryH(Arc::new(hoist::transport::memory::Memory::new()))).await;
    run_refusal(&MemoryH(Arc::new(hoist::transport::memory::Memory::new()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_conformance() {
    let reg = tokio::task::spawn_blocking(common::TestRegistry::plain).await.unwrap();
    let client = hoist::transport::registry::Client::new(Default::default()).unwrap();
    let h = RegistryH { client: client.clone(), reference: format!("{}/conf/a", reg.host()).parse().unwrap() };
    run_conformance(&h).await;
    let h = RegistryH { client, reference: format!("{}/conf/b", reg.host()).parse().unwrap() };
    run_refusal(&h).await;
    tokio::task::spawn_blocking(move || drop(reg)).await.unwrap();
}
