//! Dockerfile builds without a daemon: BuildKit's frontend syntax ([`parse`]), evaluated
//! stage by stage ([`eval`]) into reproducible layers in a local `Layout`, RUN steps in an
//! OCI runtime (`runc`/`crun`) on an overlay of the unpacked base layers ([`run`]), and a
//! build cache keyed by instruction and inputs; `ADD <url>`, `ADD <git url>` and remote
//! contexts through [`remote`]. Not a BuildKit: no RUN of another architecture without
//! binfmt.

pub(crate) mod agent;
pub mod cache;
pub(crate) mod chmod;
pub mod eval;
pub mod fs;
pub(crate) mod ignore;
pub mod parse;
pub mod remote;
pub mod run;
pub mod secret;
pub(crate) mod stage;
pub mod statcache;
pub(crate) mod user;
pub mod words;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::Result;
use crate::layer::Compression;
use crate::model::descriptor::{Descriptor, Platform};
use crate::transport::origins::BlobOrigins;
use crate::transport::{NoProgress, Progress, Source};

pub use cache::CacheMode;
pub use eval::build_dockerfile;
pub use fs::Snapshotter;
pub use secret::{Secret, Secrets};

/// What to build: `hoist build [-f Dockerfile] CONTEXT` and its flags.
#[derive(Clone, Debug, Default)]
pub struct DockerfileBuild {
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target STAGE` (default: the last stage).
    pub target: Option<String>,
    /// Target platforms (default: the host's, `linux/amd64` on x86-64).
    pub platforms: Vec<Platform>,
    /// `--secret id=ID,src=FILE|env=VAR`: secret id → where its value comes from.
    pub secrets: Secrets,
    /// `--ssh ID[=SOCKET]`: ssh agent id → its socket, for `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// OCI runtime for RUN (default: `runc`, then `crun`, on PATH).
    pub runtime: Option<PathBuf>,
    /// Layer compression.
    pub compression: Compression,
    /// Timestamp of everything (default `SOURCE_DATE_EPOCH`, else 0).
    pub source_date_epoch: Option<i64>,
    /// Tag in the layout.
    pub tag: Option<String>,
    /// Ignore the build cache (results are still stored in it).
    pub no_cache: bool,
    /// `--no-cache-filter STAGE` (repeatable): the steps of these stages (by name, or by
    /// index) run without the cache, as `no_cache` runs every stage; their results are still
    /// stored. A name no stage has is refused.
    pub no_cache_filter: Vec<String>,
    /// `--label K=V`: labels of the image config, set after the Dockerfile's own.
    pub labels: BTreeMap<String, String>,
    /// Annotations of each manifest (and of the index a multi-platform build makes).
    pub annotations: BTreeMap<String, String>,
    /// Annotations of the index only; refused when one platform is built (no index).
    pub index_annotations: BTreeMap<String, String>,
    /// How RUN and COPY --from see a stage's filesystem (overlayfs, or a copy).
    pub snapshotter: Snapshotter,
    /// `--cache-from`: build caches to read (references the resolver opens), asked in
    /// order on a local miss.
    pub cache_from: Vec<String>,
    /// `--cache-to`: one exported cache per mode, returned in [`BuildOutcome::caches`].
    pub cache_export: Vec<CacheMode>,
    /// `--cache-to type=inline`: each image's config carries the `mode=min` step table of its
    /// build (docs/build-cache.md), read back by `--cache-from` of the image.
    pub cache_inline: bool,
    /// `--build-context NAME=VALUE` (buildx's named contexts): an image `FROM NAME` or
    /// `--from=NAME` means instead.
    pub build_contexts: BTreeMap<String, NamedContext>,
    /// Also write the image of every other stage the target needed, listed in
    /// [`BuildOutcome::stages`] (what an SBOM's stage scan reads).
    pub keep_stages: bool,
    /// Layers of a `FROM` image fetched at once (`--jobs`); `None`: [`crate::copy::DEFAULT_JOBS`].
    pub jobs: Option<usize>,
}

