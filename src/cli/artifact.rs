//! `hoist artifact push|pack`: OCI 1.1 artifacts from files, as oras makes them, built
//! into the local store and then pushed to a registry or written to `--output`s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hoist::artifact::{build_artifact, load_annotation_file, ArtifactFile, ArtifactSpec};
use hoist::copy;
use hoist::error::{Error, Result};
use hoist::model::media;
use hoist::transport::{open_destination, Endpoint};

use super::out::outln;
use super::resolve_any;
use super::store::{apply_default_tag, deliver, prune_old_untagged, OutputArgs};
use super::Ctx;

#[derive(Subcommand)]
pub(crate) enum ArtifactCmd {
    /// Push files as an artifact to a registry reference (like `oras push`).
    #[command(
        after_help = "Examples:\n  hoist artifact push localhost:5000/docs:v1 README.md:text/markdown\n  hoist artifact push --artifact-type application/spdx+json --subject localhost:5000/demo:v1 localhost:5000/demo:sbom sbom.json"
    )]
    Push {
        /// Registry reference REGISTRY/REPO[:TAG]
        reference: String,
        #[command(flatten)]
        common: ArtifactArgs,
        /// Local store to build into [default: $HOIST_STORE or ~/.local/share/hoist/store].
        #[arg(long)]
        store: Option<PathBuf>,
        #[command(flatten)]
        sign: super::trust::SignByArgs,
    },
    /// Build an artifact from files and write it to each --output.
    #[command(
        after_help = "Examples:\n  hoist artifact pack --output type=oci,dest=docs.tar README.md\n  hoist artifact pack --output type=local-layout,dest=./out --subject oci:./out:v2 sbom.json"
    )]
    Pack {
        #[command(flatten)]
        common: ArtifactArgs,
        /// Tag in the store; its tag part also names unnamed layout/OCI outputs.
        #[arg(short, long)]
        tag: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
}

#[derive(Args)]
pub(crate) struct ArtifactArgs {
    /// Files, each FILE or FILE:MEDIATYPE (default application/octet-stream).
    #[arg(value_name = "FILE[:MEDIATYPE]")]
    pub files: Vec<String>,
    /// The manifest's artifactType (default application/octet-stream with an empty config).
    #[arg(long)]
    pub artifact_type: Option<String>,
    /// Config blob FILE[:MEDIATYPE] (default: the empty descriptor).
    #[arg(long, value_name = "FILE[:MEDIATYPE]")]
    pub config: Option<String>,
    /// Manifest annotation KEY=VALUE (repeatable).
    #[arg(short, long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// oras-style annotation file: {"$manifest": {..}, "$config": {..}, "<file name>": {..}}.
    #[arg(long, value_name = "FILE")]
    pub annotation_file: Option<PathBuf>,
    /// Make the artifact a referrer of this manifest (any transport).
    #[arg(long, value_name = "REF")]
    pub subject: Option<String>,
}

