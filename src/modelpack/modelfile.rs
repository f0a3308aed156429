//! Model description files: modctl's `Modelfile` and KitOps' `Kitfile`.
//!
//! A Modelfile is one instruction a line (`#` starts a comment): `NAME`, `ARCH`, `FAMILY`,
//! `FORMAT`, `PARAMSIZE`, `PRECISION`, `QUANTIZATION` take a value; `CONFIG`, `MODEL`, `CODE`,
//! `DOC`, `DATASET` take a glob naming files of that kind (repeatable). A Kitfile is KitOps'
//! YAML (`manifestVersion`, `package`, `model` with `parts`, `code`, `datasets`, `docs`); it is
//! also what a ModelKit's config holds (as JSON).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelFileKind;
use crate::error::{Error, IoContext, Result};

/// Largest Modelfile or Kitfile read (real ones are well under 64 KiB).
pub const MAX_DESCRIPTION_FILE: u64 = 1 << 20;

/// A parsed modctl Modelfile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modelfile {
    /// `NAME`.
    pub name: Option<String>,
    /// `ARCH`.
    pub arch: Option<String>,
    /// `FAMILY`.
    pub family: Option<String>,
    /// `FORMAT`.
    pub format: Option<String>,
    /// `PARAMSIZE`.
    pub param_size: Option<String>,
    /// `PRECISION`.
    pub precision: Option<String>,
    /// `QUANTIZATION`.
    pub quantization: Option<String>,
    /// `CONFIG`/`MODEL`/`CODE`/`DOC`/`DATASET` globs with the kind they give, in file order.
    pub globs: Vec<(ModelFileKind, String)>,
}

/// Read a bounded text file (a Modelfile or Kitfile).
pub(crate) fn read_bounded(path: &Path) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).at(path)?;
    let mut buf = Vec::new();
    f.take(MAX_DESCRIPTION_FILE + 1).read_to_end(&mut buf).at(path)?;
    if buf.len() as u64 > MAX_DESCRIPTION_FILE {
        return Err(Error::malformed(
            "model description",
            path.display().to_string(),
            format!("larger than {MAX_DESCRIPTION_FILE} bytes"),
        ));
    }
    String::from_utf8(buf).map_err(|_| Error::malformed("model description", path.display().to_string(), "not UTF-8"))
}

impl Modelfile {
    /// Parse Modelfile text; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Modelfile> {
        let mut m = Modelfile::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |r: String| Error::malformed("Modelfile", format!("{what}:{}", i + 1), r);
            let (cmd, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let arg = arg.trim();
            if arg.is_empty() {
                return Err(bad(format!("{cmd} needs a value")));
            }
            let value = Some(arg.to_string());
            match cmd.to_ascii_uppercase().as_str() {
                "NAME" => m.name = value,
                "ARCH" => m.arch = value,
                "FAMILY" => m.family = value,
                "FORMAT" => m.format = value,
                "PARAMSIZE" => m.param_size = value,
                "PRECISION" => m.precision = value,
                "QUANTIZATION" => m.quantization = value,
                "CONFIG" => m.globs.push((ModelFileKind::WeightConfig, arg.into())),
                "MODEL" => m.globs.push((ModelFileKind::Weight, arg.into())),
                "CODE" => m.globs.push((ModelFileKind::Code, arg.into())),
                "DOC" => m.globs.push((ModelFileKind::Doc, arg.into())),
                "DATASET" => m.globs.push((ModelFileKind::Dataset, arg.into())),
                other => return Err(bad(format!("unknown instruction {other}"))),
            }
        }
        Ok(m)
    }

    /// Read and parse a Modelfile.
    pub fn load(path: &Path) -> Result<Modelfile> {
        Modelfile::parse(&read_bounded(path)?, &path.display().to_string())
    }
}

/// A KitOps Kitfile (<https://kitops.org/docs/kitfile/format/>), fields in KitOps' order.
/// Unknown fields are ignored when reading.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kitfile {
    /// `manifestVersion`, e.g. `1.0.0`.
    #[serde(default)]
    pub manifest_version: String,
    /// `package`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<KitPackage>,
    /// `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<KitModel>,
    /// `code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<KitPath>,
    /// `datasets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<KitPath>,
    /// `docs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<KitPath>,
}

