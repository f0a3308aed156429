//! `hoist index create` (merge per-platform manifests into one index) and `hoist bundle
//! create|pull|inspect` (CNAB bundles). Both plan with the library, then write each target with
//! `index::write`: children first (mounted within a registry), the index last.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hoist::bundle::{self, BundleFile, BundleInput, BundleSpec, Role};
use hoist::copy::plan;
use hoist::error::{printable, Error, Result};
use hoist::merge::{self, AnnotationSpec, Base, IndexOptions, Input, Plan};
use hoist::model::digest::Digest;
use hoist::model::reference::Reference;
use hoist::output::{parse_output, read_metadata, write_file_atomic, write_metadata, ExportResult, OutputSpec};
use hoist::transport::layout::tag_of_ref_name;
use hoist::transport::Source;
use hoist::transport::{open_destination, open_source, Endpoint};
use hoist::Descriptor;

use super::creds::{registry_of, registry_of_output};
use super::out::outln;
use super::Ctx;

#[derive(Subcommand)]
pub(crate) enum IndexCmd {
    /// Merge manifests and indexes (by tag or digest, from registries, layouts or archives)
    /// into one image index; copy every child to the target, then push the index.
    #[command(
        after_help = "Examples:\n  hoist index create --tag localhost:5000/app:v1 localhost:5000/app:amd64 localhost:5000/app:arm64\n  hoist index create --tag localhost:5000/app:v1 --from-metadata amd64.json --from-metadata arm64.json\n  hoist index create --dry-run oci:./a:v1 oci:./b:v1"
    )]
    Create(IndexCreate),
}

/// Where the result goes: `--tag` and `--output`.
#[derive(Args)]
pub(crate) struct Targets {
    /// Target of the index: REGISTRY/REPO:TAG, or any destination transport (oci:DIR:TAG, ...).
    #[arg(short, long)]
    tag: Option<String>,
    /// Also (or instead) write to this output (buildx syntax or a transport; repeatable).
    #[arg(short, long = "output")]
    outputs: Vec<String>,
    /// Print the index JSON to stdout and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write buildx-style metadata of the result to FILE.
    #[arg(long)]
    metadata_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct IndexCreate {
    #[command(flatten)]
    targets: Targets,
    /// Manifests or indexes: REF[:TAG|@DIGEST], oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG], ...
    sources: Vec<String>,
    /// Add a source from a buildx/hoist --metadata-file (its image name and digest; repeatable).
    #[arg(long = "from-metadata", value_name = "FILE")]
    from_metadata: Vec<PathBuf>,
    /// `k=v` or `index:k=v` for the index; `manifest:k=v` or `manifest[DIGEST|os/arch]:k=v` for entries.
    #[arg(long = "annotation", value_name = "[index:|manifest[SEL]:]K=V")]
    annotations: Vec<String>,
    /// artifactType of the index.
    #[arg(long)]
    artifact_type: Option<String>,
    /// Keep source indexes as nested entries instead of taking their manifests.
    #[arg(long)]
    keep_nested: bool,
    /// Keep two different manifests for the same platform instead of failing.
    #[arg(long)]
    allow_conflicts: bool,
    /// Add to the index already at --tag (keeping its entries and annotations).
    #[arg(long)]
    append: bool,
}

#[derive(Subcommand)]
// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum BundleCmd {
    /// Make a CNAB bundle (cnab-to-oci layout): bundle.json, invocation image, components.
    #[command(
        after_help = "Examples:\n  hoist bundle create --name app --version 1.0.0 --invocation localhost:5000/app-inv:v1 --tag localhost:5000/app-bundle:v1\n  hoist bundle create --name app --version 1.0.0 --invocation oci:./inv:v1 --component web=oci:./web:v1 --output type=oci,dest=bundle.tar\n  hoist bundle create --bundle-file bundle.json --tag localhost:5000/app-bundle:v1\n  hoist bundle create --bundle-file bundle.json --component web=oci:./web:v1 --tag localhost:5000/app-bundle:v1"
    )]
    Create(BundleCreate),
    /// Write a bundle's bundle.json and its relocation map (each image's original reference ->
    /// where it is now, REPO@DIGEST), as `cnab-to-oci pull` does.
    #[command(
        after_help = "Examples:\n  hoist bundle pull localhost:5000/app-bundle:v1\n  hoist bundle pull localhost:5000/app-bundle:v1 --bundle bundle.json --relocation-map map.json\n  hoist bundle pull oci:./bundle:v1 --bundle - --relocation-map map.json"
    )]
    Pull {
        /// Bundle reference (any source transport).
        reference: String,
        /// Where bundle.json goes (`-`: standard output).
        #[arg(long, value_name = "FILE", default_value = "pulled.json")]
        bundle: PathBuf,
        /// Where the relocation map goes (`-`: standard output).
        #[arg(long, value_name = "FILE", default_value = "relocation-map.json")]
        relocation_map: PathBuf,
    },
    /// List a bundle's name, version and images.
    #[command(
        after_help = "Examples:\n  hoist bundle inspect localhost:5000/app-bundle:v1\n  hoist --format json bundle inspect oci-archive:bundle.tar"
    )]
    Inspect {
        /// Bundle reference (any source transport).
        reference: String,
    },
}

