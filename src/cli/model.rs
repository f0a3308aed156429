//! `hoist model pack|unpack`: CNCF ModelPack artifacts from a model directory and back.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use hoist::build::{build_model, unpack_model_with, ModelLayerFormat, ModelSpec, UnpackOptions};
use hoist::error::Result;

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

#[derive(Subcommand)]
pub(crate) enum ModelCmd {
    /// Pack a model directory as a ModelPack artifact (like `modctl build`).
    #[command(
        after_help = "Examples:\n  hoist model pack ./my-model --name my-model --output type=registry,name=localhost:5000/model:v1\n  hoist model pack ./my-model --layer-format tar+zstd --output type=oci,dest=model.tar"
    )]
    Pack {
        /// The model directory (weights, config, tokenizer, docs, code).
        dir: PathBuf,
        /// Model name (config `descriptor.name`).
        #[arg(long)]
        name: Option<String>,
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
    },
}

pub(crate) async fn run(ctx: &Ctx, cmd: ModelCmd) -> Result<i32> {
    match cmd {
        ModelCmd::Pack { dir, name, layer_format, tag, follow_symlinks, out } => {
            let mut outputs = out.parse_for("model pack")?;
            apply_default_tag(&mut outputs, tag.as_deref());
            let mut spec = ModelSpec::new(dir);
            spec.name = name;
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
        ModelCmd::Unpack { reference, dir, max_size } => {
            let (_, src, root) = resolve_any(ctx, &reference).await?;
            let written = unpack_model_with(src.as_ref(), &root, &dir, &UnpackOptions { max_size }).await?;
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