/// What a named build context (`--build-context NAME=...`) stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF` (any reference the resolver opens) or `oci-layout://DIR[:TAG]`
    /// (as `oci:DIR[:TAG]`): the image used instead of NAME.
    Image(String),
    /// A local directory, read as the build context is (`COPY --from=NAME`,
    /// `RUN --mount=from=NAME`, and `FROM NAME` as a stage whose filesystem it is).
    Dir(PathBuf),
    /// A URL, fetched when the build starts and then read as a directory (BuildKit's named
    /// contexts): a git repository (`URL#REF[:SUBDIR]`, as [`remote::classify`] tells) is
    /// its checkout; another http(s) URL is a directory holding the download as the one file
    /// `context` (BuildKit's `llb.HTTP` with that name: never extracted).
    Remote(String),
}

impl NamedContext {
    /// buildx's value syntax: `docker-image://REF`, `oci-layout://DIR[:TAG|@DIGEST]`, a git
    /// or http(s) URL, else a directory.
    pub fn parse(value: &str) -> NamedContext {
        if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(d) = value.strip_prefix("oci-layout://") {
            NamedContext::Image(format!("oci:{d}"))
        } else if remote::classify(value).is_some() {
            NamedContext::Remote(value.to_string())
        } else {
            NamedContext::Dir(PathBuf::from(value))
        }
    }
}

/// What a build did.
#[derive(Clone, Debug)]
pub struct BuildOutcome {
    /// The image: a manifest, or an index for several platforms.
    pub root: Descriptor,
    /// RUN steps executed.
    pub runs: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Context files whose contents were read to compute a COPY/ADD cache key.
    pub hashed: usize,
    /// Context files whose content digest came from the stat cache instead.
    pub stat_hits: usize,
    /// The cache manifests written for [`DockerfileBuild::cache_export`], in its order.
    pub caches: Vec<Descriptor>,
    /// With [`DockerfileBuild::keep_stages`]: (stage name or index, its image manifest in the
    /// layout, whose descriptor's platform is the target platform it was built for).
    pub stages: Vec<(String, Descriptor)>,
    /// Where the build read its base images' layers and its `--cache-from` caches' layers
    /// from (registry repositories): push the image through [`BlobOrigins::over`] the store
    /// and a push to another repository of the same registry mounts them instead of
    /// uploading.
    pub origins: BlobOrigins,
}

/// Finds the images `FROM` and `COPY --from` name (any hoist transport); the CLI's resolver.
#[async_trait]
pub trait ImageResolver: Send + Sync {
    /// Open `reference` and return where to read it and its root descriptor.
    async fn resolve(&self, reference: &str) -> Result<(Box<dyn Source>, Descriptor)>;

    /// The registry client whose network settings (TLS trust, proxies, read timeout,
    /// retries) `ADD <url>` uses; `None` (the default): a client with default options.
    fn client(&self) -> Option<std::sync::Arc<crate::transport::registry::Client>> {
        None
    }
}

/// Progress lines of a build (stderr in the CLI).
pub trait BuildLog: Send + Sync {
    /// One line.
    fn line(&self, s: &str);

    /// Where the output of RUN commands goes. `None` (the default): the commands write to this
    /// process's stderr themselves, byte for byte as they write it. A sink gets it line by line
    /// instead (the CLI's `--progress json` makes each line a `log` event).
    fn run_output(&self) -> Option<RunOutput> {
        None
    }

    /// Reports the transfers of a build: the layers of `FROM` images fetched into the store.
    /// The default reports nothing.
    fn transfers(&self) -> &dyn Progress {
        &NoProgress
    }
}

/// The stream of a RUN command a line of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Receives RUN commands' output, one line at a time (without its newline; a line longer than
/// [`RUN_OUTPUT_LINE_MAX`] bytes comes in pieces; invalid UTF-8 replaced).
pub type RunOutput = std::sync::Arc<dyn Fn(OutputStream, &str) + Send + Sync>;

/// The longest piece of a RUN output line handed to a [`RunOutput`] at once.
pub const RUN_OUTPUT_LINE_MAX: usize = 64 * 1024;

impl<F: Fn(&str) + Send + Sync> BuildLog for F {
    fn line(&self, s: &str) {
        self(s)
    }
}
