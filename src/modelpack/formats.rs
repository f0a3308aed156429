//! The layers of every model artifact format hoist reads: CNCF ModelPack (and its older
//! CNAI names), KitOps ModelKits (`application/vnd.kitops.modelkit.*`) and Docker Model
//! Runner artifacts (`application/vnd.docker.ai.*`). Each layer becomes one [`LayerInfo`]:
//! what kind of file it holds, whether it is the file itself or a tar, and its path.

use super::{ModelFileKind, ModelLayerFormat};
use crate::model::descriptor::Descriptor;
use crate::model::media;

/// The artifact format a layer (or manifest) belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// CNCF ModelPack (`application/vnd.cncf.model.*`, `application/vnd.cnai.model.*`).
    ModelPack,
    /// KitOps ModelKit.
    ModelKit,
    /// Docker Model Runner.
    Docker,
}

/// One layer of a model artifact, as hoist understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// Which format's media type it has.
    pub format: ModelFormat,
    /// What it holds.
    pub kind: ModelFileKind,
    /// The file itself, or a tar.
    pub layer_format: ModelLayerFormat,
    /// Path of the file (or directory, for a tar) relative to the model root, from
    /// `org.cncf.model.filepath`; for a Docker layer without one, its title or a name made
    /// from its digest.
    pub path: Option<String>,
}

fn kind_from_name(name: &str) -> Option<ModelFileKind> {
    Some(match name {
        "weight" | "model" => ModelFileKind::Weight,
        "weight.config" | "modelpart" => ModelFileKind::WeightConfig,
        "doc" | "docs" | "prompts" => ModelFileKind::Doc,
        "code" => ModelFileKind::Code,
        "dataset" => ModelFileKind::Dataset,
        _ => return None,
    })
}

/// The file path a layer's annotations give.
pub fn annotated_path(desc: &Descriptor) -> Option<String> {
    desc.annotations
        .get(media::ANNOTATION_MODEL_FILEPATH)
        .or_else(|| desc.annotations.get(media::ANNOTATION_MODEL_FILEPATH_CNAI))
        .cloned()
}

/// What a layer is, or `None` for a media type of no model format hoist knows.
pub fn layer_info(desc: &Descriptor) -> Option<LayerInfo> {
    let mt = desc.media_type.as_str();
    let path = annotated_path(desc);
    if let Some(rest) =
        mt.strip_prefix(media::MODEL_LAYER_PREFIX).or_else(|| mt.strip_prefix(media::MODEL_LAYER_PREFIX_CNAI))
    {
        let (kind, format) = rest.split_once(".v1.")?;
        return Some(LayerInfo {
            format: ModelFormat::ModelPack,
            kind: kind_from_name(kind)?,
            layer_format: ModelLayerFormat::from_suffix(format)?,
            path,
        });
    }
    if let Some(rest) = mt.strip_prefix(media::KITOPS_LAYER_PREFIX) {
        let (kind, format) = rest.split_once(".v1.")?;
        return Some(LayerInfo {
            format: ModelFormat::ModelKit,
            kind: kind_from_name(kind)?,
            layer_format: ModelLayerFormat::from_suffix(format)?,
            path,
        });
    }
    if mt.starts_with(media::DOCKER_AI_PREFIX) {
        let hex = desc.digest.hex();
        let short = &hex[..hex.len().min(12)];
        let title = desc.annotations.get(media::ANNOTATION_TITLE).cloned();
        let (kind, layer_format, fallback) = match mt {
            media::DOCKER_AI_GGUF => (ModelFileKind::Weight, ModelLayerFormat::Raw, format!("model-{short}.gguf")),
            media::DOCKER_AI_SAFETENSORS => {
                (ModelFileKind::Weight, ModelLayerFormat::Raw, format!("model-{short}.safetensors"))
            }
            media::DOCKER_AI_MMPROJ => (ModelFileKind::Weight, ModelLayerFormat::Raw, format!("mmproj-{short}.gguf")),
            media::DOCKER_AI_LICENSE => (ModelFileKind::Doc, ModelLayerFormat::Raw, format!("LICENSE-{short}")),
            media::DOCKER_AI_VLLM_CONFIG_TAR | media::DOCKER_AI_DIR_TAR => {
                return Some(LayerInfo {
                    format: ModelFormat::Docker,
                    kind: ModelFileKind::WeightConfig,
                    layer_format: ModelLayerFormat::Tar,
                    path,
                })
            }
            m if m.ends_with(".jinja") || m.contains("template") => {
                (ModelFileKind::WeightConfig, ModelLayerFormat::Raw, format!("template-{short}.jinja"))
            }
            _ => (ModelFileKind::WeightConfig, ModelLayerFormat::Raw, format!("file-{short}")),
        };
        return Some(LayerInfo {
            format: ModelFormat::Docker,
            kind,
            layer_format,
            path: path.or(title).or(Some(fallback)),
        });
    }
    None
}

/// The KitOps media type of a layer of this kind and format.
pub fn kitops_media_type(kind: ModelFileKind, format: ModelLayerFormat) -> String {
    let name = match kind {
        ModelFileKind::Weight => "model",
        ModelFileKind::WeightConfig => "modelpart",
        ModelFileKind::Doc => "docs",
        ModelFileKind::Code => "code",
        ModelFileKind::Dataset => "dataset",
    };
    format!("{}{name}.v1.{}", media::KITOPS_LAYER_PREFIX, format.suffix())
}