#[derive(Args)]
pub(crate) struct BundleCreate {
    #[command(flatten)]
    targets: Targets,
    /// A whole CNAB bundle.json (actions, parameters, credentials, ...), kept as given: each
    /// image is read from its `image` reference, copied by digest, and its contentDigest,
    /// size, mediaType and imageType filled in (as `cnab-to-oci push`)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "version", "description", "keywords", "maintainers"])]
    bundle_file: Option<PathBuf>,
    /// Bundle name.
    #[arg(long, required_unless_present = "bundle_file")]
    name: Option<String>,
    /// Bundle version.
    #[arg(long, required_unless_present = "bundle_file")]
    version: Option<String>,
    /// Bundle description.
    #[arg(long)]
    description: Option<String>,
    /// A keyword (repeatable): bundle.json `keywords`, index annotation `io.cnab.keywords`
    #[arg(long = "keyword", value_name = "WORD")]
    keywords: Vec<String>,
    /// A maintainer `NAME[:EMAIL[:URL]]` or `NAME[ <EMAIL>][ (URL)]` (repeatable): bundle.json
    /// `maintainers`, index annotation `org.opencontainers.image.authors`
    #[arg(long = "maintainer", value_name = "NAME[:EMAIL[:URL]]")]
    maintainers: Vec<String>,
    /// The invocation image (any source transport); with --bundle-file, where to read it
    /// instead of its `image` reference (which bundle.json keeps)
    #[arg(long, value_name = "SRC", required_unless_present = "bundle_file")]
    invocation: Option<String>,
    /// A component image NAME=SRC (repeatable); with --bundle-file, where to read that
    /// image instead of its `image` reference
    #[arg(long = "component", value_name = "NAME=SRC")]
    components: Vec<String>,
}

/// A source the user named, opened and resolved.
struct Opened {
    source: Box<dyn Source>,
    endpoint: Endpoint,
    desc: Descriptor,
    label: String,
}

async fn open_resolved(ctx: &Ctx, ep: Endpoint, label: String) -> Result<Opened> {
    let source = open_source(&ep, &ctx.client)?;
    let desc = match (ep.reference(), &ep) {
        (Some(r), _) => source.resolve(Some(&r)).await?,
        (None, Endpoint::Registry(_)) => plan::resolve(&ep, source.as_ref()).await?,
        (None, _) => {
            let roots = source.roots().await?;
            match roots.as_slice() {
                [(d, _)] => d.clone(),
                [] => return Err(Error::not_found("any manifest", source.location())),
                many => {
                    let tags: Vec<&str> = many.iter().filter_map(|(_, t)| t.as_deref()).map(tag_of_ref_name).collect();
                    return Err(Error::InvalidReference {
                        reference: label,
                        reason: format!(
                            "holds {} roots ({}); name one with :TAG or @DIGEST",
                            many.len(),
                            tags.join(", ")
                        ),
                    });
                }
            }
        }
    };
    Ok(Opened { source, endpoint: ep, desc, label })
}

