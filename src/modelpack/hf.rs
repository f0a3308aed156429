//! Hugging Face hub as a model source: `hf://ORG/REPO[@REVISION]`.
//!
//! The hub API lists the repo (`/api/models/{repo}/revision/{rev}` for the commit a revision
//! resolves to, `/api/models/{repo}/tree/{commit}?recursive=true` for the files, whose
//! `lfs.oid` is the sha256 of an LFS file); files come from `/{repo}/resolve/{commit}/{path}`.
//! An LFS file's layer descriptor is known from the listing alone, so a destination that has
//! the blob is never downloaded from; one that lacks it gets the file streamed from the hub
//! straight into it (registry upload or layout blob, verified there). Small non-LFS files
//! (config.json, tokenizers; the hub keeps files over 10 MB in LFS) are fetched into memory
//! and hashed. A download cut short continues with `Range` from where it stopped.
//!
//! Every request goes through the registry client's network layer
//! ([`crate::transport::registry::Client::get_url`], as `ADD <url>` does): the same TLS trust,
//! proxy rules, `--read-timeout`, `--retries` (with `Retry-After`) and bounded bodies as a
//! registry's. The token goes to the hub's own origin only.
//!
//! Not for: uploads to the hub, datasets or spaces.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::planned::{Origin, PlannedModel, RemoteFiles};
use super::{
    annotate_file_layer, describe, layer_media_type, Described, FileSelector, ModelFileKind, ModelLayerFormat,
    ModelMeta, ModelSpec,
};
use crate::error::{Error, Result};
use crate::ingest::{rfc3339, source_date_epoch};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;
use crate::model::write::ImageManifest;
use crate::transport::registry::http::{link_next_target, UrlResponse};
use crate::transport::registry::retry::RetryState;
use crate::transport::registry::Client;
use crate::transport::BlobStream;

/// Default hub endpoint (`HF_ENDPOINT` overrides it).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Largest API answer read (a tree listing of a repo with tens of thousands of files is a
/// few MiB).
pub const MAX_API_RESPONSE: u64 = 64 << 20;

/// Largest non-LFS file fetched into memory to hash it (the hub refuses non-LFS files over
/// 10 MB; this leaves room).
pub const MAX_INLINE_FILE: u64 = 64 << 20;

/// Most bytes fetched from the start of a GGUF file to read its header; a header longer than
/// this leaves the description to a Modelfile or flags.
pub const MAX_REMOTE_GGUF_HEADER: u64 = 16 << 20;

/// A parsed `hf://ORG/REPO[@REVISION]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfRef {
    /// `ORG/REPO`.
    pub repo: String,
    /// Branch, tag or commit (`main` when not given).
    pub revision: String,
}

impl HfRef {
    /// Parse `hf://ORG/REPO[@REV]` (also `huggingface://`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Result<HfRef>> {
        let rest = s.strip_prefix("hf://").or_else(|| s.strip_prefix("huggingface://"))?;
        let (repo, rev) = rest.split_once('@').unwrap_or((rest, "main"));
        let ok = repo.split('/').count() == 2
            && repo.split('/').all(|p| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
            && !rev.is_empty()
            && !rev.contains("..");
        if !ok {
            return Some(Err(Error::InvalidReference {
                reference: s.to_string(),
                reason: "expected hf://ORG/REPO[@REVISION]".into(),
            }));
        }
        Some(Ok(HfRef { repo: repo.to_string(), revision: rev.to_string() }))
    }
}

/// One file of a hub repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfFile {
    /// Path in the repo.
    pub path: String,
    /// Size.
    pub size: u64,
    /// sha256 (hex) from the LFS metadata, when the hub gives it.
    pub sha256: Option<String>,
}

/// A hub client for one repo at one commit, over the registry client's network layer
/// ([`Client::get_url`]: TLS, proxy, timeouts, retries, bounded bodies).
pub struct HfRepo {
    net: Arc<Client>,
    endpoint: String,
    /// The endpoint's origin (scheme, host, port): the only one the token is sent to.
    origin: url::Origin,
    token: Option<String>,
    /// `ORG/REPO`.
    pub repo: String,
    /// The commit the revision resolved to.
    pub commit: String,
}