/// Kitfile `package`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitPackage {
    /// Package name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Package version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// License (SPDX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Authors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
}

/// Kitfile `model`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitModel {
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path of the weights (file or directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Framework (`pytorch`, `onnx`, a base model name, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// Model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// License.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Format of the weights (`safetensors`, `gguf`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Further files of the model (tokenizer, adapters, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<KitPath>,
    /// Free-form parameters (hoist keeps the ModelPack `config` fields here when converting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// The layer holding `path` (in a ModelKit's config, not in a Kitfile on disk).
    #[serde(flatten)]
    pub layer: KitLayerInfo,
}

/// Which layer a Kitfile entry became: KitOps writes these into the config of a ModelKit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitLayerInfo {
    /// Digest of the layer blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Digest of the uncompressed layer.
    #[serde(default, rename = "diffId", skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
}

/// A path entry of a Kitfile (`code`, `datasets`, `docs`, `model.parts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitPath {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path (file or directory).
    #[serde(default)]
    pub path: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// License.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The layer holding `path` (in a ModelKit's config).
    #[serde(flatten)]
    pub layer: KitLayerInfo,
}

impl Kitfile {
    /// Parse Kitfile YAML (or the JSON a ModelKit config holds: JSON is YAML).
    pub fn parse(text: &str, what: &str) -> Result<Kitfile> {
        serde_yaml_ng::from_str(text).map_err(|e| Error::malformed("Kitfile", what, e.to_string()))
    }

    /// Read and parse a Kitfile.
    pub fn load(path: &Path) -> Result<Kitfile> {
        Kitfile::parse(&read_bounded(path)?, &path.display().to_string())
    }

    /// The kind each Kitfile path gives the files under it: `model.path` weights,
    /// `model.parts` weight configs, then code, datasets, docs.
    pub fn kinds(&self) -> Vec<(ModelFileKind, String)> {
        let mut out = Vec::new();
        if let Some(m) = &self.model {
            if let Some(p) = &m.path {
                out.push((ModelFileKind::Weight, norm(p)));
            }
            out.extend(m.parts.iter().map(|p| (ModelFileKind::WeightConfig, norm(&p.path))));
        }
        out.extend(self.code.iter().map(|p| (ModelFileKind::Code, norm(&p.path))));
        out.extend(self.datasets.iter().map(|p| (ModelFileKind::Dataset, norm(&p.path))));
        out.extend(self.docs.iter().map(|p| (ModelFileKind::Doc, norm(&p.path))));
        out
    }
}

/// `./a/b/` -> `a/b`; `.` -> `` (everything).
fn norm(p: &str) -> String {
    let p = p.trim();
    let p = p.strip_prefix("./").unwrap_or(p);
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Whether the relative file `rel` is `path` or lies under it (Kitfile paths name files or
/// directories; an empty path is the whole model directory).
pub fn under(rel: &str, path: &str) -> bool {
    path.is_empty() || rel == path || rel.strip_prefix(path).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modelfile_parses_and_refuses_unknown() {
        let m = Modelfile::parse("# c\nNAME qwen\nPARAMSIZE 0.6B\nMODEL *.safetensors\nDOC README.md\n", "t").unwrap();
        assert_eq!(m.name.as_deref(), Some("qwen"));
        assert_eq!(m.param_size.as_deref(), Some("0.6B"));
        assert_eq!(m.globs.len(), 2);
        assert!(Modelfile::parse("FROM x\n", "t").is_err());
        assert!(Modelfile::parse("NAME\n", "t").is_err());
    }

    #[test]
    fn kitfile_paths() {
        let k = Kitfile::parse(
            "manifestVersion: 1.0.0\npackage: {name: n, authors: [a]}\nmodel: {path: ./models/, parts: [{path: tok.json}]}\ncode: [{path: src}]\n",
            "t",
        )
        .unwrap();
        let kinds = k.kinds();
        assert_eq!(kinds[0], (ModelFileKind::Weight, "models".into()));
        assert!(under("models/a.bin", "models") && !under("modelsx/a", "models") && under("src", "src"));
    }
}
