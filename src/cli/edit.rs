//! `hoist mutate`: edit images' configs and manifests on their way from SRC to DST (crane's
//! `mutate`); the copy is the one graph copy, so layers are never re-uploaded.

use clap::Args;
use hoist::edit::{parse_created, parse_key_value, parse_list, parse_port, ImageEdit};
use hoist::error::{Error, Result};

use super::copy::Ends;
use super::creds::SideCreds;

/// `hoist append SRC DST LAYER...`.
#[derive(Args)]
pub(crate) struct AppendArgs {
    /// Source image or index (any transport)
    src: String,
    /// Destination (any transport)
    dst: String,
    /// Layer tarballs to add on top, in order: .tar, .tar.gz or .tar.zst (told by their bytes)
    #[arg(required = true, value_name = "LAYER")]
    layers: Vec<std::path::PathBuf>,
    /// Compression of the added layers: none, gzip[:0-9], zstd[:1-22], estargz[:0-9]
    #[arg(long, value_name = "ALG[:LEVEL]", default_value = "gzip")]
    compression: String,
    /// The config's creation time (and the new history entries'): now or an RFC 3339 time
    #[arg(long, value_name = "TIME|now")]
    created: Option<String>,
    #[command(flatten)]
    creds: SideCreds,
}

impl AppendArgs {
    /// Compress the layers into `dir` and make the edit that adds them.
    pub fn ends(&self, dir: &std::path::Path) -> Result<Ends> {
        let to: hoist::copy::convert::Compression = self.compression.parse()?;
        let layers = self
            .layers
            .iter()
            .map(|l| hoist::copy::convert::prepare_layer_blocking(l, to, &Default::default(), dir))
            .collect::<Result<Vec<_>>>()?;
        let edit = ImageEdit {
            layers,
            created: self.created.as_deref().map(parse_created).transpose()?,
            ..ImageEdit::default()
        };
        Ends::edit(&self.src, &self.dst, self.creds.clone(), edit)
    }

    /// Both ends for credentials (nothing compressed yet).
    pub fn ends_for_creds(&self) -> Result<Ends> {
        Ends::edit(&self.src, &self.dst, self.creds.clone(), ImageEdit::default())
    }

    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("append {} {}", self.src, self.dst)
    }
}

/// `hoist mutate SRC DST`.
#[derive(Args)]
pub(crate) struct MutateArgs {
    /// Source image or index (any transport: REF, oci:DIR[:TAG], oci-archive:FILE, ...)
    src: String,
    /// Destination (any transport); may be the source's repository with another tag
    dst: String,
    /// Set an environment variable in the config (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Set a config label (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Set a manifest annotation (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    annotation: Vec<String>,
    /// Entrypoint: a JSON array or comma-separated words; empty clears it
    #[arg(long, value_name = "ARGS")]
    entrypoint: Option<String>,
    /// Command: a JSON array or comma-separated words; empty clears it
    #[arg(long, value_name = "ARGS")]
    cmd: Option<String>,
    /// User (NAME, UID or UID:GID)
    #[arg(long)]
    user: Option<String>,
    /// Working directory
    #[arg(long)]
    workdir: Option<String>,
    /// Expose a port: PORT[/tcp|udp|sctp] (repeatable)
    #[arg(long, value_name = "PORT[/PROTO]")]
    exposed_port: Vec<String>,
    /// Stop signal (SIGTERM, ...)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// The config's creation time: now or an RFC 3339 time
    #[arg(long, value_name = "TIME|now")]
    created: Option<String>,
    #[command(flatten)]
    creds: SideCreds,
}

impl MutateArgs {
    /// The edit the flags ask for.
    pub fn edit(&self) -> Result<ImageEdit> {
        let pairs = |what: &str, v: &[String]| v.iter().map(|s| parse_key_value(what, s)).collect::<Result<Vec<_>>>();
        let edit = ImageEdit {
            env: pairs("--env", &self.env)?,
            labels: pairs("--label", &self.label)?,
            annotations: pairs("--annotation", &self.annotation)?,
            entrypoint: self.entrypoint.as_deref().map(|s| parse_list("--entrypoint", s)).transpose()?,
            cmd: self.cmd.as_deref().map(|s| parse_list("--cmd", s)).transpose()?,
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            exposed_ports: self.exposed_port.iter().map(|p| parse_port(p)).collect::<Result<_>>()?,
            stop_signal: self.stop_signal.clone(),
            created: self.created.as_deref().map(parse_created).transpose()?,
            ..ImageEdit::default()
        };
        if edit.is_empty() {
            return Err(Error::Usage(
                "mutate: nothing to change; give --env, --label, --annotation, --entrypoint, --cmd, --user, \
                 --workdir, --exposed-port, --stop-signal or --created"
                    .into(),
            ));
        }
        Ok(edit)
    }

    /// Both ends, with the edit as the copy's conversion.
    pub fn ends(&self) -> Result<Ends> {
        Ends::edit(&self.src, &self.dst, self.creds.clone(), self.edit()?)
    }

    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("mutate {} {}", self.src, self.dst)
    }
}

/// `hoist rebase SRC DST`.
#[derive(Args)]
pub(crate) struct RebaseArgs {
    /// Source image or index (any transport)
    src: String,
    /// Destination (any transport)
    dst: String,
    /// The base SRC was built on (any transport); default: the images' org.opencontainers.image.base.name at .base.digest
    #[arg(long, value_name = "REF")]
    old_base: Option<String>,
    /// The base to move onto (any transport); default: org.opencontainers.image.base.name, resolved again
    #[arg(long, value_name = "REF")]
    new_base: Option<String>,
    #[command(flatten)]
    creds: SideCreds,
}

impl RebaseArgs {
    /// Both ends, with no edit yet (for credentials).
    pub fn ends_for_creds(&self) -> Result<Ends> {
        Ends::edit(&self.src, &self.dst, self.creds.clone(), ImageEdit::default())
    }

    /// Read the bases (the source's annotations for those not given) and make the edit.
    pub async fn ends(&self, client: &std::sync::Arc<hoist::transport::registry::Client>) -> Result<Ends> {
        let ep = hoist::transport::Endpoint::from_user_input(&self.src)?;
        let src = hoist::transport::open_source(&ep, client)?;
        let root = hoist::copy::plan::resolve(&ep, src.as_ref()).await?;
        let rebase =
            hoist::rebase::prepare(client, src.as_ref(), &root, self.old_base.as_deref(), self.new_base.as_deref())
                .await?;
        Ends::edit(&self.src, &self.dst, self.creds.clone(), ImageEdit { rebase: Some(rebase), ..ImageEdit::default() })
    }

    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("rebase {} {}", self.src, self.dst)
    }
}

/// `hoist flatten SRC DST`.
#[derive(Args)]
pub(crate) struct FlattenArgs {
    /// Source image or index (any transport)
    src: String,
    /// Destination (any transport)
    dst: String,
    /// Compression of the one layer: none, gzip[:0-9], zstd[:1-22], estargz[:0-9]
    #[arg(long, value_name = "ALG[:LEVEL]", default_value = "gzip")]
    compression: String,
    #[command(flatten)]
    creds: SideCreds,
}

impl FlattenArgs {
    /// Both ends, with the flatten edit.
    pub fn ends(&self) -> Result<Ends> {
        let to: hoist::copy::convert::Compression = self.compression.parse()?;
        Ends::edit(&self.src, &self.dst, self.creds.clone(), ImageEdit { flatten: Some(to), ..ImageEdit::default() })
    }

    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("flatten {} {}", self.src, self.dst)
    }
}
