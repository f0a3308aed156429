//! OpenSSF model signing (the `model-signing` package on PyPI, `model_signing sign key`):
//! a model directory hashed file by file into an in-toto statement of predicate type
//! `https://model_signing/signature/v1.0`, signed as a DSSE envelope inside a Sigstore bundle
//! v0.3 (`model.sig`).
//!
//! - The statement's `predicate.resources` list every file (`name` = its path relative to
//!   the model, `/`-separated; `algorithm` `sha256`; `digest` hex), sorted as the Python
//!   library sorts paths (component by component); its one subject is the model's name
//!   with the SHA-256 of the concatenated raw file digests.
//! - `predicate.serialization` records how to hash again: `method` `files` (or `shards`,
//!   read only, with `shard_size`: resources named `path:start:end`), `hash_type`,
//!   `allow_symlinks` and `ignore_paths` (relative to the model; a path ignores everything
//!   under it). Git's files (`.git`, `.github`, `.gitattributes`, `.gitignore`) and the
//!   signature file itself are ignored, as the Python CLI does.
//! - The bundle's `verificationMaterial.publicKey.hint` is the hex SHA-256 of the public
//!   key's PEM, which the Python verifier compares with its key.
//!
//! Verifying hashes the directory again with the recorded serialization and names every
//! file that changed, is missing, or was not signed.
//!
//! A model that is one file (a `.gguf`, a `.safetensors`) is signed as the Python library
//! signs it: one resource named `.` (shards `.:start:end`), the subject named after the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::Digest as _;

use super::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use super::keys::{PrivateKey, PublicKey};
use super::payload::{Bundle, BUNDLE_MEDIA_TYPE};
use crate::error::{Error, IoContext, Result};
use crate::ingest::FileProgress;

/// The predicate type of a model signature.
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The default signature file name (inside the model directory for `hoist model sign`).
pub const SIGNATURE_FILE: &str = "model.sig";

/// Paths the Python CLI ignores by default (`--ignore-git-paths`).
pub const GIT_PATHS: [&str; 4] = [".gitignore", ".gitattributes", ".git", ".github"];

/// Largest signature file read (its resources list every file of the model).
pub const MAX_SIGNATURE: u64 = 64 * 1024 * 1024;

/// Most files (or shards) one model may have.
pub const MAX_RESOURCES: usize = 1_000_000;

/// How a model is cut into resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// One resource per file (what `model_signing sign` writes, and what hoist writes).
    Files,
    /// Files cut into shards of this many bytes (`path:start:end`), read only.
    Shards(u64),
}

/// The `serialization` of a model signature: everything needed to hash the model again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serialization {
    /// Files or shards.
    pub method: Method,
    /// Whether symlinks are followed (refused otherwise).
    pub allow_symlinks: bool,
    /// Paths relative to the model that are not part of it.
    pub ignore_paths: Vec<String>,
}

impl Serialization {
    /// Hoist's default: files, no symlinks, git's files and `extra` ignored.
    pub fn files(extra: &[String]) -> Serialization {
        let mut ignore_paths: Vec<String> = Vec::new();
        for p in extra.iter().map(String::as_str).chain(GIT_PATHS) {
            let p = normalize_rel(p);
            if !p.is_empty() && !ignore_paths.contains(&p) {
                ignore_paths.push(p);
            }
        }
        Serialization { method: Method::Files, allow_symlinks: false, ignore_paths }
    }

    /// The JSON the Python library writes.
    fn to_json(&self) -> Value {
        let mut v = json!({"allow_symlinks": self.allow_symlinks, "hash_type": "sha256", "method": "files"});
        if let Method::Shards(size) = self.method {
            v["method"] = json!("shards");
            v["shard_size"] = json!(size);
        }
        if !self.ignore_paths.is_empty() {
            v["ignore_paths"] = json!(self.ignore_paths);
        }
        v
    }

