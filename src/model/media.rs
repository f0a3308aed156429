//! Media type constants: the one place hoist names them.

/// `imageLayoutVersion` written to an OCI layout's `oci-layout` file.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI empty descriptor (the `{}` config or layer of artifacts).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// OCI uncompressed layer tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip-compressed layer tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd-compressed layer tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Docker image manifest, v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (the Docker counterpart of an OCI index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip-compressed layer tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The empty JSON config blob `{}` used by artifacts.
pub const EMPTY_JSON: &[u8] = b"{}";
/// Digest of [`EMPTY_JSON`].
pub const EMPTY_JSON_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// OCI annotation: the tag of an entry in a layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full image name containerd (`ctr import`), BuildKit and hoist write beside `ref.name`
/// in an `index.json` entry, normalized (`docker.io/library/alpine:3.20`).
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation: a human-readable title (an artifact layer's file name, a bundle's name).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// OCI annotation: creation time, RFC 3339.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// Accept header for manifest GET/HEAD: every manifest kind hoist understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.artifact.manifest.v1+json";

/// Largest manifest or index hoist reads (the distribution spec's recommended 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Whether `media_type` is an index: OCI image index or Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether `media_type` is a manifest: OCI or Docker image manifest, or the OCI artifact
/// manifest of the 1.1 release candidates.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST
        || media_type == DOCKER_MANIFEST
        || media_type == "application/vnd.oci.artifact.manifest.v1+json"
}

/// Manifests and indexes are "documents": fetched whole, parsed for children.
pub fn is_document(media_type: &str) -> bool {
    is_index(media_type) || is_manifest(media_type)
}

/// OCI annotation: the reference of the base image a built image starts from.
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// OCI annotation: the manifest digest of the base image.
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// Default media type of an artifact file layer.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Base64 of `{}`: the `data` field of the empty descriptor.
pub const EMPTY_JSON_DATA: &str = "e30=";

// CNCF ModelPack (https://github.com/modelpack/model-spec).
/// ModelPack: `artifactType` of a model manifest.
pub const MODEL_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack: model config.
pub const MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// Prefix of every ModelPack layer media type: `<prefix><kind>.v1.<format>`.
pub const MODEL_LAYER_PREFIX: &str = "application/vnd.cncf.model.";
/// The older CNAI prefix, read when unpacking.
pub const MODEL_LAYER_PREFIX_CNAI: &str = "application/vnd.cnai.model.";
/// ModelPack layer: a weight file, stored as is.
pub const MODEL_WEIGHT_RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
/// ModelPack layer: a weight config file (tokenizer, generation config), stored as is.
pub const MODEL_WEIGHT_CONFIG_RAW: &str = "application/vnd.cncf.model.weight.config.v1.raw";
/// ModelPack layer: a documentation file (README, license), stored as is.
pub const MODEL_DOC_RAW: &str = "application/vnd.cncf.model.doc.v1.raw";
/// ModelPack layer: a code file, stored as is.
pub const MODEL_CODE_RAW: &str = "application/vnd.cncf.model.code.v1.raw";
/// ModelPack layer: a dataset file, stored as is.
pub const MODEL_DATASET_RAW: &str = "application/vnd.cncf.model.dataset.v1.raw";
/// ModelPack layer annotation: the file's path inside the model.
pub const ANNOTATION_MODEL_FILEPATH: &str = "org.cncf.model.filepath";
/// ModelPack layer annotation: the file's metadata (name, mode, owner, size, mtime) as JSON.
pub const ANNOTATION_MODEL_FILE_METADATA: &str = "org.cncf.model.file.metadata+json";
/// [`ANNOTATION_MODEL_FILEPATH`] under the older CNAI name, read when unpacking.
pub const ANNOTATION_MODEL_FILEPATH_CNAI: &str = "org.cnai.model.filepath";
/// [`ANNOTATION_MODEL_FILE_METADATA`] under the older CNAI name, read when unpacking.
pub const ANNOTATION_MODEL_FILE_METADATA_CNAI: &str = "org.cnai.model.file.metadata+json";

