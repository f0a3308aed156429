//! Manifests and tags on a registry: GET (bounded, verified), HEAD, PUT, the tag list.

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::errors::ErrorBody;
use super::http::{body_stream, next_page, read_limited, Pages, ReadError, MAX_TAG_PAGE, MAX_TAG_PAGES};
use super::{referrers, Repository};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::Document;
use crate::model::media;
use crate::model::reference::TagOrDigest;

impl Repository {
    /// GET a manifest by tag or digest: (media type, bytes), at most 4 MiB. When the registry
    /// names the digest (`Docker-Content-Digest`), the bytes must have it: a registry or proxy
    /// that serves other bytes under a tag than it says is an integrity error.
    pub async fn get_manifest(&self, target: &str) -> Result<(String, Bytes)> {
        let path = format!("manifests/{target}");
        let resp = self.request(Method::GET, &path, false, &|r| r.header(ACCEPT, media::MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = ErrorBody::read(resp).await;
            return Err(self.registry_error(&Method::GET, &path, status, &body));
        }
        let mt = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok());
        if let Some(len) = resp.content_length() {
            if len > media::MAX_MANIFEST_SIZE {
                return Err(Error::malformed(
                    format!("manifest {target}"),
                    self.loc(),
                    format!("{len} bytes exceeds the manifest limit"),
                ));
            }
        }
        let mut body = Vec::new();
        let mut stream = body_stream(resp, &self.registry, self.client.opts.read_timeout);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            body.extend_from_slice(&chunk);
            if body.len() as u64 > media::MAX_MANIFEST_SIZE {
                return Err(Error::malformed(format!("manifest {target}"), self.loc(), "exceeds the manifest limit"));
            }
        }
        if let Some(claimed) = claimed {
            let actual = claimed.same_alg_of(&body);
            if actual != claimed {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {target} (the registry's Docker-Content-Digest)"),
                    location: self.loc(),
                    expected: claimed.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok((mt, Bytes::from(body)))
    }

    /// Resolve `target` (tag or digest) to the manifest's descriptor, keeping its bytes.
    pub(super) async fn resolve_manifest(&self, target: &TagOrDigest) -> Result<Descriptor> {
        let (mt, bytes) = self.get_manifest(&target.to_string()).await?;
        let digest = match target {
            TagOrDigest::Digest(d) => d.clone(),
            TagOrDigest::Tag(_) => Digest::sha256_of(&bytes),
        };
        let doc = crate::model::document::Document::parse(bytes.clone(), digest.clone(), Some(&mt), &self.loc())?;
        let actual = digest.same_alg_of(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {target}"),
                location: self.loc(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        self.manifest_cache.lock().expect("lock").insert(digest.clone(), (doc.media_type.clone(), bytes));
        Ok(doc.descriptor())
    }

    /// The bytes of the manifest `desc` (from the cache of resolved ones, or the registry).
    pub(super) async fn manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if let Some((_, b)) = self.manifest_cache.lock().expect("lock").get(&desc.digest) {
            return Ok(b.clone());
        }
        if desc.size > media::MAX_MANIFEST_SIZE {
            return Err(Error::malformed(
                format!("manifest {}", desc.digest),
                self.loc(),
                format!("descriptor size {} exceeds the manifest limit", desc.size),
            ));
        }
        let (_, bytes) = self.get_manifest(&desc.digest.to_string()).await?;
        Ok(bytes)
    }

    /// PUT a manifest by `tag` (else by digest), check the digest the registry answers, and
    /// record a referrer in the fallback index when the registry has no referrers API.
    pub(super) async fn put_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        let target = tag.map(str::to_string).unwrap_or_else(|| desc.digest.to_string());
        let path = format!("manifests/{target}");
        let mt = desc.media_type.clone();
        // Not while a blob or manifest this one names is being written here (see `links`).
        let names = Document::parse(bytes.clone(), desc.digest.clone(), Some(&desc.media_type), &self.loc())
            .map(|d| d.children().into_iter().map(|c| c.digest).collect::<Vec<_>>())
            .unwrap_or_default();
        let resp = {
            let _held = self.client.links.lock(&self.link_scope(), Some(&desc.digest), names).await;
            self.request(Method::PUT, &path, true, &|r| r.header(CONTENT_TYPE, mt.as_str()).body(bytes.clone())).await?
        };
        let status = resp.status();
        if !status.is_success() {
            let body = ErrorBody::read(resp).await;
            return Err(self.registry_error(&Method::PUT, &path, status, &body));
        }
        let oci_subject = resp.headers().contains_key(media::HEADER_OCI_SUBJECT);
        if let Some(d) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            if d != desc.digest.to_string() && desc.digest.algorithm() == crate::model::digest::Algorithm::Sha256 {
                return Err(Error::DigestMismatch {
                    what: format!("manifest pushed as {target}"),
                    location: self.loc(),
                    expected: desc.digest.to_string(),
                    actual: crate::error::printable(d).into_owned(),
                });
            }
        }
        referrers::after_push_manifest(self, desc, &bytes, oci_subject).await
    }

    /// Tags of the repository (follows `Link` pagination). A repository without tags gives an
    /// empty list, one the registry does not have `NotFound { what: "repository" }`:
    /// distribution answers both with 404 `NAME_UNKNOWN` (a push by digest makes no tag
    /// directory), so on a 404 its catalog is asked whether the repository exists; a registry
    /// that lists no catalog gets a `NotFound` that says the two cannot be told apart.
    pub async fn tags(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut path = "tags/list?n=1000".to_string();
        let mut pages = Pages::new(&path, MAX_TAG_PAGES);
        loop {
            let resp = self.request(Method::GET, &path, false, &|r| r).await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND && out.is_empty() {
                return match self.in_catalog().await {
                    Some(true) => Ok(Vec::new()),
                    Some(false) => Err(Error::not_found("repository", self.loc())),
                    None => Err(Error::not_found(
                        "repository (or it has no tags: this registry answers both alike and lists no catalog)",
                        self.loc(),
                    )),
                };
            }
            if !status.is_success() {
                let body = ErrorBody::read(resp).await;
                return Err(self.registry_error(&Method::GET, &path, status, &body));
            }
            let next = next_page(&resp, &self.repo);
            #[derive(serde::Deserialize)]
            struct Tags {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let body = match read_limited(resp, MAX_TAG_PAGE, &self.registry, self.client.opts.read_timeout).await {
                Ok(b) => b,
                Err(ReadError::TooLarge) => {
                    return Err(Error::malformed(
                        "tag list",
                        self.loc(),
                        format!("a page exceeds the limit of {MAX_TAG_PAGE} bytes"),
                    ))
                }
                Err(ReadError::Failed(e)) => return Err(e),
            };
            let t: Tags = serde_json::from_slice(&body).map_err(|e| Error::malformed("tag list", self.loc(), e))?;
            out.extend(t.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    pages.follow(&n).map_err(|why| Error::malformed("tag list", self.loc(), why))?;
                    path = n;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Whether the registry's catalog lists this repository: one page of `/v2/_catalog`
    /// starting just before its name (`last=` the name less its last character); `None` when
    /// the registry lists no catalog (401, 403, 404: most hosted registries) or the page
    /// does not reach the name.
    async fn in_catalog(&self) -> Option<bool> {
        const PAGE: usize = 1000;
        let host = self.host().await.ok()?;
        let last: String = {
            let mut chars = self.repo.chars();
            chars.next_back();
            chars.as_str().to_string()
        };
        let path = format!("_catalog?n={PAGE}&last={last}");
        let url = format!("{}/v2/{path}", host.base);
        let scopes = vec!["registry:catalog:*".to_string()];
        let http = &self.client.http;
        let resp =
            self.client.send(&host, &scopes, &Method::GET, &path, &|| http.request(Method::GET, &url)).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let body = read_limited(resp, MAX_TAG_PAGE, &self.registry, self.client.opts.read_timeout).await.ok()?;
        let c: Catalog = serde_json::from_slice(&body).ok()?;
        if c.repositories.contains(&self.repo) {
            return Some(true);
        }
        // A full page that ends before the name says nothing about it.
        (c.repositories.len() < PAGE || c.repositories.last().is_some_and(|r| r.as_str() > self.repo.as_str()))
            .then_some(false)
    }

    /// HEAD `path`: true for 2xx, false for 404.
    pub(super) async fn head_status(&self, path: &str, accept: Option<&'static str>) -> Result<bool> {
        let resp = self
            .request(Method::HEAD, path, false, &|r| match accept {
                Some(a) => r.header(ACCEPT, a),
                None => r,
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.registry_error(&Method::HEAD, path, s, &ErrorBody::default())),
        }
    }
}