    fn from_json(v: &Value, what: &str) -> Result<Serialization> {
        let bad = |why: String| Error::malformed("model signature serialization", what, why);
        let hash = v.get("hash_type").and_then(Value::as_str).unwrap_or_default();
        if hash != "sha256" {
            return Err(Error::Unsupported(format!(
                "{what}: hash_type {hash:?} (hoist checks sha256 model signatures)"
            )));
        }
        let method = match v.get("method").and_then(Value::as_str) {
            Some("files") => Method::Files,
            // a protobuf Struct number: the Python library writes 1000.0
            Some("shards") => match v.get("shard_size").and_then(Value::as_f64) {
                Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= u64::MAX as f64 => Method::Shards(n as u64),
                _ => return Err(bad("shards without a positive shard_size".into())),
            },
            other => return Err(bad(format!("method {other:?}"))),
        };
        let allow_symlinks = v.get("allow_symlinks").and_then(Value::as_bool).unwrap_or(false);
        let ignore_paths = match v.get("ignore_paths") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| p.as_str().map(normalize_rel).ok_or_else(|| bad("ignore_paths holds a non-string".into())))
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("ignore_paths is not a list".into())),
        };
        Ok(Serialization { method, allow_symlinks, ignore_paths })
    }
}

/// `./a/b/` -> `a/b` (the form ignore paths are compared in).
fn normalize_rel(p: &str) -> String {
    p.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

/// Whether `rel` (components) is at or under one of the ignore paths.
fn ignored(rel: &[String], ignore: &[Vec<String>]) -> bool {
    ignore.iter().any(|i| !i.is_empty() && rel.len() >= i.len() && rel[..i.len()] == i[..])
}

/// One resource's key: the file's path components and, for shards, its byte range. Ordered
/// as the Python library orders them (paths component by component, then offsets).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Path components relative to the model.
    pub path: Vec<String>,
    /// `(start, end)` for a shard.
    pub range: Option<(u64, u64)>,
}

impl Key {
    /// The resource name: `a/b.bin`, or `a/b.bin:0:1000` for a shard; `.` is the model
    /// itself when it is one file.
    pub fn name(&self) -> String {
        let p = if self.path.is_empty() { ".".to_string() } else { self.path.join("/") };
        match self.range {
            Some((s, e)) => format!("{p}:{s}:{e}"),
            None => p,
        }
    }

    fn parse(name: &str, method: &Method, what: &str) -> Result<Key> {
        let bad = |why: &str| Error::malformed("model signature resource", what, format!("{name:?}: {why}"));
        let (path, range) = match method {
            Method::Files => (name, None),
            Method::Shards(_) => {
                let mut it = name.rsplitn(3, ':');
                let (e, s, p) = (it.next(), it.next(), it.next());
                let (Some(e), Some(s), Some(p)) = (e, s, p) else { return Err(bad("want path:start:end")) };
                let (s, e) = (s.parse().map_err(|_| bad("start"))?, e.parse().map_err(|_| bad("end"))?);
                (p, Some((s, e)))
            }
        };
        let rel = normalize_rel(path);
        // `.`: the model is this one file
        let path: Vec<String> = if rel.is_empty() { Vec::new() } else { rel.split('/').map(str::to_string).collect() };
        if path.iter().any(|c| c == ".." || c.is_empty()) {
            return Err(bad("not a path inside the model"));
        }
        Ok(Key { path, range })
    }
}

/// A model as hashed: its name, how it was hashed, and every resource's SHA-256.
#[derive(Clone, Debug)]
pub struct ModelManifest {
    /// The model's name (the directory's last component).
    pub name: String,
    /// How it was hashed.
    pub serialization: Serialization,
    /// Every resource and its digest.
    pub resources: BTreeMap<Key, [u8; 32]>,
}

impl ModelManifest {
    /// The subject digest: SHA-256 over the raw digests in resource order.
    pub fn root_digest(&self) -> String {
        let mut h = sha2::Sha256::new();
        for d in self.resources.values() {
            h.update(d);
        }
        hex::encode(h.finalize())
    }

