//! The documents hoist writes (image manifest, image index, image config), as structs
//! with a fixed field order and sorted maps: the same values always give the same bytes.
//! Reading other tools' documents goes through `document`; these structs only write
//! (the config also reads a base image's config, keeping unknown fields in `extra`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::media;

/// Serialize a document hoist writes: compact JSON from its own ordered structs.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::serialize("serialize document", e))
}

/// OCI image manifest (also used for artifacts).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// `schemaVersion`: always 2.
    pub schema_version: u32,
    /// `mediaType`: [`media::OCI_MANIFEST`].
    pub media_type: String,
    /// `artifactType` of an artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob (the empty descriptor for most artifacts).
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// `subject`: the manifest this one refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Manifest annotations, written in key order.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// A manifest of `config` and `layers`, with no artifact type, subject or annotations.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        ImageManifest {
            schema_version: 2,
            media_type: media::OCI_MANIFEST.into(),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
    /// The manifest's canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        to_json(self)
    }
}

/// OCI image index.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// `schemaVersion`: always 2.
    pub schema_version: u32,
    /// `mediaType`: [`media::OCI_INDEX`].
    pub media_type: String,
    /// `artifactType` of an artifact index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The child manifests and indexes, in order.
    pub manifests: Vec<Descriptor>,
    /// `subject`: the manifest this index refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Index annotations, written in key order.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An index of `manifests`, with no artifact type, subject or annotations.
    pub fn new(manifests: Vec<Descriptor>) -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: media::OCI_INDEX.into(),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
    /// The index's canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        to_json(self)
    }
}

/// An empty JSON object, the value type of `ExposedPorts` / `Volumes` entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// OCI image config (`application/vnd.oci.image.config.v1+json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// `os.version`.
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// How to run a container from the image.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
    /// One entry per build step, layers and empty steps alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields of a base image's config hoist does not model, written back sorted.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageConfig {
    /// The config's canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        to_json(self)
    }
}

/// The `config` object of an image config: how to run the container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `User`: user (and group) the process runs as.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `ExposedPorts`: `port/proto` keys.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `Env`: `NAME=value` entries.
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`: the default arguments (to the entrypoint, if there is one).
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `Volumes`: paths to be volumes.
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Empty>,
    /// `WorkingDir`.
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `Labels`.
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`.
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker-specific fields of a base config (Healthcheck, Shell, ...), kept sorted.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `rootfs`: the layers' uncompressed digests, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// `type`: always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, bottom first.
    pub diff_ids: Vec<crate::model::digest::Digest>,
}

impl RootFs {
    /// A `layers` rootfs of `diff_ids`.
    pub fn layers(diff_ids: Vec<crate::model::digest::Digest>) -> Self {
        RootFs { kind: "layers".into(), diff_ids }
    }
}

/// One `history` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command or instruction of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free-form comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether the step made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::digest::Digest;

    fn layer() -> Descriptor {
        Descriptor::of_bytes(media::OCI_LAYER_GZIP, b"layer")
    }

    #[test]
    fn golden_manifest() {
        let mut m = ImageManifest::new(Descriptor::of_bytes(media::OCI_CONFIG, b"{}"), vec![layer()]);
        m.annotations.insert("z".into(), "1".into());
        m.annotations.insert("a".into(), "2".into());
        assert_eq!(
            String::from_utf8(m.to_bytes().unwrap()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:dac1d7cfa95021764849fd102524e141488c5e3a90f861dbb5a12d9ac8584f85","size":5}],"annotations":{"a":"2","z":"1"}}"#
        );
    }

    #[test]
    fn golden_artifact_manifest_with_subject() {
        let mut cfg = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
        cfg.data = Some("e30=".into());
        let mut m = ImageManifest::new(cfg, vec![]);
        m.artifact_type = Some("application/x.test".into());
        m.subject = Some(Descriptor::of_bytes(media::OCI_MANIFEST, b"subject"));
        assert_eq!(
            String::from_utf8(m.to_bytes().unwrap()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.test","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a9491f4c1bf7b0cffbadcba2db8f028e4b3f2867cb59e1f3a0bc1968f3c51242","size":7}}"#
        );
    }

    #[test]
    fn golden_index() {
        let mut d = Descriptor::of_bytes(media::OCI_MANIFEST, b"m");
        d.platform = crate::Platform::parse("linux/arm64/v8");
        let i = ImageIndex::new(vec![d]);
        assert_eq!(
            String::from_utf8(i.to_bytes().unwrap()).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#
        );
    }

    #[test]
    fn golden_config() {
        let mut c = ImageConfig {
            created: Some("1970-01-01T00:00:00Z".into()),
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        c.config.env = vec!["PATH=/usr/bin".into()];
        c.config.entrypoint = Some(vec!["/app/run.sh".into()]);
        c.config.exposed_ports.insert("8080/tcp".into(), Empty {});
        c.config.labels.insert("b".into(), "2".into());
        c.config.labels.insert("a".into(), "1".into());
        c.config.working_dir = Some("/app".into());
        c.config.user = Some("1000:1000".into());
        c.rootfs = RootFs::layers(vec![Digest::sha256_of(b"")]);
        c.history.push(History {
            created: Some("1970-01-01T00:00:00Z".into()),
            created_by: Some("hoist build".into()),
            ..Default::default()
        });
        assert_eq!(
            String::from_utf8(c.to_bytes().unwrap()).unwrap(),
            r#"{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"User":"1000:1000","ExposedPorts":{"8080/tcp":{}},"Env":["PATH=/usr/bin"],"Entrypoint":["/app/run.sh"],"WorkingDir":"/app","Labels":{"a":"1","b":"2"}},"rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hoist build"}]}"#
        );
    }

    #[test]
    fn base_config_round_trip_keeps_unknown_fields() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Healthcheck":{"Test":["NONE"]}},"rootfs":{"type":"layers","diff_ids":[]},"container":"abc"}"#;
        let c: ImageConfig = serde_json::from_str(raw).unwrap();
        assert_eq!(
            String::from_utf8(c.to_bytes().unwrap()).unwrap(),
            r#"{"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Test":["NONE"]}},"rootfs":{"type":"layers","diff_ids":[]},"container":"abc"}"#
        );
    }
}
