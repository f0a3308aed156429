//! `hoist model pack|describe|unpack|diff|convert`: CNCF ModelPack (or KitOps ModelKit)
//! artifacts from a model directory and back, and conversion between the formats.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use hoist::error::{printable, Error, Result};
use hoist::modelpack::{
    build_model_with, describe_model, diff_models, list_model, unpack_model_with, FileSelector, ModelLayerFormat,
    ModelSpec, UnpackOptions,
};

use std::collections::HashMap;
use std::sync::Arc;

use hoist::modelpack::hf::{self, HfRef, HfRepo};
use hoist::modelpack::plan_dir_model_with;
use hoist::modelpack::{convert_model, ModelTarget};
use hoist::transport::Source;

use super::creds::{registry_of, registry_of_output};
use super::out::outln;
use super::resolve_any;
use super::store::{apply_default_tag, deliver, prune_old_untagged, OutputArgs};
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

/// The model artifact format to write (`--to`).
#[derive(Clone, Copy, Default, ValueEnum)]
pub(crate) enum ToFormat {
    /// CNCF ModelPack (what modctl and modelpack-client read).
    #[default]
    Modelpack,
    /// KitOps ModelKit (what `kit` reads).
    Modelkit,
}

impl From<ToFormat> for ModelTarget {
    fn from(f: ToFormat) -> Self {
        match f {
            ToFormat::Modelpack => ModelTarget::ModelPack,
            ToFormat::Modelkit => ModelTarget::ModelKit,
        }
    }
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
    /// Pack a model directory, or a Hugging Face repo (`hf://ORG/REPO[@REVISION]`), as a
    /// ModelPack artifact (like `modctl build`) or a KitOps ModelKit (`--to modelkit`, like
    /// `kit pack`). With outputs and no `--store`, raw layers go straight from the files (or
    /// the hub) to each output; nothing is stored locally.
    #[command(
        after_help = "Examples:\n  hoist model pack ./my-model --name my-model --output type=registry,name=localhost:5000/model:v1\n  hoist model pack ./my-model --layer-format tar+zstd --output type=oci,dest=model.tar\n  hoist model pack ./my-model --to modelkit --output type=registry,name=localhost:5000/kit:v1"
    )]
    Pack {
        /// The model directory (weights, config, tokenizer, docs, code).
        dir: PathBuf,
        /// Hugging Face token (for private or gated repos).
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        hf_token: Option<String>,
        #[command(flatten)]
        describe: Box<DescribeArgs>,
        /// Layer format of every file.
        #[arg(long, value_enum, default_value = "raw")]
        layer_format: LayerFormat,
        /// Artifact format: a ModelPack, or a KitOps ModelKit (config = the Kitfile as JSON).
        #[arg(long, value_enum, default_value = "modelpack")]
        to: ToFormat,
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
    #[command(
        after_help = "Examples:\n  hoist model describe ./my-model\n  hoist model describe ./my-model --modelfile Modelfile --precision bf16"
    )]
    Describe {
        /// The model directory to describe (weights, config.json, Modelfile, Kitfile).
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
        /// Verify the artifact's signature by this public key before any file is written: a
        /// cosign signature, or else an OpenSSF model signature referrer (`hoist model sign`).
        #[arg(long, value_name = "PUB")]
        verify_key: Vec<PathBuf>,
        #[command(flatten)]
        policy: super::trust::PolicyArgs,
    },
    /// Sign a model in the OpenSSF model-signing format (`model_signing sign key`): a model
    /// directory gets `model.sig`; a model artifact gets the signature attached as a referrer.
    #[command(
        after_help = "Examples:\n  hoist model sign --key cosign.key ./my-model          # writes ./my-model/model.sig\n  hoist model sign --key cosign.key localhost:5000/model:v1"
    )]
    Sign(super::modelsig::ModelSignArgs),
    /// Verify an OpenSSF model signature (`model_signing verify key`): every file as signed,
    /// none missing, none added (exit 5 otherwise, naming the files).
    #[command(
        after_help = "Examples:\n  hoist model verify --key cosign.pub ./my-model\n  hoist --format json model verify --key cosign.pub localhost:5000/model:v1"
    )]
    Verify(super::modelsig::ModelVerifyArgs),
    /// Files added, removed and changed (by layer digest), and config fields changed, from
    /// model A to model B; exit 1 when they differ, as diff(1).
    #[command(
        after_help = "Examples:\n  hoist model diff localhost:5000/model:v1 localhost:5000/model:v2   # exit 1: they differ\n  hoist model diff oci:./models:v1 oci:./models:v2 --format json   # exit 1: they differ"
    )]
    Diff {
        /// The older model (any transport).
        a: String,
        /// The newer model (any transport).
        b: String,
    },
    /// Convert a model artifact (ModelPack, KitOps ModelKit or Docker Model Runner) to a
    /// ModelPack or a ModelKit: only the manifest and config change, every layer keeps its
    /// digest, so between repositories of one registry only two small documents are uploaded.
    #[command(
        after_help = "Examples:\n  hoist model convert localhost:5000/kit:v1 localhost:5000/model:v1 --to modelpack\n  hoist model convert oci:./models:v1 oci:./kits:v1 --to modelkit\n  hoist model convert oci:./models:v2 localhost:5000/kit:v2 --to modelkit"
    )]
    Convert {
        /// The model artifact to convert, in any source transport.
        src: String,
        /// Where the converted artifact goes, in any destination transport.
        dst: String,
        /// The format to convert to.
        #[arg(long, value_enum, default_value = "modelpack")]
        to: ToFormat,
    },
}