    /// The in-toto statement, laid out as the Python library writes it.
    pub fn statement(&self) -> Vec<u8> {
        let algorithm = match self.serialization.method {
            Method::Files => "sha256".to_string(),
            Method::Shards(n) => format!("sha256-sharded-{n}"),
        };
        let resources: Vec<Value> = self
            .resources
            .iter()
            .map(|(k, d)| json!({"name": k.name(), "algorithm": algorithm, "digest": hex::encode(d)}))
            .collect();
        let v = json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.name, "digest": {"sha256": self.root_digest()}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"resources": resources, "serialization": self.serialization.to_json()},
        });
        serde_json::to_vec_pretty(&v).expect("json")
    }

    /// Read a verified statement back; the subject digest must match the resources.
    pub fn from_statement(bytes: &[u8], what: &str) -> Result<ModelManifest> {
        let bad = |why: String| Error::malformed("model signature statement", what, why);
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if v.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE) {
            return Err(bad(format!("_type is not {STATEMENT_TYPE}")));
        }
        match v.get("predicateType").and_then(Value::as_str) {
            Some(PREDICATE_TYPE) => {}
            other => {
                return Err(Error::Unsupported(format!("{what}: predicate type {other:?}, want {PREDICATE_TYPE}")))
            }
        }
        let subjects = v.get("subject").and_then(Value::as_array).ok_or_else(|| bad("no subject".into()))?;
        let [subject] = subjects.as_slice() else { return Err(bad(format!("{} subjects, want 1", subjects.len()))) };
        let name = subject.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let root = subject.pointer("/digest/sha256").and_then(Value::as_str).unwrap_or_default();
        let predicate = v.get("predicate").ok_or_else(|| bad("no predicate".into()))?;
        let serialization = Serialization::from_json(
            predicate.get("serialization").ok_or_else(|| bad("no serialization".into()))?,
            what,
        )?;
        let list = predicate.get("resources").and_then(Value::as_array).ok_or_else(|| bad("no resources".into()))?;
        if list.len() > MAX_RESOURCES {
            return Err(bad(format!("more than {MAX_RESOURCES} resources")));
        }
        // the root digest is over the resources in the order listed
        let mut h = sha2::Sha256::new();
        let mut resources = BTreeMap::new();
        for r in list {
            let rname = r.get("name").and_then(Value::as_str).ok_or_else(|| bad("a resource without name".into()))?;
            let alg = r.get("algorithm").and_then(Value::as_str).unwrap_or_default();
            // shards are `sha256-sharded-<size>`
            if alg != "sha256" && !alg.starts_with("sha256-sharded-") {
                return Err(Error::Unsupported(format!("{what}: resource {rname:?} uses {alg:?}, not sha256")));
            }
            let digest: [u8; 32] = r
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| hex::decode(d).ok())
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| bad(format!("resource {rname:?}: digest is not 32 bytes of hex")))?;
            h.update(digest);
            resources.insert(Key::parse(rname, &serialization.method, what)?, digest);
        }
        let computed = hex::encode(h.finalize());
        if computed != root {
            return Err(bad(format!("subject digest {root} but the resources hash to {computed}")));
        }
        Ok(ModelManifest { name, serialization, resources })
    }
}

/// Hash the model at `dir` (a directory, or one file) with `ser`, reporting each file to
/// `progress`. Files are hashed in parallel (one thread per core, at most 8).
pub fn hash_model(dir: &Path, ser: &Serialization, progress: &dyn FileProgress) -> Result<ModelManifest> {
    let meta = std::fs::symlink_metadata(dir).at(dir)?;
    let meta = if meta.file_type().is_symlink() { std::fs::metadata(dir).at(dir)? } else { meta };
    let mut files: Vec<(Vec<String>, PathBuf, u64)> = Vec::new();
    if meta.is_file() {
        // one file: the resource `.` (its ignore paths, relative to it, match nothing)
        files.push((Vec::new(), dir.to_path_buf(), meta.len()));
    } else if !meta.is_dir() {
        return Err(Error::Usage(format!("{}: a model to sign or verify is a directory or a file", dir.display())));
    } else {
        walk_model(dir, ser, &mut files)?;
    }
    hash_files(dir, ser, files, progress)
}