/// The source a metadata file names: `<repo of image.name>@<containerimage.digest>`.
async fn open_metadata(ctx: &Ctx, path: &std::path::Path) -> Result<Opened> {
    let (desc, names) = read_metadata(path)?;
    let name = names.first().ok_or_else(|| {
        Error::malformed("metadata file", path.display().to_string(), "no image.name to find the image by")
    })?;
    let r: Reference = name.parse()?;
    let r = r.with_target(&desc.digest.to_string())?;
    let label = format!("{}@{}", r.repo_ref(), desc.digest);
    let mut o = open_resolved(ctx, Endpoint::Registry(r), label).await?;
    if o.desc.platform.is_none() {
        o.desc.platform = desc.platform.clone();
    }
    Ok(o)
}

impl IndexCmd {
    /// Every registry the command line names (sources, metadata files, targets).
    pub(crate) fn registries(&self) -> Vec<String> {
        let IndexCmd::Create(a) = self;
        let mut v: Vec<String> = a.sources.iter().filter_map(|s| registry_of(s)).collect();
        for m in &a.from_metadata {
            let names = read_metadata(m).map(|(_, n)| n).unwrap_or_default();
            v.extend(names.iter().filter_map(|n| n.parse::<Reference>().ok()).map(|r| r.registry));
        }
        v.extend(a.targets.registries());
        v
    }

    /// The raw `--output` values.
    pub(crate) fn outputs(&self) -> &[String] {
        let IndexCmd::Create(a) = self;
        &a.targets.outputs
    }
}

impl BundleCmd {
    /// Every registry the command line names (images, targets).
    pub(crate) fn registries(&self) -> Vec<String> {
        match self {
            BundleCmd::Create(a) => {
                let mut v: Vec<String> = a.invocation.iter().filter_map(|i| registry_of(i)).collect();
                v.extend(a.components.iter().filter_map(|c| c.split_once('=')).filter_map(|(_, s)| registry_of(s)));
                if let Some(Ok(file)) = a.bundle_file.as_deref().map(read_bundle_file) {
                    let mut roles = vec![Role::Invocation];
                    roles.extend(file.component_names().into_iter().map(Role::Component));
                    v.extend(roles.iter().filter_map(|r| file.image_ref(r)).filter_map(registry_of));
                }
                v.extend(a.targets.registries());
                v
            }
            BundleCmd::Pull { reference, .. } | BundleCmd::Inspect { reference } => {
                registry_of(reference).into_iter().collect()
            }
        }
    }
}

impl Targets {
    /// The registries `--tag` and `--output` write to.
    fn registries(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tag.iter().filter_map(|t| registry_of(t)).collect();
        v.extend(self.outputs.iter().filter_map(|o| registry_of_output(o)));
        v
    }

    /// `--tag` and `--output` as outputs; a registry `--tag` without a tag means `latest`.
    fn specs(&self) -> Result<Vec<OutputSpec>> {
        let mut v = Vec::new();
        if let Some(t) = &self.tag {
            let mut ep = Endpoint::from_user_input(t)?;
            if let Endpoint::Registry(r) = &mut ep {
                if r.digest.is_some() {
                    return Err(Error::InvalidReference {
                        reference: t.clone(),
                        reason: "--tag takes a tag, not a digest".into(),
                    });
                }
                r.tag.get_or_insert_with(|| plan::default_tag().into());
            }
            let names = match &ep {
                Endpoint::Registry(r) => vec![r.to_string()],
                _ => vec![],
            };
            v.push(OutputSpec::new(ep.clone(), ep.tag().into_iter().collect(), names));
        }
        for o in &self.outputs {
            let spec = parse_output(o)?;
            spec.refuse_build_keys("index create")?;
            if spec.filesystem.is_some() {
                return Err(Error::Usage(format!(
                    "--output {o}: an index has no single filesystem; export one image with `hoist build` or `hoist copy`"
                )));
            }
            v.push(spec);
        }
        if v.is_empty() && !self.dry_run {
            return Err(Error::Usage("give --tag REF or --output to say where the result goes".into()));
        }
        Ok(v)
    }
}