/// For a re-run of an `hf://` pack: the layers of what the first output already holds when it
/// was packed from the same repo and commit (by path), so small files need no download to be
/// hashed, and what its config said the files describe. Anything that does not fit gives an
/// empty map.
async fn known_layers(
    ctx: &Ctx,
    outputs: &[hoist::output::OutputSpec],
    source_url: &str,
    commit: &str,
) -> (HashMap<String, hoist::model::descriptor::Descriptor>, Option<hoist::modelpack::Described>) {
    let mut out = HashMap::new();
    let none = (HashMap::new(), None);
    let Some(o) = outputs.iter().find(|o| !o.local_only) else { return none };
    let ep = o.endpoint.clone();
    let Ok(src) = hoist::transport::open_source(&ep, &ctx.client) else { return none };
    let Ok(root) = hoist::copy::plan::resolve(&ep, src.as_ref()).await else { return none };
    let Ok(doc) = src.fetch_document(&root).await else { return none };
    let hoist::model::document::View::Manifest(m) = &doc.view else { return none };
    if m.config.size > 1 << 20 {
        return none;
    }
    let Ok(mut stream) = src.open_blob(&m.config, 0).await else { return none };
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt;
    if (&mut stream).take(1 << 20).read_to_end(&mut buf).await.is_err()
        || hoist::model::digest::Digest::sha256_of(&buf) != m.config.digest
    {
        return none;
    }
    let Some((described, revision, source)) = hoist::modelpack::Described::from_config(&buf) else { return none };
    if revision.as_deref() != Some(commit) || source.as_deref() != Some(source_url) {
        return none;
    }
    for l in &m.layers {
        if let Some(p) = l.annotations.get(hoist::model::media::ANNOTATION_MODEL_FILEPATH) {
            out.insert(p.clone(), l.clone());
        }
    }
    (out, Some(described))
}

/// Copy a planned model to every output (and into `--store` when given), print the digest;
/// `--to modelkit` converts its two documents on the way.
async fn deliver_plan(
    ctx: &Ctx,
    plan: &dyn Source,
    root: &hoist::model::descriptor::Descriptor,
    to: ToFormat,
    outputs: &[hoist::output::OutputSpec],
    out: &OutputArgs,
    signer: Option<&hoist::trust::sign::Signer>,
) -> Result<i32> {
    let converted = convert_model(plan, root, to.into()).await?;
    let plan: &dyn Source = &converted;
    let root = converted.root().clone();
    if outputs.is_empty() && out.store.is_none() {
        return Err(Error::Usage("name an --output (or --store) to pack into".into()));
    }
    if out.store.is_some() {
        let store = out.open_store()?;
        let report = hoist::copy::graph(plan, &store, &root, &[], &ctx.copy_options(), &ctx.progress).await?;
        ctx.progress.line(&format!(
            "{} -> oci:{}: {} blob(s) written",
            root.digest,
            store.root().display(),
            report.blobs_uploaded
        ));
    }
    let results =
        hoist::output::export(plan, &root, outputs, &ctx.client, None, &ctx.copy_options(), &ctx.progress).await?;
    for r in &results {
        ctx.progress.line(&format!(
            "{} -> {}: {} blob(s) written, {} existed",
            root.digest, r.destination, r.report.blobs_uploaded, r.report.blobs_existed
        ));
    }
    let signatures = super::trust::sign_outputs(ctx, signer, &root, outputs).await?;
    if let Some(path) = out.metadata_file.as_deref() {
        hoist::output::write_metadata(path, &root, outputs, &std::collections::BTreeMap::new())?;
    }
    super::store::print_delivered(ctx, &root, None, &results, signer.is_some().then_some(&signatures[..]));
    Ok(0)
}