/// Every file of the model directory `dir` that `ser` does not ignore: (path components,
/// path, size).
fn walk_model(dir: &Path, ser: &Serialization, files: &mut Vec<(Vec<String>, PathBuf, u64)>) -> Result<()> {
    let ignore: Vec<Vec<String>> =
        ser.ignore_paths.iter().map(|p| normalize_rel(p).split('/').map(str::to_string).collect()).collect();
    let mut walk = walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).sort_by_file_name().into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            Error::io(path, e.into())
        })?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let comps = rel
            .components()
            .map(|c| {
                c.as_os_str().to_str().map(str::to_string).ok_or_else(|| {
                    Error::Unsupported(format!("{}: a file name that is not UTF-8", entry.path().display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if ignored(&comps, &ignore) {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        let ft = entry.file_type();
        let size = if ft.is_symlink() {
            if !ser.allow_symlinks {
                return Err(Error::Unsupported(format!(
                    "{}: a symlink in the model (give --allow-symlinks to follow symlinks)",
                    entry.path().display()
                )));
            }
            let m = std::fs::metadata(entry.path()).at(entry.path())?;
            if !m.is_file() {
                continue;
            }
            m.len()
        } else if ft.is_dir() {
            continue;
        } else if ft.is_file() {
            entry.metadata().map_err(|e| Error::io(entry.path(), e.into()))?.len()
        } else {
            return Err(Error::Unsupported(format!("{}: neither a file nor a directory", entry.path().display())));
        };
        files.push((comps, entry.path().to_path_buf(), size));
    }
    Ok(())
}

/// Hash `files` of the model at `dir` as `ser` cuts them into resources.
fn hash_files(
    dir: &Path,
    ser: &Serialization,
    files: Vec<(Vec<String>, PathBuf, u64)>,
    progress: &dyn FileProgress,
) -> Result<ModelManifest> {
    let mut jobs: Vec<(Key, usize)> = Vec::new();
    for (i, (comps, _, size)) in files.iter().enumerate() {
        match ser.method {
            Method::Files => jobs.push((Key { path: comps.clone(), range: None }, i)),
            Method::Shards(n) => {
                let mut start = 0;
                while start < *size {
                    let end = (start + n).min(*size);
                    jobs.push((Key { path: comps.clone(), range: Some((start, end)) }, i));
                    start = end;
                }
            }
        }
        if jobs.len() > MAX_RESOURCES {
            return Err(Error::Unsupported(format!("{}: more than {MAX_RESOURCES} files", dir.display())));
        }
    }
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8).min(jobs.len().max(1));
    /// What one hashing thread did: (job index, digest) pairs.
    type Hashed = Result<Vec<(usize, [u8; 32])>>;
    let results: Vec<Hashed> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some((key, file)) = jobs.get(j) else { return Ok(out) };
                        let (_, path, size) = &files[*file];
                        let name = key.name();
                        let (start, end) = key.range.unwrap_or((0, *size));
                        out.push((j, hash_range(path, (start, end, *size), &name, progress)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Panicked { what: "hashing".into() })))
            .collect()
    });
    let mut resources = BTreeMap::new();
    for r in results {
        for (j, d) in r? {
            resources.insert(jobs[j].0.clone(), d);
        }
    }
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(ModelManifest { name, serialization: ser.clone(), resources })
}

/// SHA-256 of bytes `start..end` of `path` (a file of `size` bytes when listed); a file that
/// grew or shrank while hashed is an error.
fn hash_range(
    path: &Path,
    (start, end, size): (u64, u64, u64),
    name: &str,
    progress: &dyn FileProgress,
) -> Result<[u8; 32]> {
    let mut f = File::open(path).at(path)?;
    if start > 0 {
        f.seek(SeekFrom::Start(start)).at(path)?;
    }
    progress.file_start(name, end - start);
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = end - start;
    // the last range reads one byte more, to notice a file that grew
    let mut r = f.take(if end == size { left + 1 } else { left });
    loop {
        let n = r.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        if n as u64 > left {
            return Err(Error::changed(path, "the file grew while it was hashed"));
        }
        left -= n as u64;
        h.update(&buf[..n]);
        progress.file_advance(name, n as u64);
    }
    if left != 0 {
        return Err(Error::changed(path, "the file shrank while it was hashed"));
    }
    let d: [u8; 32] = h.finalize().into();
    if let Ok(digest) = format!("sha256:{}", hex::encode(d)).parse::<crate::model::digest::Digest>() {
        progress.file_done(name, &digest);
    }
    Ok(d)
}

/// The key hint the Python library writes and checks: hex SHA-256 of the public key's PEM.
pub fn key_hint(key: &PublicKey) -> Result<String> {
    Ok(hex::encode(sha2::Sha256::digest(key.to_pem()?.as_bytes())))
}

/// Sign `manifest`: the bundle (`model.sig`'s bytes, JSON).
pub fn sign_manifest(manifest: &ModelManifest, key: &PrivateKey) -> Result<Vec<u8>> {
    let envelope = Envelope::sign(key, IN_TOTO_PAYLOAD_TYPE, &manifest.statement())?;
    Ok(Bundle::new(envelope, &key_hint(&key.public())?).to_json())
}

/// What a checked model signature says.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// The model's name in the signature.
    pub name: String,
    /// The subject digest (`sha256:<hex>` over the resource digests).
    pub root_digest: String,
    /// How many resources (files or shards) were checked.
    pub resources: usize,
    /// `files` or `shards`.
    pub method: &'static str,
}

