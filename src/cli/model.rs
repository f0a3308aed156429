//! `hoist model pack|describe|unpack`: CNCF ModelPack artifacts from a model directory and back.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use hoist::build::{
    build_model, describe_model, diff_models, list_model, unpack_model_with, FileSelector, ModelLayerFormat, ModelSpec,
    UnpackOptions,
};
use hoist::error::Result;

use super::creds::{registry_of, registry_of_output};
use super::out::outln;
use super::store::{apply_default_tag, deliver, prune_old_untagged, resolve_any, OutputArgs};
use super::Ctx;

/// How each file becomes a layer (`--layer-format`; `--format` is the global output format).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LayerFormat {
    Raw,
    Tar,
    #[value(name = "tar+gzip")]
    TarGzip,
    #[value(name = "tar+zstd")]
    TarZstd,
}

impl From<LayerFormat> for ModelLayerFormat {
    fn from(f: LayerFormat) -> Self {
        match f {
            LayerFormat::Raw => ModelLayerFormat::Raw,
            LayerFormat::Tar => ModelLayerFormat::Tar,
            LayerFormat::TarGzip => ModelLayerFormat::TarGzip,
            LayerFormat::TarZstd => ModelLayerFormat::TarZstd,
        }
    }
}

/// What the config says about the model; each flag overrides what the files, a Modelfile and
/// a Kitfile say.
#[derive(Args, Clone, Default)]
pub(crate) struct DescribeArgs {
    /// Model name (config `descriptor.name`).
    #[arg(long)]
    name: Option<String>,
    /// `descriptor.version`.
    #[arg(long = "model-version", visible_alias = "version-of-model", value_name = "VERSION")]
    version: Option<String>,
    /// `descriptor.family`, e.g. `qwen3`.
    #[arg(long)]
    family: Option<String>,
    /// `config.architecture`, e.g. `transformer`.
    #[arg(long)]
    arch: Option<String>,
    /// `config.format`, e.g. `safetensors` (`--format` is the output format of every command).
    #[arg(long = "model-format", value_name = "FORMAT")]
    model_format: Option<String>,
    /// `config.paramSize`, e.g. `0.6B`.
    #[arg(long)]
    param_size: Option<String>,
    /// `config.precision`, e.g. `bf16`.
    #[arg(long)]
    precision: Option<String>,
    /// `config.quantization`, e.g. `awq`, `Q4_K_M`.
    #[arg(long)]
    quantization: Option<String>,
    /// `descriptor.authors` (repeatable).
    #[arg(long = "author")]
    authors: Vec<String>,
    /// `descriptor.licenses` (repeatable).
    #[arg(long = "license")]
    licenses: Vec<String>,
    /// `descriptor.title`.
    #[arg(long)]
    title: Option<String>,
    /// `descriptor.description`.
    #[arg(long)]
    description: Option<String>,
    /// `descriptor.sourceURL`.
    #[arg(long = "source-url")]
    source_url: Option<String>,
    /// `descriptor.revision`.
    #[arg(long)]
    revision: Option<String>,
    /// A modctl Modelfile [default: DIR/Modelfile when there is one].
    #[arg(long, value_name = "FILE")]
    modelfile: Option<PathBuf>,
    /// A KitOps Kitfile [default: DIR/Kitfile when there is one].
    #[arg(long, value_name = "FILE")]
    kitfile: Option<PathBuf>,
    /// Pack only files matching GLOB (repeatable; relative to the model root).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

impl DescribeArgs {
    fn apply(&self, spec: &mut ModelSpec) -> Result<()> {
        spec.name.clone_from(&self.name);
        spec.version.clone_from(&self.version);
        spec.family.clone_from(&self.family);
        spec.architecture.clone_from(&self.arch);
        spec.format.clone_from(&self.model_format);
        spec.param_size.clone_from(&self.param_size);
        spec.precision.clone_from(&self.precision);
        spec.quantization.clone_from(&self.quantization);
        spec.authors.clone_from(&self.authors);
        spec.licenses.clone_from(&self.licenses);
        spec.title.clone_from(&self.title);
        spec.description.clone_from(&self.description);
        spec.source_url.clone_from(&self.source_url);
        spec.revision.clone_from(&self.revision);
        spec.modelfile.clone_from(&self.modelfile);
        spec.kitfile.clone_from(&self.kitfile);
        spec.select = FileSelector::new(&self.include, &self.exclude)?;
        Ok(())
    }
}

#[derive(Subcommand)]
pub(crate) enum ModelCmd {
    /// Pack a model directory as a ModelPack artifact (like `modctl build`).
    #[command(
        after_help = "Examples:\n  hoist model pack ./my-model --name my-model --output type=registry,name=localhost:5000/model:v1\n  hoist model pack ./my-model --layer-format tar+zstd --output type=oci,dest=model.tar"
    )]
    Pack {
        /// The model directory (weights, config, tokenizer, docs, code).
        dir: PathBuf,
        #[command(flatten)]
        describe: Box<DescribeArgs>,
        /// Layer format of every file.
        #[arg(long, value_enum, default_value = "raw")]
        layer_format: LayerFormat,
        /// Tag in the store; its tag part also names unnamed layout/OCI outputs.
        #[arg(short, long)]
        tag: Option<String>,
        /// Pack what symlinks leading out of DIR point to (refused otherwise).
        #[arg(long)]
        follow_symlinks: bool,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Print the config `model pack` would write for DIR (without its layers).
    Describe {
        dir: PathBuf,
        #[command(flatten)]
        describe: Box<DescribeArgs>,
    },
    /// Restore the files of a model artifact (any transport) into DIR.
    #[command(
        after_help = "Examples:\n  hoist model unpack localhost:5000/model:v1 ./restored\n  hoist model unpack oci-archive:model.tar ./restored"
    )]
    Unpack {
        /// The model artifact, in any source transport.
        reference: String,
        /// Where to restore its files (created).
        dir: PathBuf,
        /// Most bytes one layer may expand to (tar layers are bounded by their declared size anyway).
        #[arg(long, value_name = "BYTES")]
        max_size: Option<u64>,
        /// Restore only files matching GLOB (repeatable); other layers are not fetched.
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// Leave out files matching GLOB (repeatable).
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// List the (matching) files with their digests and sizes; fetch nothing.
        #[arg(long)]
        list: bool,
    },
    /// Files added, removed and changed (by layer digest) from model A to model B.
    Diff { a: String, b: String },
}

