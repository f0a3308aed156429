//! The conformance suite of the test kit (`hoist_testkit::conformance`: what goes in comes out
//! byte for byte, corrupt blobs are refused and leave nothing visible, and a second copy moves
//! nothing), run for every transport.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hoist::copy::{self, CopyOptions};
use hoist::transport::layout::Layout;
use hoist::transport::{BlobStream, Destination, NoProgress, Source};
use hoist::Descriptor;
use hoist_testkit::conformance::{self, root, sample, Harness};

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
    async fn resolve(&self, r: Option<&hoist::TagOrDigest>) -> hoist::Result<Descriptor> {
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
    conformance::round_trip(&LayoutH(t.path().join("a"))).await;
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
    conformance::refusal(&LayoutH(t.path().join("b"))).await;
}

#[tokio::test]
async fn oci_archive_conformance() {
    let t = tempfile::tempdir().unwrap();
    // An archive's directory must exist: hoist does not create it (as tar(1)).
    std::fs::create_dir_all(t.path().join("a")).unwrap();
    conformance::round_trip(&OciArchiveH(t.path().join("a/x.tar"))).await;
    let d = t.path().join("b");
    std::fs::create_dir_all(&d).unwrap();
    conformance::refusal(&OciArchiveH(d.join("x.tar"))).await;
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
    conformance::refusal(&DockerArchiveH(d.join("x.tar"))).await;
}

#[tokio::test]
async fn memory_conformance() {
    conformance::run(|| MemoryH(Arc::new(hoist::transport::memory::Memory::new()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_conformance() {
    let reg = tokio::task::spawn_blocking(common::TestRegistry::plain).await.unwrap();
    let client = hoist::transport::registry::Client::new(Default::default()).unwrap();
    let h = RegistryH { client: client.clone(), reference: format!("{}/conf/a", reg.host()).parse().unwrap() };
    conformance::round_trip(&h).await;
    let h = RegistryH { client, reference: format!("{}/conf/b", reg.host()).parse().unwrap() };
    conformance::refusal(&h).await;
    tokio::task::spawn_blocking(move || drop(reg)).await.unwrap();
}