/// The statement in `bundle` when it is signed by one of `keys`: a v0.3 bundle, a key hint
/// (when present) matching one of them, an in-toto DSSE payload. `what` names the signature.
pub fn open_bundle(bundle: &[u8], keys: &[PublicKey], what: &str) -> Result<ModelManifest> {
    let b = Bundle::parse(bundle, what)?;
    if b.media_type != BUNDLE_MEDIA_TYPE {
        return Err(Error::malformed("model signature", what, format!("bundle mediaType {:?}", b.media_type)));
    }
    let env = b.dsse_envelope.ok_or_else(|| {
        Error::Unsupported(format!("{what}: a bundle without a DSSE envelope is not a model signature"))
    })?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(Error::malformed("model signature", what, format!("payloadType {:?}", env.payload_type)));
    }
    let hint = b.verification_material.pointer("/publicKey/hint").and_then(Value::as_str).unwrap_or_default();
    let candidates: Vec<PublicKey> = if hint.is_empty() {
        keys.to_vec()
    } else {
        keys.iter().filter(|k| key_hint(k).is_ok_and(|h| h == hint)).cloned().collect()
    };
    if candidates.is_empty() {
        return Err(Error::Untrusted {
            reference: what.to_string(),
            reason: "wrong key: the signature names another public key".into(),
        });
    }
    let payload = env.verify(&candidates).map_err(|_| Error::Untrusted {
        reference: what.to_string(),
        reason: "wrong key or tampered signature".into(),
    })?;
    ModelManifest::from_statement(&payload, what)
}

/// Compare what the model holds now with what was signed; every difference, named.
pub fn compare(signed: &ModelManifest, actual: &ModelManifest, what: &str) -> Result<()> {
    let mut changed = Vec::new();
    let mut missing = Vec::new();
    for (k, d) in &signed.resources {
        match actual.resources.get(k) {
            Some(a) if a == d => {}
            Some(_) => changed.push(k.name()),
            None => missing.push(k.name()),
        }
    }
    let extra: Vec<String> =
        actual.resources.keys().filter(|k| !signed.resources.contains_key(k)).map(Key::name).collect();
    let mut reasons = Vec::new();
    if !changed.is_empty() {
        reasons.push(format!("hash mismatch for {}", quoted(&changed)));
    }
    if !missing.is_empty() {
        reasons.push(format!("signed but missing: {}", quoted(&missing)));
    }
    if !extra.is_empty() {
        reasons.push(format!("not signed: {}", quoted(&extra)));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Error::Untrusted { reference: what.to_string(), reason: reasons.join("; ") })
}