/// Print (dry run) or write the plan to every target, then report.
async fn ship(ctx: &Ctx, plan: &Plan<'_>, targets: &Targets, specs: &[OutputSpec]) -> Result<i32> {
    if !ctx.quiet() {
        for n in &plan.notes {
            eprintln!("hoist: note: {}", printable(n));
        }
    }
    if targets.dry_run {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&plan.bytes);
        let _ = out.write_all(b"\n");
        return Ok(0);
    }
    let opts = ctx.copy_options();
    let mut results = Vec::new();
    for (endpoint, tags) in specs.iter().filter(|s| !s.local_only).flat_map(|s| s.destinations()) {
        let dst = open_destination(&endpoint, &ctx.client, None).await?;
        let report = merge::write(plan, dst.as_ref(), &tags, &opts, &ctx.progress).await?;
        dst.finish().await?;
        ctx.progress.line(&format!(
            "{}: index {} with {} entries; {} blob(s) copied, {} mounted, {} existed; {} manifest(s) written",
            dst.location(),
            plan.desc.digest.short(),
            plan.children.len()
                + plan.created.iter().filter(|c| hoist::model::media::is_document(&c.desc.media_type)).count(),
            report.blobs_uploaded,
            report.blobs_mounted,
            report.blobs_existed,
            report.manifests_pushed
        ));
        results.push(ExportResult { destination: dst.location(), report, filesystem: None });
    }
    if let Some(path) = &targets.metadata_file {
        write_metadata(path, &plan.desc, specs, &BTreeMap::new())?;
    }
    if ctx.json() {
        let v = serde_json::json!({
            "digest": plan.desc.digest.to_string(),
            "mediaType": plan.desc.media_type,
            "size": plan.desc.size,
            "manifests": plan.children.iter().map(|c| c.desc.digest.to_string()).collect::<Vec<_>>(),
            "notes": plan.notes,
            "outputs": results,
        });
        outln!("{v}");
    } else {
        outln!("{}", plan.desc.digest);
    }
    Ok(0)
}

pub(crate) async fn run_index(ctx: &Ctx, cmd: IndexCmd) -> Result<i32> {
    let IndexCmd::Create(a) = cmd;
    let specs = a.targets.specs()?;
    let mut opened = Vec::new();
    for s in &a.sources {
        opened.push(open_resolved(ctx, Endpoint::from_user_input(s)?, s.clone()).await?);
    }
    for m in &a.from_metadata {
        opened.push(open_metadata(ctx, m).await?);
    }
    if opened.is_empty() && !a.append {
        return Err(Error::Usage("name at least one source (SRC or --from-metadata FILE)".into()));
    }
    let annotations = a.annotations.iter().map(|s| AnnotationSpec::parse(s)).collect::<Result<Vec<_>>>()?;
    // --append: the index now at --tag is where we start from.
    let mut base_src: Option<(Box<dyn Source>, String)> = None;
    if a.append {
        let t = a.targets.tag.as_ref().ok_or_else(|| Error::Usage("--append needs --tag".into()))?;
        let spec = specs.first().expect("--tag gives a spec");
        let tag = spec.tags.first().cloned();
        match open_source(&spec.endpoint, &ctx.client) {
            Ok(src) => base_src = Some((src, tag.unwrap_or_else(|| plan::default_tag().into()))),
            Err(Error::Io { .. }) | Err(Error::NotFound { .. }) => {
                ctx.progress.line(&format!("{t}: nothing there yet; creating a new index"));
            }
            Err(e) => return Err(e),
        }
    }
    let mut base = None;
    if let Some((src, tag)) = &base_src {
        match src.resolve(Some(&hoist::TagOrDigest::Tag(tag.clone()))).await {
            Ok(d) => {
                let document = src.fetch_document(&d).await?;
                base = Some(Base { source: src.as_ref(), document });
            }
            Err(Error::NotFound { .. }) => {
                ctx.progress.line(&format!("{}:{tag}: nothing there yet; creating a new index", src.location()))
            }
            Err(e) => return Err(e),
        }
    }
    let inputs: Vec<Input<'_>> = opened
        .iter()
        .map(|o| Input { source: o.source.as_ref(), desc: o.desc.clone(), label: o.label.clone() })
        .collect();
    let opts = IndexOptions {
        keep_nested: a.keep_nested,
        allow_conflicts: a.allow_conflicts,
        annotations,
        artifact_type: a.artifact_type.clone(),
        base,
        platforms: ctx.settings.platforms.clone(),
    };
    let plan = merge::plan(&inputs, opts).await?;
    ship(ctx, &plan, &a.targets, &specs).await
}

