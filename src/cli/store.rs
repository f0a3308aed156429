//! What the producing commands (`build`, `artifact`, `model pack`) share: the local store
//! layout they build into, `--output`/`--metadata-file`, and resolving a reference typed
//! in any transport to a descriptor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use hoist::error::{Error, Result};
use hoist::output::{export, parse_output, write_metadata, OutputSpec};
use hoist::transport::layout::Layout;
use hoist::transport::Source;
use hoist::transport::{open_source, Endpoint};
use hoist::Descriptor;

use super::out::outln;
use super::Ctx;

/// `--store`, `--output`, `--metadata-file`.
#[derive(Args, Clone, Default)]
pub(crate) struct OutputArgs {
    /// Where to write the result (repeatable): buildx syntax (`type=oci,dest=FILE|DIR[,tar=false]`,
    /// `type=docker,dest=FILE,name=REF`, `type=registry,name=REF`, `type=local-layout,dest=DIR`)
    /// or a transport (`oci:DIR:TAG`, `docker://REF`, ...). `dest=-` writes the tar to stdout.
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Write buildx-style metadata JSON (digest, descriptor, names) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Local store (an OCI layout) to build into [default: $HOIST_STORE or ~/.local/share/hoist/store].
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl OutputArgs {
    /// Parse every `--output` (before building, so a typo fails fast and writes nothing).
    pub fn parse(&self) -> Result<Vec<OutputSpec>> {
        self.outputs.iter().map(|o| parse_output(o)).collect()
    }

    /// [`OutputArgs::parse`] for a command that builds no image layers: keys that would change
    /// what is built (`annotation.*`, `compression*`) are refused by name.
    pub fn parse_for(&self, command: &str) -> Result<Vec<OutputSpec>> {
        let outputs = self.parse()?;
        for o in &outputs {
            o.refuse_build_keys(command)?;
            if o.filesystem.is_some() {
                return Err(Error::Usage(format!(
                    "--output type=local/type=tar exports an image's filesystem; {command} makes an artifact, which has none (use type=oci or type=local-layout)"
                )));
            }
        }
        Ok(outputs)
    }

    /// Open (creating) the store layout.
    pub fn open_store(&self) -> Result<Layout> {
        let dir = self.store.clone().unwrap_or_else(default_store);
        Layout::create(&dir)
    }
}

/// `$HOIST_STORE`, else `$XDG_DATA_HOME/hoist/store`, else `~/.local/share/hoist/store`.
pub(crate) fn default_store() -> PathBuf {
    if let Some(s) = std::env::var_os("HOIST_STORE").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(d).join("hoist/store");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/hoist/store")
}

/// Outputs writing to a layout or OCI archive without a name get `default_tag` (the tag
/// part of `--tag`), so `--tag v1 --output type=local-layout,dest=DIR` gives `oci:DIR:v1`.
pub(crate) fn apply_default_tag(outputs: &mut [OutputSpec], default_tag: Option<&str>) {
    // `sample:latest` and `reg/sample:latest` give `latest`; a bare `v1` stays `v1`.
    let tag_part = |n: &str| n.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(n, |(_, t)| t).to_string();
    let Some(tag) = default_tag.map(tag_part).filter(|t| !t.is_empty()) else {
        return;
    };
    for o in outputs {
        if o.tags.is_empty()
            && o.filesystem.is_none()
            && matches!(o.endpoint, Endpoint::Layout { .. } | Endpoint::OciArchive { .. })
        {
            o.tags.push(tag.to_string());
        }
    }
}

fn writes_stdout(o: &OutputSpec) -> bool {
    if let Some(f) = &o.filesystem {
        return f.dest == Path::new("-");
    }
    match &o.endpoint {
        Endpoint::OciArchive { path, .. } | Endpoint::DockerArchive { path, .. } => path == Path::new("-"),
        _ => false,
    }
}

/// Copy `root` from the store to every output, write the metadata file, and print the
/// root digest on stdout (unless an output is stdout itself).
pub(crate) async fn deliver(
    ctx: &Ctx,
    store: &Layout,
    root: &Descriptor,
    outputs: &[OutputSpec],
    metadata_file: Option<&Path>,
) -> Result<i32> {
    if outputs.iter().filter(|o| writes_stdout(o)).count() > 1 {
        return Err(Error::InvalidReference {
            reference: "--output".into(),
            reason: "only one output can write to stdout (dest=-)".into(),
        });
    }
    // `type=image` without push: the store is the image store; name the result there.
    for name in outputs.iter().filter(|o| o.local_only).flat_map(|o| o.names.iter()) {
        store.set_tag(root, name)?;
        ctx.progress.line(&format!("tagged {name} in oci:{}", store.root().display()));
    }
    // One --platform picks the image a docker-archive output gets; a list is what `build`
    // made (an index), and no single image is picked from it.
    let platform = match ctx.settings.platforms.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    let results = export(store, root, outputs, &ctx.client, platform, &ctx.copy_options(), &ctx.progress).await?;
    for r in &results {
        ctx.progress.line(&format!(
            "{} -> {}: {} blob(s) written, {} existed",
            root.digest, r.destination, r.report.blobs_uploaded, r.report.blobs_existed
        ));
    }
    if let Some(path) = metadata_file {
        write_metadata(path, root, outputs, &BTreeMap::new())?;
    }
    if outputs.iter().any(writes_stdout) {
        return Ok(0);
    }
    if ctx.json() {
        let v = serde_json::json!({
            "digest": root.digest.to_string(),
            "mediaType": root.media_type,
            "size": root.size,
            "artifactType": root.artifact_type,
            "store": store.root(),
            "outputs": results.iter().map(|r| serde_json::json!({"destination": r.destination, "report": r.report})).collect::<Vec<_>>(),
        });
        outln!("{v}");
    } else {
        outln!("{}", root.digest);
    }
    Ok(0)
}

/// A reference in any transport, opened and resolved (a registry reference without tag
/// means `latest`).
pub(crate) async fn resolve_any(ctx: &Ctx, reference: &str) -> Result<(Endpoint, Box<dyn Source>, Descriptor)> {
    let ep = Endpoint::from_user_input(reference)?;
    let src = open_source(&ep, &ctx.client)?;
    let mut desc = hoist::copy::plan::resolve(&ep, src.as_ref()).await?;
    desc.annotations.remove(hoist::model::media::ANNOTATION_REF_NAME);
    Ok((ep, src, desc))
}
