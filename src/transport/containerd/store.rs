//! containerd as a transport: image records and the `Source` and `Destination` impls (the
//! connection in `client.rs`, content in `content.rs`, unpack in `unpack.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1::{images_client::ImagesClient, GetImageRequest, Image, ListImagesRequest};
use containerd_client::tonic::{transport::Channel, Code};

use super::client::{from_proto, to_proto};
use super::{unpack, Containerd, LABEL_GC_CONTENT, MAX_DEPTH};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;
use crate::model::reference::TagOrDigest;
use crate::transport::{BlobOutcome, BlobStream, Destination, Progress, Source};

impl Containerd {
    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    /// The image record `name` points at, if there is one.
    async fn image(&self, name: &str) -> Result<Option<Image>> {
        match self.images().get(self.req(GetImageRequest { name: name.to_string() })).await {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.status(&format!("image {name}"), s)),
        }
    }

    /// Create or update the image record `name` to point at `desc`.
    async fn set_image(&self, name: &str, desc: &Descriptor) -> Result<()> {
        use containerd_client::services::v1::{CreateImageRequest, UpdateImageRequest};
        let image = Image {
            name: name.to_string(),
            labels: Default::default(),
            target: Some(to_proto(desc)),
            created_at: None,
            updated_at: None,
        };
        let create = CreateImageRequest { image: Some(image.clone()), source_date_epoch: None };
        match self.images().create(self.req(create)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                let mask = prost_types::FieldMask { paths: vec!["target".to_string()] };
                let update =
                    UpdateImageRequest { image: Some(image), update_mask: Some(mask), source_date_epoch: None };
                self.images().update(self.req(update)).await.map_err(|s| self.status(&format!("image {name}"), s))?;
                Ok(())
            }
            Err(s) => Err(self.status(&format!("image {name}"), s)),
        }
    }

    /// The root is stored: unpack it (images, when asked), then point the record `name` at it.
    async fn record_root(&self, desc: &Descriptor, bytes: &Bytes, name: &str) -> Result<()> {
        if self.target.unpack && !self.unpacked.lock().expect("lock").contains_key(&desc.digest) {
            let doc = Document::from_fetched(desc, bytes.clone(), &self.location)?;
            unpack::unpack(self, &doc).await?;
            self.unpacked.lock().expect("lock").insert(desc.digest.clone(), ());
        }
        self.set_image(name, desc).await
    }

    /// Whether `desc` and, for a document, everything under it is in the content store.
    async fn has_graph(&self, desc: &Descriptor, depth: usize) -> Result<bool> {
        if self.info(&desc.digest).await?.is_none() {
            return Ok(false);
        }
        if !media::is_document(&desc.media_type) {
            return Ok(true);
        }
        if depth > MAX_DEPTH {
            return Ok(false);
        }
        let bytes = self.read_all(desc, media::MAX_MANIFEST_SIZE).await?;
        let Ok(doc) = Document::from_fetched(desc, bytes, &self.location) else { return Ok(false) };
        for c in doc.children() {
            if !Box::pin(self.has_graph(&c, depth + 1)).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The media type of the document `digest` (from its bytes; containerd keeps none).
    async fn describe(&self, digest: &Digest) -> Result<Descriptor> {
        let info = self
            .info(digest)
            .await?
            .ok_or_else(|| Error::not_found(format!("content {digest}"), self.location.clone()))?;
        let probe = Descriptor::new(media::OCI_MANIFEST, digest.clone(), info.size.max(0) as u64);
        if probe.size > media::MAX_MANIFEST_SIZE {
            return Err(Error::Unsupported(format!("{digest} in {} is not a manifest or index", self.location)));
        }
        let bytes = self.read_all(&probe, media::MAX_MANIFEST_SIZE).await?;
        let doc = Document::parse(bytes, digest.clone(), None, &self.location)?;
        let mut d = doc.descriptor();
        d.size = probe.size;
        Ok(d)
    }
}

/// The GC labels that keep the children of `doc` alive as long as it is (containerd's own
/// naming: `config`, `l.<i>` for layers, `m.<i>` for the manifests of an index).
fn gc_labels(doc: &Document) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    match &doc.view {
        View::Manifest(m) => {
            labels.insert(format!("{LABEL_GC_CONTENT}.config"), m.config.digest.to_string());
            for (i, l) in m.layers.iter().enumerate() {
                labels.insert(format!("{LABEL_GC_CONTENT}.l.{i}"), l.digest.to_string());
            }
        }
        View::Index(ix) => {
            for (i, m) in ix.manifests.iter().enumerate() {
                labels.insert(format!("{LABEL_GC_CONTENT}.m.{i}"), m.digest.to_string());
            }
        }
    }
    if let Some(s) = doc.subject() {
        labels.insert(format!("{LABEL_GC_CONTENT}.subject"), s.digest.to_string());
    }
    labels
}