impl ModelCmd {
    /// Every registry this command names (for `--creds`).
    pub(crate) fn registries(&self) -> Vec<String> {
        let outputs = |o: &OutputArgs| o.outputs.iter().filter_map(|s| registry_of_output(s)).collect::<Vec<_>>();
        match self {
            ModelCmd::Pack { out, .. } => outputs(out),
            ModelCmd::Describe { .. } => vec![],
            ModelCmd::Unpack { reference, .. } => registry_of(reference).into_iter().collect(),
            ModelCmd::Diff { a, b } => [a, b].iter().filter_map(|r| registry_of(r)).collect(),
        }
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: ModelCmd) -> Result<i32> {
    match cmd {
        ModelCmd::Describe { dir, describe } => {
            let mut spec = ModelSpec::new(dir);
            describe.apply(&mut spec)?;
            let meta = describe_model(&spec)?;
            let bytes = meta.config_bytes(vec![])?;
            outln!("{}", String::from_utf8_lossy(&bytes));
            Ok(0)
        }
        ModelCmd::Pack { dir, describe, layer_format, tag, follow_symlinks, out } => {
            let mut outputs = out.parse_for("model pack")?;
            apply_default_tag(&mut outputs, tag.as_deref());
            let mut spec = ModelSpec::new(dir);
            describe.apply(&mut spec)?;
            spec.layer_format = layer_format.into();
            spec.tag = tag;
            spec.follow_symlinks = follow_symlinks;
            let store = out.open_store()?;
            let root = build_model(&store, &spec).await?;
            ctx.progress.line(&format!("packed {} in oci:{}", root.digest, store.root().display()));
            let code = deliver(ctx, &store, &root, &outputs, out.metadata_file.as_deref()).await?;
            let dir = store.root().to_path_buf();
            drop(store);
            prune_old_untagged(ctx, &dir).await;
            Ok(code)
        }
        ModelCmd::Diff { a, b } => {
            let (_, sa, ra) = resolve_any(ctx, &a).await?;
            let (_, sb, rb) = resolve_any(ctx, &b).await?;
            let d = diff_models((sa.as_ref(), &ra), (sb.as_ref(), &rb)).await?;
            if ctx.json() {
                outln!("{}", serde_json::to_string(&d).map_err(|e| hoist::error::Error::Other(e.to_string()))?);
            } else {
                for e in &d.added {
                    outln!("+ {} {}", e.path, e.digest);
                }
                for e in &d.removed {
                    outln!("- {} {}", e.path, e.digest);
                }
                for (x, y) in &d.changed {
                    outln!("~ {} {} -> {}", x.path, x.digest, y.digest);
                }
            }
            ctx.progress.line(&format!(
                "{} added, {} removed, {} changed, {} unchanged",
                d.added.len(),
                d.removed.len(),
                d.changed.len(),
                d.unchanged.len()
            ));
            Ok(0)
        }
        ModelCmd::Unpack { reference, dir, max_size, include, exclude, list } => {
            let (_, src, root) = resolve_any(ctx, &reference).await?;
            let select = FileSelector::new(&include, &exclude)?;
            if list {
                let entries = list_model(src.as_ref(), &root, &select).await?;
                if ctx.json() {
                    outln!(
                        "{}",
                        serde_json::to_string(&entries).map_err(|e| hoist::error::Error::Other(e.to_string()))?
                    );
                } else {
                    for e in &entries {
                        outln!("{}\t{}\t{}\t{}", e.digest, e.size, e.media_type, e.path);
                    }
                }
                return Ok(0);
            }
            let written = unpack_model_with(src.as_ref(), &root, &dir, &UnpackOptions { max_size, select }).await?;
            if ctx.json() {
                outln!("{}", serde_json::json!({"digest": root.digest.to_string(), "dir": dir, "files": written}));
            } else {
                for p in &written {
                    outln!("{}", p.display());
                }
            }
            ctx.progress.line(&format!("{reference}: {} file(s) written to {}", written.len(), dir.display()));
            Ok(0)
        }
    }
}
