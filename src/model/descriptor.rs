//! Descriptors, serialized with a fixed field order and sorted maps so
//! that documents hoist writes are byte-stable. Unknown fields read from other tools'
//! documents are kept in `extra` and written back after the known ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::digest::Digest;

/// An OCI content descriptor: what a piece of content is, its digest and size, and where
/// it applies. Identifies a blob or document wherever it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// `mediaType` of the referenced content.
    pub media_type: String,
    /// `artifactType` of an OCI 1.1 artifact manifest this descriptor points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Digest of the referenced bytes.
    pub digest: Digest,
    /// Length of the referenced bytes.
    pub size: u64,
    /// `urls` the content may also be fetched from (foreign layers); kept, never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// `annotations`, written in key order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `platform` of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// `data`: the content itself, base64, embedded in the descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Fields hoist does not know, kept and written back after the known ones.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Descriptor {
    /// A descriptor with only media type, digest and size set.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            artifact_type: None,
            digest,
            size,
            urls: None,
            annotations: BTreeMap::new(),
            platform: None,
            data: None,
            extra: BTreeMap::new(),
        }
    }
    /// Descriptor of in-memory bytes (sha256).
    pub fn of_bytes(media_type: impl Into<String>, bytes: &[u8]) -> Self {
        Descriptor::new(media_type, Digest::sha256_of(bytes), bytes.len() as u64)
    }
    /// The tag stored in a layout index entry, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(crate::model::media::ANNOTATION_REF_NAME).map(String::as_str)
    }
    /// This descriptor with annotation `k` set to `v`.
    pub fn with_annotation(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
}

/// The platform of an image (its matching rules: `model::platform`), as an index entry or an image config states it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, in Go's `GOARCH` spelling (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system, in Go's `GOOS` spelling (`linux`, `windows`).
    pub os: String,
    /// `os.version` (Windows builds).
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `features` (reserved by the image spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_descriptor_bytes() {
        let d = Descriptor::of_bytes(crate::model::media::OCI_EMPTY, b"{}")
            .with_annotation("z", "1")
            .with_annotation("a", "2");
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"a":"2","z":"1"}}"#
        );
    }

    #[test]
    fn unknown_fields_survive() {
        let s = r#"{"mediaType":"x","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"zz":{"k":1}}"#;
        let d: Descriptor = serde_json::from_str(s).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), s);
    }
}