#[async_trait]
impl Source for Containerd {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        let target = match reference {
            Some(r) => r.clone(),
            None => TagOrDigest::parse(&self.target.reference.target()),
        };
        let name = match &target {
            TagOrDigest::Digest(d) => return self.describe(d).await,
            TagOrDigest::Tag(t) => self.target.image_name(t)?,
        };
        let Some(image) = self.image(&name).await? else {
            self.check_namespace().await?;
            return Err(Error::not_found(
                format!("image {name} (`ctr -n {} images ls` lists them)", self.target.namespace),
                self.location.clone(),
            ));
        };
        let t = image.target.ok_or_else(|| Error::malformed("image record", self.location.clone(), "no target"))?;
        from_proto(&t, &self.location)
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.size > media::MAX_MANIFEST_SIZE {
            return Err(Error::malformed(
                format!("manifest {}", desc.digest),
                self.location.clone(),
                format!("larger than {} bytes", media::MAX_MANIFEST_SIZE),
            ));
        }
        self.read_all(desc, media::MAX_MANIFEST_SIZE).await
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        self.read_stream(desc, offset).await
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        let repo = self.target.reference.repo_ref();
        let filter = format!("name~=^{}[:@]", regex_escape(&repo));
        let list = self
            .images()
            .list(self.req(ListImagesRequest { filters: vec![filter] }))
            .await
            .map_err(|s| self.status("image list", s))?
            .into_inner();
        let mut out = Vec::new();
        for image in list.images {
            let Some(t) = &image.target else { continue };
            let tag = image.name.strip_prefix(&repo).and_then(|r| r.strip_prefix(':')).map(str::to_string);
            out.push((from_proto(t, &self.location)?, tag));
        }
        Ok(out)
    }
}

/// `s` with the characters Go's regexp treats specially escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Destination for Containerd {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.info(&desc.digest).await?.is_some())
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        self.has_graph(desc, 0).await
    }

    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        if self.has_blob(desc).await? {
            return Ok(BlobOutcome::Existed);
        }
        self.ensure_lease().await?;
        self.write_from(desc, src, BTreeMap::new(), progress).await
    }

    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        let doc = Document::from_fetched(desc, bytes.clone(), &self.location)?;
        self.ensure_lease().await?;
        if self.info(&desc.digest).await?.is_none() {
            self.write_bytes(desc, bytes.clone(), gc_labels(&doc)).await?;
        } else {
            // Content written by another client may lack the labels: add them.
            self.add_labels(&desc.digest, gc_labels(&doc)).await?;
        }
        if let Some(t) = tag {
            let name = self.target.image_name(t)?;
            self.record_root(desc, &bytes, &name).await?;
        }
        Ok(())
    }

    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        // An untagged root: its record is named by digest (`docker.io/library/app@sha256:…`).
        self.ensure_lease().await?;
        let bytes = self.read_all(desc, media::MAX_MANIFEST_SIZE).await?;
        let name = self.target.image_name(&desc.digest.to_string())?;
        self.record_root(desc, &bytes, &name).await
    }

    async fn finish(&self) -> Result<()> {
        self.release_lease().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_labels_follow_containerd() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#;
        let desc = Descriptor::of_bytes(media::OCI_MANIFEST, m);
        let doc = Document::from_fetched(&desc, Bytes::from_static(m), "t").unwrap();
        let l = gc_labels(&doc);
        assert_eq!(l.len(), 2);
        assert!(l.contains_key("containerd.io/gc.ref.content.config"));
        assert!(l.contains_key("containerd.io/gc.ref.content.l.0"));
    }
}