impl ModelCmd {
    /// Every registry this command names (for `--creds`).
    pub(crate) fn registries(&self) -> Vec<String> {
        let outputs = |o: &OutputArgs| o.outputs.iter().filter_map(|s| registry_of_output(s)).collect::<Vec<_>>();
        match self {
            ModelCmd::Pack { out, .. } => outputs(out),
            ModelCmd::Describe { .. } => vec![],
            ModelCmd::Unpack { reference, .. } => registry_of(reference).into_iter().collect(),
            ModelCmd::Sign(a) => registry_of(&a.model).into_iter().collect(),
            ModelCmd::Verify(a) => registry_of(&a.model).into_iter().collect(),
            ModelCmd::Diff { a, b } | ModelCmd::Convert { src: a, dst: b, .. } => {
                [a, b].iter().filter_map(|r| registry_of(r)).collect()
            }
        }
    }
}

/// The model directory a command reads: a missing one is bad input (exit 2) naming it.
fn must_be_dir(command: &str, dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let why = if dir.exists() { "is not a directory" } else { "no such directory" };
    Err(Error::Usage(format!("{command} {}: {why}", dir.display())))
}

pub(crate) async fn run(ctx: &Ctx, cmd: ModelCmd) -> Result<i32> {
    match cmd {
        ModelCmd::Sign(args) => super::modelsig::run_sign(ctx, args).await,
        ModelCmd::Verify(args) => super::modelsig::run_verify(ctx, args).await,
        ModelCmd::Describe { dir, describe } => {
            must_be_dir("model describe", &dir)?;
            let mut spec = ModelSpec::new(dir);
            describe.apply(&mut spec)?;
            let meta = describe_model(&spec)?;
            let bytes = meta.config_bytes(vec![])?;
            outln!("{}", String::from_utf8_lossy(&bytes));
            Ok(0)
        }
        ModelCmd::Pack { dir, hf_token, describe, layer_format, to, tag, follow_symlinks, out } => {
            let mut outputs = out.parse_for("model pack")?;
            apply_default_tag(&mut outputs, tag.as_deref());
            let signer = out.sign.load_for_outputs(&outputs)?;
            if let Some(r) = dir.to_str().and_then(HfRef::parse) {
                let r = r?;
                let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty());
                let endpoint = endpoint.as_deref().unwrap_or(hf::DEFAULT_ENDPOINT);
                let repo = Arc::new(HfRepo::open(ctx.client.clone(), endpoint, hf_token, &r).await?);
                ctx.progress.line(&format!("hf://{}@{} is commit {}", r.repo, r.revision, repo.commit));
                let mut spec = ModelSpec::new(".");
                describe.apply(&mut spec)?;
                spec.tag = tag;
                let (known, previous) = known_layers(ctx, &outputs, &repo.source_url(), &repo.commit).await;
                let plan = hf::plan_hf_model(repo, &spec, &spec.select.clone(), &known, previous).await?;
                return deliver_plan(ctx, &plan, plan.root(), to, &outputs, &out, signer.as_ref()).await;
            }
            must_be_dir("model pack", &dir)?;
            let mut spec = ModelSpec::new(dir);
            describe.apply(&mut spec)?;
            let direct = out.store.is_none()
                && !outputs.is_empty()
                && outputs.iter().all(|o| !o.local_only)
                && matches!(layer_format, LayerFormat::Raw);
            if direct {
                spec.follow_symlinks = follow_symlinks;
                let plan = plan_dir_model_with(&spec, Arc::new(ctx.progress.clone())).await?;
                return deliver_plan(ctx, &plan, plan.root(), to, &outputs, &out, signer.as_ref()).await;
            }
            spec.layer_format = layer_format.into();
            let kit = matches!(to, ToFormat::Modelkit);
            spec.tag = if kit { None } else { tag.clone() };
            spec.follow_symlinks = follow_symlinks;
            let store = out.open_store()?;
            let mut root = build_model_with(&store, &spec, Arc::new(ctx.progress.clone())).await?;
            if kit {
                // The ModelPack just built, its two documents converted; the layers are shared.
                let converted = convert_model(&store, &root, ModelTarget::ModelKit).await?;
                let new_root = converted.root().clone();
                hoist::copy::graph(&converted, &store, &new_root, &[], &ctx.copy_options(), &ctx.progress).await?;
                match &tag {
                    Some(t) => store.set_tag(&new_root, t)?,
                    None => store.add_untagged(&new_root)?,
                }
                root = new_root;
            }
            ctx.progress.line(&format!("packed {} in oci:{}", root.digest, store.root().display()));
            let code = deliver(ctx, &store, &root, &outputs, out.metadata_file.as_deref(), signer.as_ref()).await?;
            let dir = store.root().to_path_buf();
            drop(store);
            prune_old_untagged(ctx, &dir).await;
            Ok(code)
        }
        ModelCmd::Convert { src, dst, to } => {
            let (src_ep, source, root) = resolve_any(ctx, &src).await?;
            let dst_ep = hoist::transport::Endpoint::from_user_input(&dst)?;
            let converted = convert_model(source.as_ref(), &root, to.into()).await?;
            let tags: Vec<String> = match (dst_ep.tag(), src_ep.tag(), &dst_ep) {
                (Some(t), _, _) => vec![t],
                (None, Some(t), _) if dst_ep.reference().is_none() => vec![t],
                (None, _, hoist::transport::Endpoint::Registry(r)) if r.digest.is_none() => {
                    vec![hoist::copy::plan::default_tag().to_string()]
                }
                _ => vec![],
            };
            let dest = hoist::transport::open_destination(&dst_ep, &ctx.client, None).await?;
            let new_root = converted.root().clone();
            let report =
                hoist::copy::graph(&converted, dest.as_ref(), &new_root, &tags, &ctx.copy_options(), &ctx.progress)
                    .await?;
            dest.finish().await?;
            let r = &converted.report;
            if ctx.json() {
                let v =
                    serde_json::json!({"convert": r, "destination": dest.location(), "tags": tags, "report": report});
                outln!("{v}");
            } else {
                outln!("{}", new_root.digest);
            }
            ctx.progress.line(&format!(
                "{src} ({}) -> {dst} ({}): {} layer(s) kept, {} blob(s) written, {} existed{}",
                r.from,
                match r.to {
                    ModelTarget::ModelPack => "modelpack",
                    ModelTarget::ModelKit => "modelkit",
                },
                r.layers,
                report.blobs_uploaded,
                report.blobs_existed,
                if r.unchanged { " (already in that format: copied unchanged)" } else { "" }
            ));
            Ok(0)
        }
        ModelCmd::Diff { a, b } => {
            let (_, sa, ra) = resolve_any(ctx, &a).await?;
            let (_, sb, rb) = resolve_any(ctx, &b).await?;
            let d = diff_models((sa.as_ref(), &ra), (sb.as_ref(), &rb)).await?;
            if ctx.json() {
                outln!("{}", serde_json::to_string(&d).map_err(|e| Error::serialize("model descriptor", e))?);
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
                let shown =
                    |v: &Option<String>| v.as_deref().map_or_else(|| "(unset)".to_string(), |s| format!("{s:?}"));
                for c in &d.config {
                    outln!("~ {}: {} -> {}", c.field, printable(&shown(&c.from)), printable(&shown(&c.to)));
                }
            }
            ctx.progress.line(&format!(
                "{} added, {} removed, {} changed, {} unchanged; {} config field(s) differ",
                d.added.len(),
                d.removed.len(),
                d.changed.len(),
                d.unchanged.len(),
                d.config.len()
            ));
            // As diff(1): 0 when the models are the same, 1 when they differ.
            Ok(if d.differs() { 1 } else { 0 })
        }
        ModelCmd::Unpack { reference, dir, max_size, include, exclude, list, verify_key, policy } => {
            let (ep, src, root) = resolve_any(ctx, &reference).await?;
            policy.check(&ep, src.as_ref(), &root).await?;
            if !verify_key.is_empty() {
                let keys = verify_key.iter().map(|k| hoist::trust::PublicKey::load(k)).collect::<Result<Vec<_>>>()?;
                hoist::trust::verify::verify_model_artifact(&ep, src.as_ref(), &root, &keys).await?;
            }
            let select = FileSelector::new(&include, &exclude)?;
            let nothing_matched = || {
                Error::Usage(format!(
                    "--include {} --exclude {}: no file of {reference} matches (`hoist model unpack --list {reference}` lists them)",
                    include.join(","),
                    exclude.join(","),
                ))
            };
            if list {
                let entries = list_model(src.as_ref(), &root, &select).await?;
                if entries.is_empty() && !select.is_all() {
                    return Err(nothing_matched());
                }
                if ctx.json() {
                    outln!("{}", serde_json::to_string(&entries).map_err(|e| Error::serialize("model entries", e))?);
                } else {
                    for e in &entries {
                        outln!("{}\t{}\t{}\t{}", e.digest, e.size, e.media_type, e.path);
                    }
                }
                return Ok(0);
            }
            let existed = dir.exists();
            let all = select.is_all();
            let written = unpack_model_with(src.as_ref(), &root, &dir, &UnpackOptions { max_size, select }).await?;
            if written.is_empty() && !all {
                if !existed {
                    // Only the empty directory unpack made; nothing of the user's.
                    let _ = std::fs::remove_dir(&dir);
                }
                return Err(nothing_matched());
            }
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