/// Where the content `digest` of endpoint `ep` is: `REPO@DIGEST` for a registry (and
/// containerd, podman), `oci:DIR@DIGEST` and the like for local stores.
fn located(ep: &Endpoint, digest: &Digest) -> String {
    match ep {
        Endpoint::Registry(r) => format!("{}@{digest}", r.repo_ref()),
        Endpoint::Layout { path, .. } => format!("oci:{}@{digest}", path.display()),
        Endpoint::OciArchive { path, .. } => format!("oci-archive:{}@{digest}", path.display()),
        Endpoint::DockerArchive { path, .. } => format!("docker-archive:{}@{digest}", path.display()),
        Endpoint::Containerd(t) => format!("{}@{digest}", t.reference.repo_ref()),
        Endpoint::Podman { repository, .. } => format!("{repository}@{digest}"),
    }
}

/// What bundle.json calls an image it names none for: `REPO@DIGEST` in the bundle's
/// registry repository when there is one (the images are copied there), else where it was
/// read from.
fn image_name(target_repo: Option<&str>, o: &Opened) -> String {
    match target_repo {
        Some(repo) => format!("{repo}@{}", o.desc.digest),
        None => located(&o.endpoint, &o.desc.digest),
    }
}

fn input<'a>(o: &'a Opened, target_repo: Option<&str>) -> BundleInput<'a> {
    BundleInput {
        source: o.source.as_ref(),
        desc: o.desc.clone(),
        image: image_name(target_repo, o),
        label: o.label.clone(),
    }
}

/// `--bundle-file`, read within [`bundle::MAX_BUNDLE_JSON`] and parsed.
fn read_bundle_file(path: &Path) -> Result<BundleFile> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut raw = Vec::new();
    f.take(bundle::MAX_BUNDLE_JSON + 1).read_to_end(&mut raw).map_err(|e| Error::io(path, e))?;
    BundleFile::parse(&raw, &path.display().to_string())
}

/// Write `bytes` to `path`, or to stdout for `-`.
fn write_out(path: &Path, bytes: &[u8]) -> Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.write_all(b"\n");
        return Ok(());
    }
    write_file_atomic(path, bytes)
}