fn enc(s: &str) -> String {
    s.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl HfRepo {
    /// Resolve `r.revision` to a commit through the hub at `endpoint` (`HF_ENDPOINT`),
    /// talking to it through `net`'s network layer; `token` goes to `endpoint`'s host only.
    pub async fn open(net: Arc<Client>, endpoint: &str, token: Option<String>, r: &HfRef) -> Result<HfRepo> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let origin = url::Url::parse(&endpoint)
            .map_err(|e| Error::InvalidReference { reference: endpoint.clone(), reason: format!("HF_ENDPOINT: {e}") })?
            .origin();
        let mut repo = HfRepo { net, endpoint, origin, token, repo: r.repo.clone(), commit: String::new() };
        let url =
            format!("{}/api/models/{}/revision/{}", repo.endpoint, repo.repo, enc(&r.revision).replace('/', "%2F"));
        let v: serde_json::Value = repo.get_json(&url).await?;
        let sha = v.get("sha").and_then(|s| s.as_str()).unwrap_or("");
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::malformed("hub revision", url, "no commit sha"));
        }
        repo.commit = sha.to_ascii_lowercase();
        Ok(repo)
    }

    /// The hub's `host[:port]`, naming it in errors.
    fn site(&self) -> &str {
        self.endpoint.split_once("://").map_or(&self.endpoint, |(_, h)| h)
    }

    /// `GET url` (bytes from `offset`, to `end` inclusive when given) through the network
    /// layer, with the token when `url` is on the hub's own origin (a `Link` to another host
    /// does not get it).
    async fn get(&self, url: &str, offset: u64, end: Option<u64>) -> Result<UrlResponse> {
        let mut h = Vec::new();
        if let Some(t) = &self.token {
            if url::Url::parse(url).is_ok_and(|u| u.origin() == self.origin) {
                h.push(("Authorization", format!("Bearer {t}")));
            }
        }
        if offset > 0 || end.is_some() {
            let end = end.map(|e| e.to_string()).unwrap_or_default();
            h.push(("Range", format!("bytes={offset}-{end}")));
        }
        self.net.get_url(url, &h).await
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        let resp = self.get(url, 0, None).await?;
        let status = resp.status;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::Auth {
                registry: self.endpoint.clone(),
                reason: format!("{status} for {url} (set HF_TOKEN or --hf-token)"),
            });
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::not_found(url.to_string(), self.endpoint.clone()));
        }
        if !status.is_success() {
            return Err(Error::HttpStatus { url: url.to_string(), status, detail: String::new() });
        }
        let b = resp.read_limited(MAX_API_RESPONSE, "hub API answer", self.site()).await?;
        serde_json::from_slice(&b).map_err(|e| Error::malformed("hub API answer", url.to_string(), e.to_string()))
    }

    /// `https://huggingface.co/ORG/REPO` (what `descriptor.sourceURL` records).
    pub fn source_url(&self) -> String {
        format!("{}/{}", self.endpoint, self.repo)
    }

    /// Every file of the repo at the commit (following `Link: <…>; rel="next"` pages).
    pub async fn list(&self) -> Result<Vec<HfFile>> {
        let mut url = Some(format!("{}/api/models/{}/tree/{}?recursive=true", self.endpoint, self.repo, self.commit));
        let mut out = Vec::new();
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(Error::malformed("hub tree", u, "too many pages"));
            }
            let resp = self.get(&u, 0, None).await?;
            if !resp.status.is_success() {
                return Err(Error::HttpStatus { url: u, status: resp.status, detail: String::new() });
            }
            url = resp.headers.get("link").and_then(|l| l.to_str().ok()).and_then(link_next_target).map(str::to_string);
            let b = resp.read_limited(MAX_API_RESPONSE, "hub tree", self.site()).await?;
            let v: Vec<serde_json::Value> =
                serde_json::from_slice(&b).map_err(|e| Error::malformed("hub tree", u.clone(), e.to_string()))?;
            for e in v {
                if e.get("type").and_then(|t| t.as_str()) != Some("file") {
                    continue;
                }
                let (Some(path), Some(size)) =
                    (e.get("path").and_then(|p| p.as_str()), e.get("size").and_then(|s| s.as_u64()))
                else {
                    continue;
                };
                let sha256 = e
                    .get("lfs")
                    .and_then(|l| l.get("oid"))
                    .and_then(|o| o.as_str())
                    .filter(|o| o.len() == 64 && o.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_ascii_lowercase);
                out.push(HfFile { path: path.to_string(), size, sha256 });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn file_url(&self, path: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.endpoint, self.repo, self.commit, enc(path))
    }

    async fn get_range(&self, path: &str, offset: u64, end: Option<u64>) -> Result<UrlResponse> {
        let url = self.file_url(path);
        let resp = self.get(&url, offset, end).await?;
        let ok =
            if offset > 0 { resp.status == reqwest::StatusCode::PARTIAL_CONTENT } else { resp.status.is_success() };
        if !ok {
            return Err(Error::HttpStatus { url, status: resp.status, detail: format!(" (from byte {offset})") });
        }
        Ok(resp)
    }

    /// Bytes `[offset, end]` of a file (at most `max`).
    async fn fetch_range(&self, path: &str, offset: u64, end: Option<u64>, max: u64) -> Result<Bytes> {
        self.get_range(path, offset, end).await?.read_limited(max, path, self.site()).await
    }

    /// A whole small file, in memory (at most `max` bytes).
    pub async fn fetch(&self, path: &str, max: u64) -> Result<Bytes> {
        self.fetch_range(path, 0, None, max).await
    }
}

