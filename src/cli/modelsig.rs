//! `hoist model sign` / `hoist model verify`: OpenSSF model signatures (`model.sig`, the
//! `model-signing` package's key method) of a model directory or file, or of a model artifact in a
//! registry or layout (the signature attached as a referrer). The work is the library's
//! (`trust::modelsig`, `modelpack::sign`).

use std::path::{Path, PathBuf};

use clap::Args;
use hoist::error::{Error, Result};
use hoist::transport::{open_destination, Endpoint};
use hoist::trust::{modelsig, PublicKey};

use super::out::outln;
use super::resolve_any;
use super::trust::load_private_key;
use super::Ctx;

/// `hoist model sign`.
#[derive(Args)]
pub(crate) struct ModelSignArgs {
    /// The model: a directory, one file, or a model artifact (registry reference, oci:DIR:TAG).
    pub model: String,
    /// The private key (ECDSA for the `model-signing` verifier; cosign's encrypted format or PEM).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Read the key's password from the first line of this file (else COSIGN_PASSWORD, else a prompt).
    #[arg(long, value_name = "FILE")]
    sign_passphrase_file: Option<PathBuf>,
    /// Where to write the signature of a directory or file [default: DIR/model.sig, FILE.sig].
    #[arg(long, value_name = "PATH")]
    signature: Option<PathBuf>,
    /// Paths (relative to the model directory) left out of the signature (repeatable);
    /// git's files and the signature itself always are.
    #[arg(long, value_name = "PATH")]
    ignore_paths: Vec<String>,
}

/// `hoist model verify`.
#[derive(Args)]
pub(crate) struct ModelVerifyArgs {
    /// The model: a directory, one file, or a model artifact (registry reference, oci:DIR:TAG).
    pub model: String,
    /// Public key(s) (PEM); a signature by any of them counts.
    #[arg(long, value_name = "PUB", required = true)]
    key: Vec<PathBuf>,
    /// The signature of a directory or file [default: DIR/model.sig, FILE.sig].
    #[arg(long, value_name = "PATH")]
    signature: Option<PathBuf>,
}

/// A model on disk (a directory or one file), or None for a reference.
fn as_local(model: &str) -> Option<PathBuf> {
    let p = Path::new(model);
    (p.is_dir() || p.is_file()).then(|| p.to_path_buf())
}

/// Where the signature of the model at `path` is by default: `DIR/model.sig` inside a
/// directory, `FILE.sig` beside a one-file model.
fn default_signature(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.join(modelsig::SIGNATURE_FILE);
    }
    let mut s = path.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// The model's name in a statement about an artifact: the repository's (or layout's) last
/// path component.
fn artifact_name(ep: &Endpoint) -> String {
    let s = match ep {
        Endpoint::Registry(r) => r.repository.clone(),
        other => other.to_string(),
    };
    let s = s.split(':').next_back().unwrap_or(&s).trim_end_matches('/').to_string();
    s.rsplit('/').next().unwrap_or(&s).to_string()
}

pub(crate) async fn run_sign(ctx: &Ctx, args: ModelSignArgs) -> Result<i32> {
    let key = load_private_key(&args.key, args.sign_passphrase_file.as_deref())?;
    if let Some(dir) = as_local(&args.model) {
        let sig = args.signature.clone().unwrap_or_else(|| default_signature(&dir));
        let progress = ctx.progress.clone();
        let (d, s, ignore) = (dir.clone(), sig.clone(), args.ignore_paths.clone());
        let (bundle, manifest) =
            tokio::task::spawn_blocking(move || modelsig::sign_dir(&d, &key, &s, &ignore, &progress))
                .await
                .map_err(|e| Error::task(format!("signing {}", dir.display()), e))??;
        super::trust::write_file(&sig, &bundle, 0o644, true)?;
        let root = format!("sha256:{}", manifest.root_digest());
        if ctx.json() {
            let v = serde_json::json!({"model": dir, "signature": sig, "name": manifest.name, "rootDigest": root, "files": manifest.resources.len(), "predicateType": modelsig::PREDICATE_TYPE});
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            outln!("Signed {} ({} files, {root}): {}", dir.display(), manifest.resources.len(), sig.display());
        }
        return Ok(0);
    }
    if args.signature.is_some() || !args.ignore_paths.is_empty() {
        return Err(Error::Usage(format!(
            "{}: --signature and --ignore-paths are for a model directory or file; an artifact's signature is attached to it",
            args.model
        )));
    }
    let (ep, src, root) = resolve_any(ctx, &args.model).await?;
    if !matches!(ep, Endpoint::Registry(_) | Endpoint::Layout { .. }) {
        return Err(Error::Unsupported(format!("{ep}: model signatures are attached in registries and OCI layouts")));
    }
    let dst = open_destination(&ep, &ctx.client, None).await?;
    let (w, manifest) =
        hoist::modelpack::sign::sign_artifact(src.as_ref(), dst.as_ref(), &root, &artifact_name(&ep), &key).await?;
    dst.finish().await?;
    let rootd = format!("sha256:{}", manifest.root_digest());
    if ctx.json() {
        let v = serde_json::json!({"model": ep.to_string(), "digest": root.digest.to_string(), "name": manifest.name, "rootDigest": rootd, "files": manifest.resources.len(), "predicateType": modelsig::PREDICATE_TYPE, "signature": w});
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let what = if w.added { "signed" } else { "already signed" };
        outln!("{} {what} ({} files, {rootd}): model signature {}", root.digest, manifest.resources.len(), w.manifest);
    }
    Ok(0)
}

pub(crate) async fn run_verify(ctx: &Ctx, args: ModelVerifyArgs) -> Result<i32> {
    let keys = args.key.iter().map(|k| PublicKey::load(k)).collect::<Result<Vec<_>>>()?;
    if let Some(dir) = as_local(&args.model) {
        let sig = args.signature.clone().unwrap_or_else(|| default_signature(&dir));
        let bytes = hoist::transport::layout::read_limited(&sig, modelsig::MAX_SIGNATURE)?;
        let progress = ctx.progress.clone();
        let (d, s) = (dir.clone(), sig.clone());
        let v = tokio::task::spawn_blocking(move || modelsig::verify_dir(&d, &bytes, &s, &keys, &progress))
            .await
            .map_err(|e| Error::task(format!("verifying {}", dir.display()), e))??;
        if ctx.json() {
            let out = serde_json::json!({"model": dir, "signature": sig, "verified": true, "name": v.name, "rootDigest": v.root_digest, "files": v.resources, "method": v.method});
            outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        } else {
            outln!(
                "Verified: {} ({} {}, {}) by {}",
                dir.display(),
                v.resources,
                v.method,
                v.root_digest,
                sig.display()
            );
        }
        return Ok(0);
    }
    if args.signature.is_some() {
        return Err(Error::Usage(format!(
            "{}: --signature is for a model directory or file; an artifact's signature is found among its referrers",
            args.model
        )));
    }
    let (ep, src, root) = resolve_any(ctx, &args.model).await?;
    let (sig, v) = hoist::modelpack::sign::verify_artifact(src.as_ref(), &root, &keys).await?;
    if ctx.json() {
        let out = serde_json::json!({"model": ep.to_string(), "digest": root.digest.to_string(), "verified": true, "signature": sig.digest.to_string(), "name": v.name, "rootDigest": v.root_digest, "files": v.resources, "method": v.method});
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        outln!(
            "Verified: {ep} {} ({} files, {}) by model signature {}",
            root.digest,
            v.resources,
            v.root_digest,
            sig.digest
        );
    }
    Ok(0)
}
