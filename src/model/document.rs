//! Manifests and indexes as the exact bytes that were hashed, plus a read-only parsed
//! view. Nothing here re-serializes a document: the bytes are what gets stored and sent.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;

/// Read-only view of an image manifest (OCI or Docker v2 schema 2).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    /// `schemaVersion` (2 for every supported manifest).
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// `mediaType` as written in the document, if it is.
    #[serde(default)]
    pub media_type: Option<String>,
    /// `artifactType` of an OCI 1.1 artifact.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// `subject`: the manifest this one refers to (a signature, SBOM or attestation).
    #[serde(default)]
    pub subject: Option<Descriptor>,
    /// Manifest-level annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Read-only view of an image index or Docker manifest list.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexView {
    /// `schemaVersion` (2 for every supported index).
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// `mediaType` as written in the document, if it is.
    #[serde(default)]
    pub media_type: Option<String>,
    /// `artifactType` of an OCI 1.1 artifact index.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The child manifests and indexes, in order.
    pub manifests: Vec<Descriptor>,
    /// `subject`: the manifest this index refers to.
    #[serde(default)]
    pub subject: Option<Descriptor>,
    /// Index-level annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The parsed view of a [`Document`]: a manifest or an index.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum View {
    /// An image manifest (OCI or Docker v2 schema 2), artifacts included.
    Manifest(ManifestView),
    /// An image index or Docker manifest list.
    Index(IndexView),
}

/// A manifest or index: raw bytes, their digest, media type and parsed view.
#[derive(Clone, Debug)]
pub struct Document {
    /// The exact bytes, as hashed, stored and sent.
    pub bytes: Bytes,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Media type: the document's own `mediaType`, else the parent's or server's hint, else
    /// inferred from its shape.
    pub media_type: String,
    /// Read-only parsed view of `bytes`.
    pub view: View,
}

impl Document {
    /// The descriptor a referrers list gives this document: its media type, digest, size,
    /// annotations and artifact type (a manifest without `artifactType` has its config's
    /// media type, as the distribution spec says).
    pub fn referrer_descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(self.media_type.clone(), self.digest.clone(), self.bytes.len() as u64);
        d.artifact_type = self.artifact_type().or_else(|| match &self.view {
            View::Manifest(m) => Some(m.config.media_type.clone()),
            View::Index(_) => None,
        });
        d.annotations = self.annotations().clone();
        d
    }

    /// Parse bytes fetched for `desc`, verifying size and digest first.
    pub fn from_fetched(desc: &Descriptor, bytes: Bytes, location: &str) -> Result<Document> {
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                what: format!("manifest {}", desc.digest),
                location: location.to_string(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = desc.digest.same_alg_of(&bytes);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what: "manifest".into(),
                location: location.to_string(),
                expected: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Document::parse(bytes, desc.digest.clone(), Some(&desc.media_type), location)
    }

    /// Parse bytes whose digest is already known to be `digest`.
    /// `hint` is the media type from the parent descriptor or a Content-Type header.
    pub fn parse(bytes: Bytes, digest: Digest, hint: Option<&str>, location: &str) -> Result<Document> {
        if bytes.len() as u64 > media::MAX_MANIFEST_SIZE {
            return Err(Error::malformed(
                format!("manifest {digest}"),
                location,
                format!("{} bytes exceeds the {} byte limit", bytes.len(), media::MAX_MANIFEST_SIZE),
            ));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
            #[serde(default)]
            config: Option<serde_json::Value>,
        }
        let what = format!("manifest {digest}");
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, location, e))?;
        let media_type = match (probe.media_type.as_deref(), hint) {
            (Some(mt), _) if !mt.is_empty() => mt.to_string(),
            (_, Some(h)) if media::is_document(h) => h.to_string(),
            _ if probe.manifests.is_some() => media::OCI_INDEX.to_string(),
            _ if probe.config.is_some() => media::OCI_MANIFEST.to_string(),
            _ => return Err(Error::malformed(&what, location, "neither a manifest nor an index")),
        };
        if let (Some(inner), Some(h)) = (probe.media_type.as_deref(), hint) {
            if media::is_document(h) && media::is_document(inner) && inner != h {
                return Err(Error::malformed(
                    &what,
                    location,
                    format!("mediaType {inner} does not match descriptor {h}"),
                ));
            }
        }
        let view = if media::is_index(&media_type) {
            View::Index(serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, location, e))?)
        } else if media::is_manifest(&media_type) {
            View::Manifest(serde_json::from_slice(&bytes).map_err(|e| Error::malformed(&what, location, e))?)
        } else {
            return Err(Error::malformed(&what, location, format!("unsupported media type {media_type}")));
        };
        Ok(Document { bytes, digest, media_type, view })
    }

    /// Descriptor of this document (no annotations, no platform).
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(self.media_type.clone(), self.digest.clone(), self.bytes.len() as u64);
        d.artifact_type = self.artifact_type();
        d
    }

    /// The document's `artifactType`, if it has one.
    pub fn artifact_type(&self) -> Option<String> {
        match &self.view {
            View::Manifest(m) => m.artifact_type.clone(),
            View::Index(i) => i.artifact_type.clone(),
        }
    }

    /// The document's `subject`, if it refers to another manifest.
    pub fn subject(&self) -> Option<&Descriptor> {
        match &self.view {
            View::Manifest(m) => m.subject.as_ref(),
            View::Index(i) => i.subject.as_ref(),
        }
    }

    /// The document-level annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match &self.view {
            View::Manifest(m) => &m.annotations,
            View::Index(i) => &i.annotations,
        }
    }

    /// Children in push order: blobs (config, layers) or child manifests.
    pub fn children(&self) -> Vec<Descriptor> {
        match &self.view {
            View::Manifest(m) => {
                let mut v = Vec::with_capacity(m.layers.len() + 1);
                v.push(m.config.clone());
                v.extend(m.layers.iter().cloned());
                v
            }
            View::Index(i) => i.manifests.clone(),
        }
    }

    /// Whether this is an index (or manifest list) rather than a manifest.
    pub fn is_index(&self) -> bool {
        matches!(self.view, View::Index(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_and_detects_type() {
        let raw = br#"{"schemaVersion":2, "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        let d = Descriptor::of_bytes(media::OCI_MANIFEST, raw);
        let doc = Document::from_fetched(&d, Bytes::from_static(raw), "test").unwrap();
        assert_eq!(&doc.bytes[..], &raw[..]);
        assert_eq!(doc.children().len(), 1);
        let mut wrong = d.clone();
        wrong.size += 1;
        assert!(Document::from_fetched(&wrong, Bytes::from_static(raw), "test").is_err());
    }

    #[test]
    fn refuses_mismatched_media_type() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let d = Descriptor::of_bytes(media::OCI_MANIFEST, raw);
        assert!(Document::from_fetched(&d, Bytes::from_static(raw), "test").is_err());
    }
}