/// Config media type of an artifact whose config file has no type given (as oras uses).
pub const UNKNOWN_CONFIG: &str = "application/vnd.unknown.config.v1+json";
/// Response header of a manifest PUT on a registry that indexed its `subject`.
pub const HEADER_OCI_SUBJECT: &str = "oci-subject";
// CNAB bundles stored the cnab-to-oci way (https://github.com/cnabio/cnab-to-oci).
/// cnab-to-oci: the config blob holding a CNAB bundle's `bundle.json`.
pub const CNAB_CONFIG: &str = "application/vnd.cnab.config.v1+json";
/// Value of `org.opencontainers.artifactType` on a bundle index.
pub const CNAB_MANIFEST_ARTIFACT: &str = "application/vnd.cnab.manifest.v1";
/// CNAB: `schemaVersion` of the bundles hoist writes.
pub const CNAB_SCHEMA_VERSION: &str = "v1.0.0";
/// CNAB: the runtime version hoist records on a bundle index.
pub const CNAB_RUNTIME_VERSION: &str = "v1.0.0";
/// cnab-to-oci index annotation: the CNAB runtime version.
pub const ANNOTATION_CNAB_RUNTIME_VERSION: &str = "io.cnab.runtime_version";
/// cnab-to-oci entry annotation: `config`, `invocation` or `component`.
pub const ANNOTATION_CNAB_MANIFEST_TYPE: &str = "io.cnab.manifest.type";
/// cnab-to-oci entry annotation: the component's name in the bundle.
pub const ANNOTATION_CNAB_COMPONENT_NAME: &str = "io.cnab.component.name";
/// Annotation carrying an artifact type on an index (as cnab-to-oci writes it).
pub const ANNOTATION_ARTIFACT_TYPE: &str = "org.opencontainers.artifactType";
/// OCI annotation: the version of the packaged software.
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
/// OCI annotation: a human-readable description.
pub const ANNOTATION_DESCRIPTION: &str = "org.opencontainers.image.description";
/// KitOps ModelKit config (the Kitfile as JSON).
pub const KITOPS_CONFIG: &str = "application/vnd.kitops.modelkit.config.v1+json";
/// Prefix of KitOps ModelKit layer media types (`…model.v1.tar`, `…modelpart.v1.tar+gzip`, …).
pub const KITOPS_LAYER_PREFIX: &str = "application/vnd.kitops.modelkit.";
/// `artifactType` of the manifests KitOps writes.
pub const KITOPS_ARTIFACT: &str = "application/vnd.kitops.modelkit.manifest.v1+json";
/// Prefix of Docker Model Runner media types (`application/vnd.docker.ai.gguf.v3`, …).
pub const DOCKER_AI_PREFIX: &str = "application/vnd.docker.ai.";
/// Docker Model Runner config, layers listed by format (v0.1).
pub const DOCKER_AI_CONFIG_V01: &str = "application/vnd.docker.ai.model.config.v0.1+json";
/// Docker Model Runner config, one layer per file with `org.cncf.model.filepath` (v0.2).
pub const DOCKER_AI_CONFIG_V02: &str = "application/vnd.docker.ai.model.config.v0.2+json";
/// Docker Model Runner: a GGUF v3 weight file.
pub const DOCKER_AI_GGUF: &str = "application/vnd.docker.ai.gguf.v3";
/// Docker Model Runner: a safetensors weight file.
pub const DOCKER_AI_SAFETENSORS: &str = "application/vnd.docker.ai.safetensors";
/// Docker Model Runner: a license text.
pub const DOCKER_AI_LICENSE: &str = "application/vnd.docker.ai.license";
/// Docker Model Runner: a multimodal projector.
pub const DOCKER_AI_MMPROJ: &str = "application/vnd.docker.ai.mmproj";
/// Docker Model Runner: a tar of vLLM config files.
pub const DOCKER_AI_VLLM_CONFIG_TAR: &str = "application/vnd.docker.ai.vllm.config.tar";
/// Docker Model Runner: a tar of a directory.
pub const DOCKER_AI_DIR_TAR: &str = "application/vnd.docker.ai.dir.tar";
