//! skopeo's per-end TLS flags of `copy`, `push` and `pull` (`--src-tls-verify`,
//! `--dest-tls-verify`, `--src-cert-dir`, `--dest-cert-dir`), and the flags of skopeo and
//! crane that ask for what hoist does anyway (`--all`, `--preserve-digests`), accepted so that
//! a migrated script runs unchanged.

use std::path::PathBuf;

use clap::Args;
use hoist::error::{Error, Result};
use hoist::transport::registry::{RegistryOptions, RegistryTls};

use super::creds::Scope;

/// The TLS settings of each end of a copy, and the no-op compatibility flags.
#[derive(Args, Clone, Default)]
pub(crate) struct SideTls {
    /// Verify the source registry's TLS certificates (skopeo's flag; default: --tls-verify)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    src_tls_verify: Option<bool>,
    /// Verify the destination registry's TLS certificates (skopeo's flag; default: --tls-verify)
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    dest_tls_verify: Option<bool>,
    /// Certs directory for the source registry only: *.crt CAs, client.cert/client.key (skopeo's flag)
    #[arg(long, value_name = "DIR")]
    src_cert_dir: Option<PathBuf>,
    /// Certs directory for the destination registry only (skopeo's flag)
    #[arg(long, value_name = "DIR")]
    dest_cert_dir: Option<PathBuf>,
    /// Copy every platform of an index (skopeo's flag; accepted, hoist always does unless --platform)
    #[arg(short = 'a', long)]
    all: bool,
    /// Keep manifests byte for byte (skopeo's flag; accepted, hoist always does unless --convert asks)
    #[arg(long)]
    preserve_digests: bool,
}

impl SideTls {
    /// Add each end's settings to `opts`, keyed by its registry. A flag for an end that is no
    /// registry, or two ends on one registry with different settings, is a usage error.
    pub fn apply(&self, opts: &mut RegistryOptions, scope: &Scope) -> Result<()> {
        let Scope::Copy { src, dst } = scope else { return Ok(()) };
        let sides = [
            ("--src", src, self.src_tls_verify, &self.src_cert_dir, "source"),
            ("--dest", dst, self.dest_tls_verify, &self.dest_cert_dir, "destination"),
        ];
        let mut mine: Vec<(String, RegistryTls)> = Vec::new();
        for (flag, host, verify, dir, side) in sides {
            if verify.is_none() && dir.is_none() {
                continue;
            }
            let host = host.as_ref().ok_or_else(|| {
                Error::Usage(format!("{flag}-tls-verify/{flag}-cert-dir: the {side} is not a registry"))
            })?;
            if let Some(d) = dir.as_ref().filter(|d| !d.is_dir()) {
                return Err(Error::Usage(format!("{flag}-cert-dir {}: no such directory", d.display())));
            }
            let tls = RegistryTls { verify, cert_dirs: dir.iter().cloned().collect() };
            if let Some((_, other)) = mine.iter().find(|(h, _)| h == host) {
                if *other != tls {
                    return Err(Error::Usage(format!(
                        "the source and the destination are both {host}: give it one TLS setting (--tls-verify, --cert-dir)"
                    )));
                }
                continue;
            }
            mine.push((host.clone(), tls));
        }
        opts.registry_tls.extend(mine);
        Ok(())
    }
}
