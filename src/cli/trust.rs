//! `hoist key generate`, `hoist sign`, `hoist verify`: cosign-compatible keys and
//! signatures (the library's `trust` module does the work). Passwords come from
//! `--sign-passphrase-file`, `COSIGN_PASSWORD`, or a prompt on the terminal; never from argv.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hoist::error::{printable, Error, Result};
use hoist::model::document::View;
use hoist::model::reference::Reference;
use hoist::transport::{open_destination, Endpoint};
use hoist::trust::policy::{self, Policy};
use hoist::trust::sign::{self, Format, SignRequest, Signer};
use hoist::trust::verify::{self, Rules};
use hoist::trust::{payload, PrivateKey, PublicKey};

use super::out::outln;
use super::resolve_any;
use super::Ctx;

/// `hoist key ...`.
#[derive(Subcommand)]
pub(crate) enum KeyCmd {
    /// Generate an ECDSA P-256 key pair in cosign's format (PREFIX.key, PREFIX.pub).
    #[command(
        after_help = "Examples:\n  hoist key generate --out ci         # ci.key, ci.pub; password from COSIGN_PASSWORD or asked\n  hoist key generate --out release --sign-passphrase-file pw.txt"
    )]
    Generate {
        /// Write PREFIX.key (encrypted private key) and PREFIX.pub (public key).
        #[arg(long, value_name = "PREFIX", default_value = "cosign")]
        out: PathBuf,
        /// The password, from the first line of this file (else COSIGN_PASSWORD, else a prompt).
        #[arg(long, value_name = "FILE")]
        sign_passphrase_file: Option<PathBuf>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `hoist sign`.
#[derive(Args)]
pub(crate) struct SignArgs {
    /// What to sign: a registry reference or oci:DIR:TAG.
    pub reference: String,
    /// The private key (cosign's encrypted format, or PKCS#8/SEC1/RSA PEM).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Read the key's password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    sign_passphrase_file: Option<PathBuf>,
    /// Which signature formats to write: both (default), bundle or legacy.
    #[arg(long, value_name = "FORMAT", default_value = "both")]
    signature_format: String,
    /// For an index: also sign every manifest it lists.
    #[arg(long)]
    recursive: bool,
    /// The docker-reference the signature claims [default: the reference, normalized].
    #[arg(long, value_name = "REF")]
    sign_identity: Option<String>,
}

/// `hoist verify`.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// What to verify: a registry reference or oci:DIR:TAG.
    pub reference: String,
    /// Public key(s) (PEM); a signature by any of them counts.
    #[arg(long, value_name = "PUB", required = true)]
    key: Vec<PathBuf>,
    /// Which signature formats to look at: both (default), bundle or legacy.
    #[arg(long, value_name = "FORMAT", default_value = "both")]
    signature_format: String,
    /// Accept signatures claiming this repository or reference instead of REF's repository.
    #[arg(long, value_name = "REF")]
    identity: Option<String>,
}

/// `hoist attest`.
#[derive(Args)]
pub(crate) struct AttestArgs {
    /// What the statement is about: a registry reference or oci:DIR:TAG.
    pub reference: String,
    /// The private key.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Read the key's password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    sign_passphrase_file: Option<PathBuf>,
    /// Predicate type: slsaprovenance1, slsaprovenance, spdxjson, cyclonedx, link, vuln, openvex, custom, or a URI.
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    predicate_type: String,
    /// The predicate (JSON; a custom predicate may be any text).
    #[arg(long, value_name = "FILE")]
    predicate: PathBuf,
    /// Which formats to write: bundle (default: a Sigstore bundle referrer), legacy (cosign's sha256-<hex>.att tag) or both.
    #[arg(long, value_name = "FORMAT", default_value = "bundle")]
    signature_format: String,
    /// The statement subject's name [default: the reference, normalized].
    #[arg(long, value_name = "REF")]
    sign_identity: Option<String>,
}

