//! The global flags, and the one [`Settings`] value they become (built once, before any
//! command runs): registry options, copy options, output format, progress mode, platforms,
//! the total timeout. Commands read settings, never the raw flags.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use hoist::copy::CopyOptions;
use hoist::error::{Error, Result};
use hoist::transport::registry::{RegistryOptions, RetryPolicy, UploadMode};
use hoist::Platform;

use super::creds::CredentialMap;
use super::progress::Mode;

/// Flags every command takes (listed under their own heading in every command's help).
#[derive(Args, Clone)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Global {
    /// More logs on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output (the same as --progress quiet).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How progress shows on stderr: auto (tty on a terminal, else plain), tty (bars), plain
    /// (a line per blob start and end, a heartbeat every few seconds), json (one event per
    /// line), quiet.
    #[arg(long, global = true, value_enum, default_value_t = ProgressFlag::Auto, value_name = "MODE")]
    pub progress: ProgressFlag,
    /// Output format for results on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Use plain HTTP for this registry (repeatable): HOST on any port, HOST:PORT that port.
    /// Loopback registries fall back to HTTP by themselves when they do not speak TLS.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// Use plain HTTP for every registry.
    #[arg(long, global = true)]
    pub plain_http: bool,
    /// Verify TLS certificates.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// Extra CA certificate (PEM) to trust (repeatable).
    #[arg(long = "ca-file", global = true)]
    pub ca_file: Vec<PathBuf>,
    /// Certs directory for every registry (repeatable; skopeo's --cert-dir): *.crt CAs,
    /// client.cert/client.key for mutual TLS. certs.d/HOST[:PORT]/ below
    /// /etc/containers/certs.d and /etc/docker/certs.d (or $HOIST_CERTS_D) are read anyway.
    #[arg(long = "cert-dir", global = true, value_name = "DIR")]
    pub cert_dir: Vec<PathBuf>,
    /// containers-registries.conf to read instead of $CONTAINERS_REGISTRIES_CONF or
    /// /etc/containers/registries.conf (drop-ins in registries.conf.d are read as well).
    #[arg(long = "registries-conf", global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Credentials USER:PASSWORD instead of the auth files, for a command that talks to one
    /// registry (a copy between two registries takes --src-creds/--dest-creds).
    #[arg(long, global = true, env = "HOIST_CREDS", hide_env_values = true, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Blobs transferred at once.
    #[arg(short, long, global = true, default_value_t = hoist::copy::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Attempts per request before giving up.
    #[arg(long, global = true, default_value_t = hoist::transport::registry::retry::DEFAULT_RETRIES)]
    pub retries: u32,
    /// Blob upload strategy [default: auto, or what the registry's profile says].
    #[arg(long, global = true, value_enum)]
    pub upload: Option<Upload>,
    /// Chunk size for chunked uploads, in MiB [default: 16, or what the registry's profile says].
    #[arg(long, global = true)]
    pub chunk_size_mib: Option<u64>,
    /// Platforms os/arch[/variant], comma-separated: what `copy`, `push` and `pull` take of an
    /// index (one: that image; several: an index of those), the images `build` makes; a
    /// docker-archive destination takes exactly one.
    #[arg(long, global = true, value_name = "OS/ARCH[/VARIANT],...")]
    pub platform: Option<String>,
    /// Seconds without data before a transfer counts as stalled.
    #[arg(long, global = true, default_value_t = hoist::transport::registry::DEFAULT_READ_TIMEOUT_SECS)]
    pub read_timeout: u64,
    /// Seconds the whole command may take; past them it stops with an error (exit 1).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Offer HTTP/2 to TLS registries for manifests, tokens and checks (default: HTTP/1.1);
    /// blob bodies (lanes, uploads) keep a connection each, over HTTP/1.1.
    #[arg(long, global = true)]
    pub http2: bool,
    /// Parallel ranged requests (each its own connection) for one large blob pulled from a
    /// registry; default from the blob's size (1 below 64 MiB, up to 8); 1: one stream.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub lanes: Option<u16>,
}

/// `--format`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
    /// SPDX 2.3 JSON (`hoist sbom` only).
    SpdxJson,
    /// CycloneDX 1.6 JSON (`hoist sbom` only).
    CyclonedxJson,
}

/// `--progress`, buildx's names.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum ProgressFlag {
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

/// `--upload`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Upload {
    Auto,
    Monolithic,
    Chunked,
}

/// Everything the global flags decide, parsed and checked once.
pub(crate) struct Settings {
    /// Registry client options without credentials (those depend on the command: see
    /// [`Settings::registry_options`]).
    registry: RegistryOptions,
    /// The raw `--creds` (or HOIST_CREDS) value, checked to be USER:PASSWORD.
    pub creds: Option<String>,
    /// Copy options for every command that copies.
    pub copy: CopyOptions,
    /// Output format on stdout.
    pub format: Format,
    /// How progress shows on stderr.
    pub progress: Mode,
    /// `--platform`, as typed (trimmed) and parsed, in order.
    pub platform_names: Vec<String>,
    /// `--platform`, parsed.
    pub platforms: Vec<Platform>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
}