fn quoted(names: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = names.iter().take(SHOWN).map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Verify the model at `dir` against the signature `bundle` (read from `sig_path`, which is
/// ignored when inside `dir`): signed by one of `keys`, every file as signed.
pub fn verify_dir(
    dir: &Path,
    bundle: &[u8],
    sig_path: &Path,
    keys: &[PublicKey],
    progress: &dyn FileProgress,
) -> Result<Verified> {
    let what = sig_path.display().to_string();
    let signed = open_bundle(bundle, keys, &what)?;
    let mut ser = signed.serialization.clone();
    for p in GIT_PATHS.iter().map(|s| s.to_string()).chain(inside(dir, sig_path)) {
        if !ser.ignore_paths.contains(&p) {
            ser.ignore_paths.push(p);
        }
    }
    let actual = hash_model(dir, &ser, progress)?;
    compare(&signed, &actual, &dir.display().to_string())?;
    Ok(Verified {
        name: signed.name.clone(),
        root_digest: format!("sha256:{}", signed.root_digest()),
        resources: signed.resources.len(),
        method: match signed.serialization.method {
            Method::Files => "files",
            Method::Shards(_) => "shards",
        },
    })
}

/// `path` relative to `dir` when it is inside it (both resolved), `/`-separated.
pub fn inside(dir: &Path, path: &Path) -> Option<String> {
    let d = std::fs::canonicalize(dir).ok()?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let p = std::fs::canonicalize(parent).ok()?.join(path.file_name()?);
    let rel = p.strip_prefix(&d).ok()?;
    rel.to_str().map(normalize_rel).filter(|r| !r.is_empty())
}

/// Sign the model at `dir` with `key`: hash it (git's files, `ignore` and the signature
/// file `sig_path` left out when inside) and return the bundle and what was signed.
pub fn sign_dir(
    dir: &Path,
    key: &PrivateKey,
    sig_path: &Path,
    ignore: &[String],
    progress: &dyn FileProgress,
) -> Result<(Vec<u8>, ModelManifest)> {
    let mut extra: Vec<String> = ignore.to_vec();
    extra.extend(inside(dir, sig_path));
    let manifest = hash_model(dir, &Serialization::files(&extra), progress)?;
    Ok((sign_manifest(&manifest, key)?, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::NoFileProgress;

    fn model() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a")).unwrap();
        std::fs::write(t.path().join("a.txt"), b"x").unwrap();
        std::fs::write(t.path().join("a/b"), b"y").unwrap();
        std::fs::create_dir_all(t.path().join(".git")).unwrap();
        std::fs::write(t.path().join(".git/HEAD"), b"z").unwrap();
        t
    }

    #[test]
    fn resources_sort_by_component_and_round_trip() {
        let t = model();
        let m = hash_model(t.path(), &Serialization::files(&[]), &NoFileProgress).unwrap();
        let names: Vec<String> = m.resources.keys().map(Key::name).collect();
        // "a" < "a.txt" component-wise, though "a.txt" < "a/b" as strings
        assert_eq!(names, ["a/b", "a.txt"]);
        let back = ModelManifest::from_statement(&m.statement(), "t").unwrap();
        assert_eq!(back.resources, m.resources);
        assert_eq!(back.serialization, m.serialization);
        let key = PrivateKey::generate();
        let sig = sign_manifest(&m, &key).unwrap();
        let opened = open_bundle(&sig, &[key.public()], "t").unwrap();
        compare(&opened, &m, "t").unwrap();
        assert!(open_bundle(&sig, &[PrivateKey::generate().public()], "t").is_err());
    }

    #[test]
    fn one_file_is_the_resource_dot() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("tiny.gguf");
        std::fs::write(&f, vec![9u8; 10]).unwrap();
        let m = hash_model(&f, &Serialization::files(&[]), &NoFileProgress).unwrap();
        assert_eq!(m.name, "tiny.gguf");
        let names: Vec<String> = m.resources.keys().map(Key::name).collect();
        assert_eq!(names, ["."]);
        let back = ModelManifest::from_statement(&m.statement(), "t").unwrap();
        assert_eq!(back.resources, m.resources);
        let ser = Serialization { method: Method::Shards(4), allow_symlinks: false, ignore_paths: vec![] };
        let m = hash_model(&f, &ser, &NoFileProgress).unwrap();
        let names: Vec<String> = m.resources.keys().map(Key::name).collect();
        assert_eq!(names, [".:0:4", ".:4:8", ".:8:10"]);
        let back = ModelManifest::from_statement(&m.statement(), "t").unwrap();
        assert_eq!(back.resources, m.resources);
    }

    #[test]
    fn shards_cover_every_byte() {
        let t = model();
        std::fs::write(t.path().join("big"), vec![7u8; 10]).unwrap();
        let ser = Serialization { method: Method::Shards(4), allow_symlinks: false, ignore_paths: vec![".git".into()] };
        let m = hash_model(t.path(), &ser, &NoFileProgress).unwrap();
        let names: Vec<String> = m.resources.keys().map(Key::name).collect();
        assert_eq!(names, ["a/b:0:1", "a.txt:0:1", "big:0:4", "big:4:8", "big:8:10"]);
        let back = ModelManifest::from_statement(&m.statement(), "t").unwrap();
        assert_eq!(back.resources, m.resources);
    }
}