#[async_trait]
impl RemoteFiles for HfRepo {
    /// A download from `offset` that resumes with `Range` where a broken or stalled
    /// connection stopped, as often as the network layer's retry policy allows (`--retries`
    /// attempts in a row without a byte of progress).
    async fn open_file(&self, path: &str, offset: u64) -> Result<BlobStream> {
        let first = self.get_range(path, offset, None).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let me = HfRepo {
            net: self.net.clone(),
            endpoint: self.endpoint.clone(),
            origin: self.origin.clone(),
            token: self.token.clone(),
            repo: self.repo.clone(),
            commit: self.commit.clone(),
        };
        let path = path.to_string();
        tokio::spawn(async move {
            let mut pos = offset;
            let mut resp = Some(first);
            let mut retry = RetryState::new(&me.net.options().retry);
            loop {
                let r = match resp.take() {
                    Some(r) => r,
                    None => match me.get_range(&path, pos, None).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(std::io::Error::other(e))).await;
                            return;
                        }
                    },
                };
                let mut s = r.body;
                let mut broken = None;
                while let Some(chunk) = s.next().await {
                    match chunk {
                        Ok(c) => {
                            pos += c.len() as u64;
                            retry.progressed();
                            if tx.send(Ok(c)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            broken = Some(e);
                            break;
                        }
                    }
                }
                let Some(e) = broken else { return };
                let Some(wait) = retry.failed(None) else {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                };
                tracing::warn!("{path}: download broke at byte {pos} ({e}); resuming with Range");
                tokio::time::sleep(wait).await;
            }
        });
        let stream = tokio_stream_from(rx);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    fn location(&self) -> String {
        format!("hf://{}@{}", self.repo, self.commit)
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Describe the model from the hub without downloading the weights: safetensors headers
/// with two `Range` requests each, GGUF headers from the first [`MAX_REMOTE_GGUF_HEADER`]
/// bytes, `config.json` from memory. Nothing is written locally: the readers take the
/// fetched bytes with the file's length ([`describe::FileBytes::Head`]).
async fn describe_remote(repo: &HfRepo, weights: &[&HfFile], inline: &HashMap<String, Bytes>) -> Described {
    let mut heads: Vec<(&HfFile, Bytes)> = Vec::new();
    for f in weights {
        let ext = f.path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        let bytes = match ext.as_str() {
            "safetensors" if f.size >= 8 => {
                let Ok(len) = repo.fetch_range(&f.path, 0, Some(7), 8).await else { continue };
                let Ok(n) = <[u8; 8]>::try_from(&len[..]).map(u64::from_le_bytes) else { continue };
                if n > describe::MAX_SAFETENSORS_HEADER || n + 8 > f.size {
                    continue;
                }
                let Ok(b) = repo.fetch_range(&f.path, 0, Some(7 + n), 8 + n).await else { continue };
                b
            }
            "gguf" => {
                let end = f.size.min(MAX_REMOTE_GGUF_HEADER).saturating_sub(1);
                let Ok(b) = repo.fetch_range(&f.path, 0, Some(end), end + 1).await else { continue };
                b
            }
            _ => Bytes::new(),
        };
        heads.push((f, bytes));
    }
    let names: Vec<String> = heads.iter().map(|(f, _)| format!("{}/{}", repo.location(), f.path)).collect();
    let mut listed: Vec<(String, describe::FileBytes<'_>)> = heads
        .iter()
        .zip(&names)
        .map(|((f, b), what)| (f.path.clone(), describe::FileBytes::Head { head: b, len: f.size, what }))
        .collect();
    let config_what = format!("{}/config.json", repo.location());
    if let Some(c) = inline.get("config.json") {
        listed.push((
            "config.json".into(),
            describe::FileBytes::Head { head: c, len: c.len() as u64, what: &config_what },
        ));
    }
    let weight_names: Vec<&str> = weights.iter().map(|f| f.path.as_str()).collect();
    describe::describe_files(&listed, &weight_names)
}

/// Plan a ModelPack artifact of `hf` (files chosen by `select`; the config described from
/// the hub's files, then `spec`'s fields). `known` maps `path` to a descriptor the
/// destination already has for this commit's file (from an earlier pack), so a small file is
/// not downloaded again to be hashed; `previous` is what that earlier pack's config said the
/// files describe (so a re-run reads no header either).
pub async fn plan_hf_model(
    repo: Arc<HfRepo>,
    spec: &ModelSpec,
    select: &FileSelector,
    known: &HashMap<String, Descriptor>,
    previous: Option<Described>,
) -> Result<PlannedModel> {
    let files: Vec<HfFile> = repo
        .list()
        .await?
        .into_iter()
        .filter(|f| !f.path.split('/').any(|s| s.starts_with('.')) && select.matches(&f.path))
        .collect();
    if files.is_empty() {
        return Err(Error::not_found("any matching file", format!("hf://{}@{}", repo.repo, repo.commit)));
    }
    let mut inline: HashMap<String, Bytes> = HashMap::new();
    let mut blobs: HashMap<Digest, Origin> = HashMap::new();
    let mut descs: Vec<(HfFile, ModelFileKind, Digest)> = Vec::new();
    for f in &files {
        let kind =
            spec.kinds.get(&f.path).copied().or_else(|| ModelFileKind::classify(&f.path)).unwrap_or(spec.default_kind);
        let digest = match &f.sha256 {
            Some(h) => {
                let d: Digest = format!("sha256:{h}").parse()?;
                blobs.insert(d.clone(), Origin::Remote(repo.clone(), f.path.clone()));
                d
            }
            None => {
                match known.get(&f.path).filter(|d| d.size == f.size && (previous.is_some() || f.path != "config.json"))
                {
                    Some(d) => {
                        blobs.insert(d.digest.clone(), Origin::Remote(repo.clone(), f.path.clone()));
                        d.digest.clone()
                    }
                    None => {
                        let b = repo.fetch(&f.path, MAX_INLINE_FILE).await?;
                        if b.len() as u64 != f.size {
                            return Err(Error::malformed(
                                format!("file {}", f.path),
                                repo.location(),
                                format!("{} bytes, the listing says {}", b.len(), f.size),
                            ));
                        }
                        let d = Digest::sha256_of(&b);
                        inline.insert(f.path.clone(), b.clone());
                        blobs.insert(d.clone(), Origin::Bytes(b));
                        d
                    }
                }
            }
        };
        descs.push((f.clone(), kind, digest));
    }
    let weights: Vec<&HfFile> =
        descs.iter().filter(|(_, k, _)| *k == ModelFileKind::Weight).map(|(f, _, _)| f).collect();
    let described = match previous {
        Some(p) => p,
        None => describe_remote(&repo, &weights, &inline).await,
    };
    let mut spec2 = spec.clone();
    spec2.source_url = spec.source_url.clone().or_else(|| Some(repo.source_url()));
    spec2.revision = spec.revision.clone().or_else(|| Some(repo.commit.clone()));
    if spec2.name.is_none() {
        spec2.name = repo.repo.rsplit('/').next().map(str::to_string);
    }
    let mut meta = ModelMeta::resolve(&described, None, None, &spec2);
    let created = rfc3339(spec.source_date_epoch.unwrap_or_else(source_date_epoch));
    meta.created_at = Some(created.clone());
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (f, kind, digest) in descs {
        let mut d = Descriptor::new(layer_media_type(kind, ModelLayerFormat::Raw), digest.clone(), f.size);
        annotate_file_layer(&mut d, &f.path, 0o644, f.size, &created)?;
        layers.push(d);
        diff_ids.push(digest);
    }
    let config = Bytes::from(meta.config_bytes(diff_ids)?);
    let config_desc = Descriptor::of_bytes(media::MODEL_CONFIG, &config);
    blobs.insert(config_desc.digest.clone(), Origin::Bytes(config));
    let mut manifest = ImageManifest::new(config_desc, layers);
    manifest.artifact_type = Some(media::MODEL_ARTIFACT.into());
    manifest.annotations = spec.annotations.clone();
    let bytes = Bytes::from(manifest.to_bytes()?);
    let mut root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    root.artifact_type = manifest.artifact_type;
    Ok(PlannedModel::new(repo.location(), root, bytes, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hf_refs() {
        assert_eq!(
            HfRef::parse("hf://Qwen/Qwen3-0.6B@abc").unwrap().unwrap(),
            HfRef { repo: "Qwen/Qwen3-0.6B".into(), revision: "abc".into() }
        );
        assert_eq!(HfRef::parse("hf://a/b").unwrap().unwrap().revision, "main");
        assert!(HfRef::parse("docker://a/b").is_none());
        for bad in ["hf://a", "hf://a/b/c", "hf://../b", "hf://a/b@"] {
            assert!(HfRef::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