/// `FILE[:MEDIATYPE]`: an existing path wins; otherwise the part after the last `:` is
/// the media type when it looks like one (`type/subtype`).
fn split_file_type(s: &str) -> (PathBuf, Option<String>) {
    if Path::new(s).exists() {
        return (PathBuf::from(s), None);
    }
    match s.rsplit_once(':') {
        Some((p, mt)) if !p.is_empty() && mt.contains('/') && !mt.starts_with('/') => {
            (PathBuf::from(p), Some(mt.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

async fn spec_of(ctx: &Ctx, a: &ArtifactArgs) -> Result<ArtifactSpec> {
    let mut spec = ArtifactSpec { artifact_type: a.artifact_type.clone(), ..Default::default() };
    for f in &a.files {
        let (path, media_type) = split_file_type(f);
        spec.files.push(ArtifactFile { media_type, ..ArtifactFile::new(path) });
    }
    if let Some(c) = &a.config {
        let (path, mt) = split_file_type(c);
        spec.config = Some((path, mt.unwrap_or_else(|| media::UNKNOWN_CONFIG.to_string())));
    }
    let mut annotations = BTreeMap::new();
    for kv in &a.annotations {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::Usage(format!("--annotation {kv:?}: expected KEY=VALUE")))?;
        annotations.insert(k.to_string(), v.to_string());
    }
    if let Some(f) = &a.annotation_file {
        spec.apply_annotation_file(load_annotation_file(f)?);
    }
    spec.annotations.extend(annotations);
    if let Some(s) = &a.subject {
        let (_, _, d) = resolve_any(ctx, s).await?;
        let mut subject = hoist::Descriptor::new(d.media_type, d.digest, d.size);
        subject.artifact_type = None;
        ctx.progress.line(&format!("subject {s}: {}", subject.digest));
        spec.subject = Some(subject);
    }
    Ok(spec)
}

pub(crate) async fn run(ctx: &Ctx, cmd: ArtifactCmd) -> Result<i32> {
    match cmd {
        ArtifactCmd::Push { reference, common, store, sign } => {
            let dst_ep: Endpoint = reference.parse()?;
            let Endpoint::Registry(r) = &dst_ep else {
                return Err(Error::InvalidReference {
                    reference,
                    reason: "artifact push needs a registry reference; use `artifact pack --output` for others".into(),
                });
            };
            if r.digest.is_some() {
                return Err(Error::InvalidReference { reference, reason: "push to a tag, not a digest".into() });
            }
            let tags: Vec<String> = r.tag.iter().cloned().collect();
            let signer = sign.load(&dst_ep)?;
            let spec = spec_of(ctx, &common).await?;
            let store = OutputArgs { store, ..Default::default() }.open_store()?;
            let root = build_artifact(&store, &spec).await?;
            let dst = open_destination(&dst_ep, &ctx.client, None).await?;
            let report = copy::graph(&store, dst.as_ref(), &root, &tags, &ctx.copy_options(), &ctx.progress).await?;
            dst.finish().await?;
            if let Some(signer) = &signer {
                for w in signer.sign_at(&ctx.client, &dst_ep, &root, tags.first().map(String::as_str)).await? {
                    ctx.progress.line(&format!("signed {}: {} signature {}", w.subject, w.format, w.manifest));
                }
            }
            let dir = store.root().to_path_buf();
            drop(store);
            prune_old_untagged(ctx, &dir).await;
            ctx.progress.line(&format!(
                "{} -> {}: {} blob(s) uploaded, {} existed",
                root.digest, dst_ep, report.blobs_uploaded, report.blobs_existed
            ));
            if ctx.json() {
                outln!(
                    "{}",
                    serde_json::json!({"digest": root.digest.to_string(), "mediaType": root.media_type, "size": root.size, "artifactType": root.artifact_type, "reference": dst_ep.to_string()})
                );
            } else {
                outln!("{}", root.digest);
            }
            Ok(0)
        }
        ArtifactCmd::Pack { common, tag, out } => {
            let mut outputs = out.parse_for("artifact pack")?;
            apply_default_tag(&mut outputs, tag.as_deref());
            let signer = out.sign.load_for_outputs(&outputs)?;
            let mut spec = spec_of(ctx, &common).await?;
            spec.tag = tag;
            let store = out.open_store()?;
            let root = build_artifact(&store, &spec).await?;
            let code = deliver(ctx, &store, &root, &outputs, out.metadata_file.as_deref(), signer.as_ref()).await?;
            let dir = store.root().to_path_buf();
            drop(store);
            prune_old_untagged(ctx, &dir).await;
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_media_type() {
        assert_eq!(
            split_file_type("no-such-file.txt:application/vnd.x"),
            ("no-such-file.txt".into(), Some("application/vnd.x".into()))
        );
        assert_eq!(split_file_type("no-such:file"), ("no-such:file".into(), None));
        assert_eq!(split_file_type("plain"), ("plain".into(), None));
    }
}