/// `hoist verify-attestation`.
#[derive(Args)]
pub(crate) struct VerifyAttestationArgs {
    /// What the statement is about: a registry reference or oci:DIR:TAG.
    pub reference: String,
    /// Public key(s) (PEM).
    #[arg(long, value_name = "PUB", required = true)]
    key: Vec<PathBuf>,
    /// Predicate type (as for attest).
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    predicate_type: String,
    /// Which formats to look at: both (default), bundle or legacy.
    #[arg(long, value_name = "FORMAT", default_value = "both")]
    signature_format: String,
}

impl SignArgs {
    pub fn describe(&self) -> String {
        format!("sign {}", self.reference)
    }
}

/// The password of an encrypted key: `--sign-passphrase-file` (its first line),
/// `COSIGN_PASSWORD`, or a prompt on the terminal (`confirm`: asked twice).
pub(crate) fn password(file: Option<&Path>, what: &str, confirm: bool) -> Result<Vec<u8>> {
    if let Some(f) = file {
        let text = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
        return Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
    }
    if let Some(p) = std::env::var_os("COSIGN_PASSWORD") {
        use std::os::unix::ffi::OsStrExt;
        return Ok(p.as_bytes().to_vec());
    }
    let first = prompt(&format!("Enter password for {what}: "))?;
    if confirm && prompt("Enter password again: ")? != first {
        return Err(Error::Usage("the passwords do not match".into()));
    }
    Ok(first)
}

