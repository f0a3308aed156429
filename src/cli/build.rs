//! `hoist build`: build an image from a `hoist.toml` build file into the local store,
//! then write it to each `--output`.

use std::path::PathBuf;

use clap::Args;
use hoist::build::{build_image, BaseImage, BuildFile, Compression};
use hoist::error::{Error, Result};
use hoist::output::OutputSpec;

use super::store::{apply_default_tag, deliver, resolve_any, OutputArgs};
use super::Ctx;

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Build file (see docs/build-file.md).
    #[arg(short = 'f', long = "file", default_value = "hoist.toml")]
    pub file: PathBuf,
    /// Tag in the store (overrides `tag`); its tag part also names unnamed layout/OCI outputs.
    #[arg(short, long)]
    pub tag: Option<String>,
    /// Layer compression: none, gzip[:0-9], zstd[:1-22] (overrides `compression`).
    #[arg(long, value_name = "ALG[:LEVEL]")]
    pub compression: Option<Compression>,
    /// Base image in any transport (overrides `base`).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Store the files that symlinks leading out of a source directory point to (refused otherwise).
    #[arg(long)]
    pub follow_symlinks: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub(crate) async fn run(ctx: &Ctx, args: BuildArgs) -> Result<i32> {
    let mut spec = BuildFile::load(&args.file)?;
    if let Some(t) = &args.tag {
        spec.tag = Some(t.clone());
    }
    if let Some(c) = args.compression {
        spec.compression = c;
    }
    if let Some(b) = &args.base {
        spec.base = Some(b.clone());
    }
    spec.follow_symlinks |= args.follow_symlinks;
    // The global --platform takes a comma-separated list here.
    if !ctx.settings.platform_names.is_empty() {
        spec.platforms = ctx.settings.platform_names.clone();
    }
    let mut outputs = args.out.parse()?;
    apply_output_keys(&mut spec, &outputs, args.compression.is_some())?;
    apply_default_tag(&mut outputs, spec.tag.as_deref());
    let store = args.out.open_store()?;
    let root = match &spec.base {
        Some(b) => {
            let (_, src, base_root) = resolve_any(ctx, b).await?;
            ctx.progress.line(&format!("base {b}: {}", base_root.digest));
            let base = BaseImage { source: src.as_ref(), root: base_root, name: Some(b.clone()) };
            build_image(&store, &spec, Some(base)).await?
        }
        None => build_image(&store, &spec, None).await?,
    };
    ctx.progress.line(&format!("built {} ({}) in oci:{}", root.digest, root.media_type, store.root().display()));
    deliver(ctx, &store, &root, &outputs, args.out.metadata_file.as_deref()).await
}

/// The `--output` keys that change what is built, applied to the one build: annotations are
/// added to the manifests (and to the index a multi-platform build makes), `compression=` and
/// `compression-level=` choose the layer compression. One build serves every output, so
/// outputs that set the same key must agree, and `--compression` must agree with them.
/// `force-compression=true` is honoured when every layer is built here (no base image).
fn apply_output_keys(spec: &mut hoist::build::ImageSpec, outputs: &[OutputSpec], flag: bool) -> Result<()> {
    let mut compression: Option<String> = None;
    for o in outputs {
        for (k, v) in o.annotations() {
            if let Some(old) = spec.annotations.get(&k).filter(|old| **old != v) {
                return Err(Error::Usage(format!(
                    "--output annotation {k}: {v:?} differs from {old:?} (one build serves every output)"
                )));
            }
            spec.annotations.insert(k, v);
        }
        if let Some(c) = o.compression() {
            match &compression {
                Some(prev) if *prev != c => {
                    return Err(Error::Usage(format!(
                        "--output compression {c} differs from {prev} (one build serves every output)"
                    )))
                }
                _ => compression = Some(c),
            }
        }
        if o.force_compression() && spec.base.is_some() {
            return Err(Error::Unsupported(
                "--output force-compression=true: hoist keeps a base image's layers as they are; build without a base or drop the key".into(),
            ));
        }
    }
    if let Some(c) = compression {
        let parsed: Compression = c.parse()?;
        if flag && parsed != spec.compression {
            return Err(Error::Usage(format!("--compression and --output compression={c} disagree")));
        }
        spec.compression = parsed;
    }
    Ok(())
}