pub(crate) async fn run_bundle(ctx: &Ctx, cmd: BundleCmd) -> Result<i32> {
    match cmd {
        BundleCmd::Create(a) => {
            let specs = a.targets.specs()?;
            let target_repo = specs.iter().find_map(|s| match &s.endpoint {
                Endpoint::Registry(r) => Some(r.repo_ref()),
                _ => None,
            });
            let mut given = Vec::new();
            for c in &a.components {
                let (name, src) =
                    c.split_once('=').ok_or_else(|| Error::Usage(format!("--component {c:?}: expected NAME=SRC")))?;
                given.push((name.to_string(), src.to_string()));
            }
            let file = a.bundle_file.as_deref().map(read_bundle_file).transpose()?;
            // Where each image is read from: --invocation/--component, else bundle.json's `image`.
            let (inv_src, comp_srcs) = match &file {
                None => (a.invocation.clone().unwrap_or_default(), given),
                Some(f) => {
                    let inv = a.invocation.clone().or_else(|| f.image_ref(&Role::Invocation).map(str::to_string));
                    let mut comps = Vec::new();
                    for name in f.component_names() {
                        let src = match given.iter().find(|(n, _)| *n == name) {
                            Some((_, s)) => s.clone(),
                            None => f.image_ref(&Role::Component(name.clone())).unwrap_or_default().to_string(),
                        };
                        comps.push((name, src));
                    }
                    if let Some((n, _)) = given.iter().find(|(n, _)| !f.component_names().contains(n)) {
                        return Err(Error::Usage(format!("--component {n}=...: the bundle file has no image {n:?}")));
                    }
                    (inv.unwrap_or_default(), comps)
                }
            };
            let inv = open_resolved(ctx, Endpoint::from_user_input(&inv_src)?, inv_src.clone()).await?;
            let mut comps = Vec::new();
            for (name, src) in comp_srcs {
                comps.push((name, open_resolved(ctx, Endpoint::from_user_input(&src)?, src.clone()).await?));
            }
            let repo = target_repo.as_deref();
            let comp_inputs = comps.iter().map(|(n, o)| (n.clone(), input(o, repo))).collect();
            let plan = match file {
                Some(f) => bundle::plan_file(f, input(&inv, repo), comp_inputs).await?,
                None => {
                    let spec = BundleSpec {
                        name: a.name.clone().unwrap_or_default(),
                        version: a.version.clone().unwrap_or_default(),
                        description: a.description.clone(),
                        keywords: a.keywords.clone(),
                        maintainers: a.maintainers.iter().map(|m| m.parse()).collect::<Result<_>>()?,
                    };
                    bundle::plan(&spec, input(&inv, repo), comp_inputs).await?
                }
            };
            ship(ctx, &plan, &a.targets, &specs).await
        }
        BundleCmd::Pull { reference, bundle: bundle_out, relocation_map } => {
            let o = open_resolved(ctx, Endpoint::from_user_input(&reference)?, reference.clone()).await?;
            let pulled = bundle::pull(o.source.as_ref(), &o.desc, &|d| located(&o.endpoint, d)).await?;
            write_out(&bundle_out, &pulled.bundle_json)?;
            write_out(&relocation_map, &pulled.relocation_map_bytes()?)?;
            ctx.progress.line(&format!(
                "{}: bundle {}: bundle.json to {}, relocation map ({} image(s)) to {}",
                o.source.location(),
                o.desc.digest.short(),
                bundle_out.display(),
                pulled.relocation_map.len(),
                relocation_map.display()
            ));
            if ctx.json() {
                let v = serde_json::json!({
                    "digest": o.desc.digest.to_string(),
                    "bundle": bundle_out.display().to_string(),
                    "relocationMapFile": relocation_map.display().to_string(),
                    "relocationMap": pulled.relocation_map,
                });
                outln!("{v}");
            } else if bundle_out != Path::new("-") && relocation_map != Path::new("-") {
                outln!("{}", o.desc.digest);
            }
            Ok(0)
        }
        BundleCmd::Inspect { reference } => {
            let o = open_resolved(ctx, Endpoint::from_user_input(&reference)?, reference.clone()).await?;
            let info = bundle::inspect(o.source.as_ref(), &o.desc).await?;
            let mut out = std::io::stdout().lock();
            if ctx.json() {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&info).unwrap_or_default());
                return Ok(0);
            }
            // Names, versions and descriptions come from the bundle: controls escaped.
            let _ = writeln!(out, "Bundle:      {} {}", printable(&info.name), printable(&info.version));
            let _ = writeln!(out, "Digest:      {}", info.digest);
            if let Some(d) = &info.description {
                let _ = writeln!(out, "Description: {}", printable(d));
            }
            let _ = writeln!(out, "Images:");
            for c in &info.components {
                let plat = c.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    out,
                    "  {:<11} {:<20} {}  {}",
                    printable(&c.role),
                    printable(&c.name),
                    c.digest,
                    printable(&plat)
                );
            }
            Ok(0)
        }
    }
}