/// Read a line from the terminal with echo off.
fn prompt(msg: &str) -> Result<Vec<u8>> {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let no_tty = |_| {
        Error::Usage(
            "the key needs a password and there is no terminal: set COSIGN_PASSWORD or give --sign-passphrase-file"
                .into(),
        )
    };
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(no_tty)?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr on a descriptor we own.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the life of `tty`.
    let have_termios = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_termios {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let _ = (&tty).write_all(msg.as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if have_termios {
        // SAFETY: restores what tcgetattr returned.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    let _ = (&tty).write_all(b"\n");
    read.map_err(|e| Error::io("/dev/tty", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
}

/// Load a private key, asking for its password only when it is encrypted.
pub(crate) fn load_private_key(path: &Path, passphrase_file: Option<&Path>) -> Result<PrivateKey> {
    let shown = path.display().to_string();
    PrivateKey::load(path, &mut || password(passphrase_file, &shown, false))
}

/// Write `bytes` to `path` atomically (temp file, fsync, rename) with `mode`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::io(path, e);
    if !force && path.symlink_metadata().is_ok() {
        return Err(Error::Usage(format!("{} exists; give --force to replace it", path.display())));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    let r = f.write_all(bytes).and_then(|_| f.sync_all()).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(io)
}

pub(crate) async fn run_key(ctx: &Ctx, cmd: KeyCmd) -> Result<i32> {
    match cmd {
        KeyCmd::Generate { out, sign_passphrase_file, force } => {
            let key_path = PathBuf::from(format!("{}.key", out.display()));
            let pub_path = PathBuf::from(format!("{}.pub", out.display()));
            for p in [&key_path, &pub_path] {
                if !force && p.symlink_metadata().is_ok() {
                    return Err(Error::Usage(format!("{} exists; give --force to replace it", p.display())));
                }
            }
            let pass = password(sign_passphrase_file.as_deref(), &key_path.display().to_string(), true)?;
            let key = PrivateKey::generate();
            write_file(&key_path, key.to_encrypted_pem(&pass)?.as_bytes(), 0o600, force)?;
            write_file(&pub_path, key.public().to_pem()?.as_bytes(), 0o644, force)?;
            if ctx.json() {
                let v = serde_json::json!({"privateKey": key_path, "publicKey": pub_path, "algorithm": key.public().algorithm()});
                outln!("{v}");
            } else {
                outln!("Private key written to {}", key_path.display());
                outln!("Public key written to {}", pub_path.display());
            }
            Ok(0)
        }
    }
}

/// The identity a signature of `ep` claims by default: a registry reference, normalized.
fn default_identity(ep: &Endpoint) -> Option<String> {
    match ep {
        Endpoint::Registry(r) => Some(r.normalized()),
        _ => None,
    }
}

pub(crate) async fn run_sign(ctx: &Ctx, args: SignArgs) -> Result<i32> {
    let format: Format = args.signature_format.parse()?;
    // the key first: a wrong password fails before the network is touched
    let key = load_private_key(&args.key, args.sign_passphrase_file.as_deref())?;
    let (ep, src, subject) = resolve_any(ctx, &args.reference).await?;
    if !matches!(ep, Endpoint::Registry(_) | Endpoint::Layout { .. }) {
        return Err(Error::Unsupported(format!("{ep}: signatures are written to registries and OCI layouts")));
    }
    let identity = match &args.sign_identity {
        Some(i) => Some(i.parse::<Reference>()?.to_string()),
        None => default_identity(&ep),
    };
    let format = match (format, &identity) {
        (Format::Both, None) => {
            ctx.progress.line(&format!(
                "{ep}: no registry name to claim (give --sign-identity); writing the bundle format only"
            ));
            Format::Bundle
        }
        (f, _) => f,
    };
    let dst = open_destination(&ep, &ctx.client, None).await?;
    let mut subjects = vec![subject.clone()];
    if args.recursive {
        let mut i = 0;
        while i < subjects.len() {
            let d = subjects[i].clone();
            if let View::Index(idx) = src.fetch_document(&d).await?.view {
                subjects.extend(idx.manifests.into_iter().filter(|m| hoist::model::media::is_document(&m.media_type)));
            }
            i += 1;
            if subjects.len() > 10_000 {
                return Err(Error::Unsupported(format!("{ep}: more than 10000 manifests to sign")));
            }
        }
    }
    let mut written = Vec::new();
    for s in &subjects {
        let req = SignRequest { subject: s, identity: identity.as_deref(), key: &key, format };
        written.extend(sign::sign(src.as_ref(), dst.as_ref(), &req).await?);
    }
    dst.finish().await?;
    if ctx.json() {
        let v = serde_json::json!({"reference": ep.to_string(), "digest": subject.digest.to_string(), "identity": identity, "signatures": written});
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in &written {
            let what = if w.added { "signed" } else { "already signed" };
            let tag = w.tag.as_deref().map(|t| format!(" (tag {t})")).unwrap_or_default();
            outln!("{} {what}: {} signature {}{tag}", w.subject, w.format, w.manifest);
        }
    }
    Ok(0)
}

pub(crate) async fn run_verify(ctx: &Ctx, args: VerifyArgs) -> Result<i32> {
    let format: Format = args.signature_format.parse()?;
    let what = (args.reference.as_str(), args.key.as_slice(), args.identity.as_deref());
    verify_and_print(ctx, what, format, payload::COSIGN_SIGN_PREDICATE, false).await
}

pub(crate) async fn run_verify_attestation(ctx: &Ctx, args: VerifyAttestationArgs) -> Result<i32> {
    let format: Format = args.signature_format.parse()?;
    let uri = sign::predicate_type_uri(&args.predicate_type)?;
    verify_and_print(ctx, (args.reference.as_str(), args.key.as_slice(), None), format, &uri, true).await
}

pub(crate) async fn run_attest(ctx: &Ctx, args: AttestArgs) -> Result<i32> {
    use std::io::Read;
    let format: Format = args.signature_format.parse()?;
    let uri = sign::predicate_type_uri(&args.predicate_type)?;
    let mut predicate = Vec::new();
    let io = |e| Error::io(&args.predicate, e);
    std::fs::File::open(&args.predicate)
        .map_err(io)?
        .take(hoist::trust::dsse::MAX_ENVELOPE)
        .read_to_end(&mut predicate)
        .map_err(io)?;
    let key = load_private_key(&args.key, args.sign_passphrase_file.as_deref())?;
    let (ep, src, subject) = resolve_any(ctx, &args.reference).await?;
    if !matches!(ep, Endpoint::Registry(_) | Endpoint::Layout { .. }) {
        return Err(Error::Unsupported(format!("{ep}: attestations are written to registries and OCI layouts")));
    }
    let identity = match &args.sign_identity {
        Some(i) => Some(i.parse::<Reference>()?.to_string()),
        None => default_identity(&ep),
    };
    let dst = open_destination(&ep, &ctx.client, None).await?;
    let req = SignRequest { subject: &subject, identity: identity.as_deref(), key: &key, format };
    let written = sign::attest(src.as_ref(), dst.as_ref(), &req, &uri, sign::predicate_value(&predicate)).await?;
    dst.finish().await?;
    if ctx.json() {
        let v = serde_json::json!({"reference": ep.to_string(), "digest": subject.digest.to_string(), "predicateType": uri, "attestations": written});
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for w in &written {
            let tag = w.tag.as_deref().map(|t| format!(" (tag {t})")).unwrap_or_default();
            outln!("{} attested ({uri}): {} {}{tag}", w.subject, w.format, w.manifest);
        }
    }
    Ok(0)
}

/// Check REF's signatures (or attestations of `predicate_type`) with the keys, print the
/// verdicts (`statements`: the verified statements too), exit 0 or 5.
async fn verify_and_print(
    ctx: &Ctx,
    (reference, key_files, identity): (&str, &[PathBuf], Option<&str>),
    format: Format,
    predicate_type: &str,
    statements: bool,
) -> Result<i32> {
    let keys = key_files.iter().map(|k| PublicKey::load(k)).collect::<Result<Vec<_>>>()?;
    let (ep, src, subject) = resolve_any(ctx, reference).await?;
    let expected: Option<Reference> = match (identity, &ep) {
        (Some(i), _) => Some(i.parse()?),
        (None, Endpoint::Registry(r)) => Some(r.clone()),
        _ => None,
    };
    let identity = verify::repository_rule(expected);
    let rules = Rules { keys: &keys, identity: &identity, format, predicate_type, first_only: false };
    let checked = verify::check(src.as_ref(), &subject, &rules).await?;
    let verdict = verify::require_verified(&ep.to_string(), &checked);
    if ctx.json() {
        let v = serde_json::json!({
            "reference": ep.to_string(),
            "digest": subject.digest.to_string(),
            "verified": verdict.is_ok(),
            "signatures": checked,
        });
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        if let Err(e) = &verdict {
            eprintln!("hoist: error: {}", printable(&e.to_string()));
            return Ok(super::exit::INTEGRITY);
        }
        return Ok(0);
    }
    for c in &checked {
        let id = c.identity.as_deref().map(|i| format!(" as {}", printable(i))).unwrap_or_default();
        match (c.verified, c.reason) {
            (true, _) if statements => outln!("{}", c.statement.clone().unwrap_or_default()),
            (true, _) => outln!("Verified: {} signature {}{id}", c.format, c.manifest),
            (false, r) => outln!(
                "Refused:  {} signature {}{id}: {}{}",
                c.format,
                c.manifest,
                r.map(|r| r.text()).unwrap_or("refused"),
                c.detail.as_deref().map(|d| format!(" ({})", printable(d))).unwrap_or_default()
            ),
        }
    }
    verdict.map(|_| 0)
}

/// `--policy FILE` (and skopeo's `--insecure-policy`) on the commands that read images.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Trust policy (containers-policy.json) the source must satisfy, checked before anything
    /// is fetched [default: ~/.config/containers/policy.json, then /etc/containers/policy.json, if present]
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Do not read any trust policy (skopeo's --insecure-policy)
    #[arg(long, conflicts_with = "policy")]
    pub insecure_policy: bool,
}

impl PolicyArgs {
    /// The policy to apply: `--policy`, else the first default file that exists, else none.
    pub fn load(&self) -> Result<Option<Policy>> {
        if self.insecure_policy {
            return Ok(None);
        }
        match &self.policy {
            Some(p) => Policy::load(p).map(Some),
            None => policy::default_path().map(|p| Policy::load(&p)).transpose(),
        }
    }

    /// Check `subject` (what `ep` resolved to in `src`) against the policy, if any.
    pub async fn check(
        &self,
        ep: &Endpoint,
        src: &dyn hoist::transport::Source,
        subject: &hoist::Descriptor,
    ) -> Result<()> {
        match self.load()? {
            Some(p) => p.check(ep, src, subject).await,
            None => Ok(()),
        }
    }
}

/// skopeo's signing flags on `copy`, `push` and the commands that push what they made.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct SignByArgs {
    /// Sign what the destination got (cosign's legacy and bundle formats) with this private key
    #[arg(long, value_name = "KEY")]
    pub sign_by_sigstore_private_key: Option<PathBuf>,
    /// Read the signing key's password from the first line of FILE (else COSIGN_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE")]
    pub sign_passphrase_file: Option<PathBuf>,
    /// The docker-reference the signature claims [default: the destination's normalized name]
    #[arg(long, value_name = "REF")]
    pub sign_identity: Option<String>,
    /// skopeo's GPG signing: refused (hoist signs with sigstore keys, --sign-by-sigstore-private-key)
    #[arg(long, value_name = "FINGERPRINT")]
    pub sign_by: Option<String>,
}

impl SignByArgs {
    /// The signer, when `--sign-by-sigstore-private-key` is given (its password asked now,
    /// before anything is copied); `dst` must hold signatures.
    pub fn load(&self, dst: &Endpoint) -> Result<Option<Signer>> {
        self.load_for(std::slice::from_ref(dst))
    }

    /// As [`SignByArgs::load`] for a command writing to several destinations (`--output`s):
    /// at least one must hold signatures; the others are passed over.
    pub fn load_for(&self, dsts: &[Endpoint]) -> Result<Option<Signer>> {
        if let Some(f) = &self.sign_by {
            return Err(Error::Unsupported(format!(
                "--sign-by {}: GPG signatures (simple signing in a lookaside store) are not written by hoist; sign with a sigstore key: --sign-by-sigstore-private-key KEY",
                printable(f)
            )));
        }
        let Some(k) = &self.sign_by_sigstore_private_key else {
            if self.sign_identity.is_some() || self.sign_passphrase_file.is_some() {
                return Err(Error::Usage(
                    "--sign-identity and --sign-passphrase-file need --sign-by-sigstore-private-key".into(),
                ));
            }
            return Ok(None);
        };
        if !dsts.iter().any(Signer::can_sign) {
            let names: Vec<String> = dsts.iter().map(|d| d.to_string()).collect();
            return Err(Error::Unsupported(format!(
                "{}: --sign-by-sigstore-private-key writes signatures to registries and OCI layouts only",
                if names.is_empty() { "no destination".to_string() } else { names.join(", ") }
            )));
        }
        let identity =
            self.sign_identity.as_deref().map(|i| i.parse::<Reference>().map(|r| r.to_string())).transpose()?;
        Ok(Some(Signer { key: load_private_key(k, self.sign_passphrase_file.as_deref())?, identity }))
    }

    /// [`SignByArgs::load_for`] the destinations of `outputs`.
    pub fn load_for_outputs(&self, outputs: &[hoist::output::OutputSpec]) -> Result<Option<Signer>> {
        if self.sign_by_sigstore_private_key.is_none() {
            return self.load_for(&[]);
        }
        let dsts: Vec<Endpoint> = outputs
            .iter()
            .filter(|o| !o.local_only && o.filesystem.is_none())
            .flat_map(|o| o.destinations().into_iter().map(|(e, _)| e))
            .collect();
        self.load_for(&dsts)
    }
}

/// Sign `root` at every output that holds signatures (after they were written), saying so.
pub(crate) async fn sign_outputs(
    ctx: &Ctx,
    signer: Option<&Signer>,
    root: &hoist::Descriptor,
    outputs: &[hoist::output::OutputSpec],
) -> Result<Vec<sign::Written>> {
    let Some(signer) = signer else { return Ok(Vec::new()) };
    let (written, passed) = hoist::output::sign_outputs(signer, root, outputs, &ctx.client).await?;
    for w in &written {
        ctx.progress.line(&format!("signed {}: {} signature {}", w.subject, w.format, w.manifest));
    }
    for p in &passed {
        ctx.progress.line(&format!("{p}: not signed (signatures go to registries and OCI layouts)"));
    }
    Ok(written)
}