impl Settings {
    /// Check and convert the global flags; a bad value is a usage error (exit 2).
    pub fn from_global(g: &Global) -> Result<Settings> {
        if let Some(c) = &g.creds {
            super::creds::parse_credential("--creds", c)?;
        }
        let platform_names: Vec<String> = match &g.platform {
            Some(p) => p.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => vec![],
        };
        if g.platform.is_some() && platform_names.is_empty() {
            return Err(Error::Usage("--platform: give os/arch[/variant], comma-separated".into()));
        }
        let platforms = platform_names.iter().map(|p| parse_platform(p)).collect::<Result<Vec<_>>>()?;
        for f in &g.ca_file {
            if !f.is_file() {
                let why = if f.exists() { "not a file" } else { "no such file" };
                return Err(Error::Usage(format!("--ca-file {}: {why}", f.display())));
            }
        }
        for d in &g.cert_dir {
            if !d.is_dir() {
                let why = if d.exists() { "not a directory" } else { "no such directory" };
                return Err(Error::Usage(format!("--cert-dir {}: {why}", d.display())));
            }
        }
        if let Some(f) = g.registries_conf.as_ref().filter(|f| !f.is_file()) {
            return Err(Error::Usage(format!("--registries-conf {}: no such file", f.display())));
        }
        if g.timeout == Some(0) {
            return Err(Error::Usage("--timeout: give a number of seconds above 0".into()));
        }
        let registry = RegistryOptions {
            insecure: g.insecure.clone(),
            plain_http: g.plain_http,
            tls_verify: g.tls_verify,
            ca_files: g.ca_file.clone(),
            cert_dirs: g.cert_dir.clone(),
            registries: load_registries_conf(g.registries_conf.as_deref())?,
            credentials: Default::default(),
            retry: RetryPolicy { max_attempts: g.retries.max(1), ..Default::default() },
            upload: match g.upload.unwrap_or(Upload::Auto) {
                Upload::Auto => UploadMode::Auto,
                Upload::Monolithic => UploadMode::Monolithic,
                Upload::Chunked => UploadMode::Chunked,
            },
            upload_set: g.upload.is_some(),
            chunk_size: g.chunk_size_mib.unwrap_or(hoist::transport::registry::DEFAULT_CHUNK_SIZE_MIB).max(1) << 20,
            chunk_size_set: g.chunk_size_mib.is_some(),
            read_timeout: Duration::from_secs(g.read_timeout.max(1)),
            http2: g.http2,
            lanes: g.lanes.map(usize::from),
            ..Default::default()
        };
        let progress = match g.progress {
            _ if g.quiet => Mode::Quiet,
            ProgressFlag::Quiet => Mode::Quiet,
            ProgressFlag::Plain => Mode::Plain,
            ProgressFlag::Json => Mode::Json,
            ProgressFlag::Tty => Mode::Bars,
            // Bars only where someone watches: a terminal, and no NO_COLOR / TERM=dumb.
            ProgressFlag::Auto if std::io::stderr().is_terminal() && !plain_terminal() => Mode::Bars,
            ProgressFlag::Auto => Mode::Plain,
        };
        Ok(Settings {
            registry,
            creds: g.creds.clone(),
            copy: CopyOptions { jobs: g.jobs, ..Default::default() },
            format: g.format,
            progress,
            platform_names,
            platforms,
            timeout: g.timeout.map(Duration::from_secs),
        })
    }

    /// Registry options with `credentials` (registry host[:port] -> credential).
    pub fn registry_options(&self, credentials: CredentialMap) -> RegistryOptions {
        let mut opts = self.registry.clone();
        for (registry, credential) in credentials {
            opts.set_credential(&registry, credential);
        }
        opts
    }

    /// The one platform a command picks an image by: none, or the only one given; a list is
    /// a usage error naming `what` needs one.
    pub fn single_platform(&self, what: &str) -> Result<Option<&Platform>> {
        match self.platforms.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(Error::Usage(format!(
                "--platform: {what} takes one platform, not a list ({})",
                self.platform_names.join(",")
            ))),
        }
    }

    /// Results as JSON on stdout.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// containers-registries.conf: `--registries-conf FILE` (then the drop-ins), else the
/// files containers/image reads.
fn load_registries_conf(file: Option<&std::path::Path>) -> Result<hoist::transport::registry::regconf::RegistriesConf> {
    use hoist::transport::registry::regconf::RegistriesConf;
    let mut files = RegistriesConf::default_files();
    if let Some(f) = file {
        files[0] = (f.to_path_buf(), false);
    }
    RegistriesConf::load_files(&files)
}

/// `NO_COLOR` set (to anything non-empty, per no-color.org) or `TERM=dumb`: no ANSI escapes.
pub(crate) fn plain_terminal() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) || std::env::var("TERM").is_ok_and(|t| t == "dumb")
}

/// `os/arch[/variant]`; anything else is a usage error.
pub(crate) fn parse_platform(s: &str) -> Result<Platform> {
    Platform::parse(s).ok_or_else(|| Error::Usage(format!("--platform {s:?}: platform must be os/arch[/variant]")))
}

#[cfg(test)]
mod tests {
    /// A default that clap cannot show from a constant (it depends on the registry's
    /// profile) is written in the help text; this keeps that text equal to the library's.
    #[test]
    fn help_defaults_are_the_library_constants() {
        let cmd = <super::super::Cli as clap::CommandFactory>::command();
        let help = |id: &str| {
            cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_help()).map(|h| h.to_string()).unwrap()
        };
        let chunk = format!("[default: {}, ", hoist::transport::registry::DEFAULT_CHUNK_SIZE_MIB);
        assert!(help("chunk_size_mib").contains(&chunk), "{}", help("chunk_size_mib"));
    }
}
