//! Registry operations beyond copying: HEAD a manifest for its descriptor, tag, untag,
//! delete, and the `_catalog` of a registry.
//!
//! `untag` keeps the manifest and every other tag: it asks for the OCI tag deletion
//! (`DELETE /v2/<repo>/manifests/<tag>`) and, where the registry refuses that (distribution
//! 2.8 answers `400 DIGEST_INVALID`), uses regclient's method: push a small unique manifest
//! to the tag, then delete that manifest by digest (which takes the tag with it).

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::errors::{ErrorBody, ErrorCode};
use super::http::{link_next_target, read_limited, Pages, ReadError, MAX_TAG_PAGE, MAX_TAG_PAGES};
use super::{Client, Repository};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;
use crate::model::reference::TagOrDigest;
use crate::transport::memory::Memory;
use crate::transport::NoProgress;

/// Annotation of the throwaway manifest `untag` pushes onto a tag before deleting it.
pub const ANNOTATION_UNTAG: &str = "dev.hoist.untag";

/// How `untag` removed a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum UntagMethod {
    /// The registry deleted the tag itself (OCI distribution tag deletion).
    TagDelete,
    /// A unique manifest was pushed to the tag and deleted by digest (regclient's method).
    TempManifest,
}

impl Repository {
    /// The rate limit this repository's registry last stated (see [`Client::rate_limit`]).
    pub async fn rate_limit(&self) -> Option<super::profiles::RateLimit> {
        self.client.rate_limit(&self.registry).await
    }

    /// `host/repo` as references write it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }

    /// The manifest `target` (tag or digest) names, from a HEAD (the digest from
    /// `Docker-Content-Digest`; a registry that does not send it is asked with a GET);
    /// `None` when the registry has no such manifest.
    pub async fn head_manifest(&self, target: &str) -> Result<Option<Descriptor>> {
        let path = format!("manifests/{target}");
        let resp = self.request(Method::HEAD, &path, false, &|r| r.header(ACCEPT, media::MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.registry_error(&Method::HEAD, &path, status, &ErrorBody::default()));
        }
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let digest = header("docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let media_type = header(CONTENT_TYPE.as_str()).map(|m| m.split(';').next().unwrap_or(m).trim().to_string());
        let size = header(CONTENT_LENGTH.as_str()).and_then(|l| l.parse::<u64>().ok());
        match (digest, media_type, size) {
            (Some(d), Some(mt), Some(size)) if media::is_document(&mt) && size <= media::MAX_MANIFEST_SIZE => {
                Ok(Some(Descriptor::new(mt, d, size)))
            }
            // no digest (or an odd answer): the GET tells, and verifies
            _ => match self.resolve_manifest(&TagOrDigest::parse(target)).await {
                Ok(d) => Ok(Some(d)),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Tag the manifest `target` (tag or digest) with each of `tags`: its bytes are PUT
    /// again under each tag, no blob moves. The manifest's descriptor.
    pub async fn tag(&self, target: &str, tags: &[String]) -> Result<Descriptor> {
        for t in tags {
            crate::model::reference::check_tag(t, t)?;
        }
        let desc = self.resolve_manifest(&TagOrDigest::parse(target)).await?;
        let bytes = self.manifest_bytes(&desc).await?;
        for t in tags {
            self.put_manifest(&desc, bytes.clone(), Some(t)).await?;
        }
        Ok(desc)
    }

    /// Delete the manifest `digest` (and, at the registry, every tag pointing at it). A
    /// registry with deletion disabled is reported as such.
    pub async fn delete_manifest(&self, digest: &Digest) -> Result<()> {
        let path = format!("manifests/{digest}");
        let resp = self.request_delete(&path).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = ErrorBody::read(resp).await;
        Err(self.delete_error(&path, status, &body))
    }

    /// What a refused DELETE means: deletion disabled (405 / `UNSUPPORTED`), not found, or
    /// the registry's error.
    fn delete_error(&self, path: &str, status: StatusCode, body: &ErrorBody) -> Error {
        if status == StatusCode::METHOD_NOT_ALLOWED || body.has(&ErrorCode::UNSUPPORTED) {
            return Error::Unsupported(format!(
                "registry {}: deleting manifests is disabled there ({} UNSUPPORTED); distribution enables it with storage.delete.enabled: true",
                self.registry,
                status.as_u16()
            ));
        }
        self.registry_error(&Method::DELETE, path, status, body)
    }

    /// DELETE `path` with pull, push and delete scopes.
    async fn request_delete(&self, path: &str) -> Result<reqwest::Response> {
        let scopes = vec![format!("repository:{}:pull,push,delete", self.repo)];
        self.request_scoped(Method::DELETE, path, &scopes, &|r| r).await
    }

    /// Whether the registry deletes manifests, asked without changing anything: a DELETE of
    /// a digest nothing has (404 where deletion is on, 405 where it is off).
    pub async fn check_delete_enabled(&self) -> Result<()> {
        let nonce: [u8; 32] = rand::random();
        let digest = Digest::sha256_of(&nonce);
        let path = format!("manifests/{digest}");
        let resp = self.request_delete(&path).await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = ErrorBody::read(resp).await;
        if body.has(&ErrorCode::MANIFEST_UNKNOWN) {
            return Ok(());
        }
        Err(self.delete_error(&path, status, &body))
    }

    /// Remove the tag `tag`, keeping the manifest and every other tag that points at it.
    pub async fn untag(&self, tag: &str) -> Result<UntagMethod> {
        crate::model::reference::check_tag(tag, tag)?;
        if self.head_manifest(tag).await?.is_none() {
            return Err(Error::not_found(format!("tag {tag}"), self.loc()));
        }
        let path = format!("manifests/{tag}");
        let resp = self.request_delete(&path).await?;
        if resp.status() == StatusCode::ACCEPTED {
            return Ok(UntagMethod::TagDelete);
        }
        let status = resp.status();
        let body = ErrorBody::read(resp).await;
        tracing::info!(registry = %self.registry, tag, %status, detail = %body.detail(), "no tag deletion; pushing a unique manifest to delete by digest");
        // Before writing anything: can the throwaway manifest be deleted afterwards?
        self.check_delete_enabled().await?;
        let (desc, bytes) = untag_manifest(tag)?;
        let blobs = Memory::new();
        let empty = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
        blobs.insert_blob(&empty, Bytes::from_static(media::EMPTY_JSON))?;
        if !crate::transport::Destination::has_blob(self, &empty).await? {
            self.upload_blob(&empty, &blobs, &NoProgress).await?;
        }
        self.put_manifest(&desc, bytes, Some(tag)).await?;
        self.delete_manifest(&desc.digest).await?;
        Ok(UntagMethod::TempManifest)
    }

    /// The digest each of `tags` points at (`None`: gone meanwhile), HEADs `jobs` at once,
    /// in the order of `tags`.
    pub async fn tag_digests(&self, tags: &[String], jobs: usize) -> Result<Vec<(String, Option<Descriptor>)>> {
        futures::stream::iter(tags.iter().cloned())
            .map(|t| async move { self.head_manifest(&t).await.map(|d| (t, d)) })
            .buffered(jobs.max(1))
            .try_collect()
            .await
    }

    /// The tags of this repository that point at `digest` (HEADs `jobs` at once).
    pub async fn tags_pointing_at(&self, digest: &Digest, jobs: usize) -> Result<Vec<String>> {
        let tags = match self.tags().await {
            Ok(t) => t,
            Err(Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        Ok(self
            .tag_digests(&tags, jobs)
            .await?
            .into_iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| &d.digest == digest))
            .map(|(t, _)| t)
            .collect())
    }
}

/// The throwaway manifest `untag` pushes onto `tag`: the empty config, one empty layer and a
/// unique annotation, so that deleting it by digest touches nothing else.
fn untag_manifest(tag: &str) -> Result<(Descriptor, Bytes)> {
    let empty = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    let mut m = crate::model::write::ImageManifest::new(empty.clone(), vec![empty]);
    let nonce: [u8; 16] = rand::random();
    m.artifact_type = Some("application/vnd.hoist.untag.v1".into());
    m.annotations.insert(ANNOTATION_UNTAG.into(), format!("{tag} {}", hex::encode(nonce)));
    let bytes = m.to_bytes()?;
    Ok((Descriptor::of_bytes(media::OCI_MANIFEST, &bytes), Bytes::from(bytes)))
}

/// Bytes of one `_catalog` page hoist reads (as a tag list page).
pub const MAX_CATALOG_PAGE: u64 = MAX_TAG_PAGE;

impl Client {
    /// The repositories of `registry` from its `_catalog` API, following `Link` pagination
    /// within the bounds of tag lists ([`MAX_CATALOG_PAGE`] a page, [`MAX_TAG_PAGES`] pages).
    pub async fn catalog(&self, registry: &str) -> Result<Vec<String>> {
        let host = self.host(registry).await?;
        let scopes = vec!["registry:catalog:*".to_string()];
        let mut path = "_catalog?n=1000".to_string();
        let mut pages = Pages::new(&path, MAX_TAG_PAGES);
        let mut out = Vec::new();
        let loc = format!("docker://{registry}");
        loop {
            let url = format!("{}/v2/{}", host.base, path);
            let resp = self.send(&host, &scopes, &Method::GET, &path, &|| self.http.get(&url)).await?;
            let status = resp.status();
            if !status.is_success() {
                let body = ErrorBody::read(resp).await;
                // a registry serving smaller pages (distribution's catalog.maxentries) refuses
                // n=1000: ask for its own page size instead
                if body.has(&ErrorCode::PAGINATION_NUMBER_INVALID) && path == "_catalog?n=1000" {
                    path = "_catalog".to_string();
                    pages = Pages::new(&path, MAX_TAG_PAGES);
                    continue;
                }
                if status == StatusCode::NOT_FOUND || body.has(&ErrorCode::UNSUPPORTED) {
                    return Err(Error::Unsupported(format!(
                        "registry {registry}: no catalog API (GET /v2/_catalog answered {status})"
                    )));
                }
                return Err(Error::Registry {
                    registry: registry.to_string(),
                    method: "GET".into(),
                    path: format!("/v2/{path}"),
                    status: status.as_u16(),
                    detail: body.detail(),
                });
            }
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(link_next_target)
                .and_then(|t| t.split_once("/v2/").map(|(_, p)| p.to_string()));
            let body = match read_limited(resp, MAX_CATALOG_PAGE, registry, self.opts.read_timeout).await {
                Ok(b) => b,
                Err(ReadError::TooLarge) => {
                    return Err(Error::malformed(
                        "catalog",
                        &loc,
                        format!("a page exceeds the limit of {MAX_CATALOG_PAGE} bytes"),
                    ))
                }
                Err(ReadError::Failed(e)) => return Err(e),
            };
            #[derive(serde::Deserialize)]
            struct Catalog {
                #[serde(default)]
                repositories: Option<Vec<String>>,
            }
            let c: Catalog = serde_json::from_slice(&body).map_err(|e| Error::malformed("catalog", &loc, e))?;
            out.extend(c.repositories.unwrap_or_default());
            match next {
                Some(n) if n.starts_with("_catalog") => {
                    pages.follow(&n).map_err(|why| Error::malformed("catalog", &loc, why))?;
                    path = n;
                }
                Some(n) => {
                    return Err(Error::malformed(
                        "catalog",
                        &loc,
                        format!("the next page link leaves the catalog ({})", crate::error::printable(&n)),
                    ))
                }
                None => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untag_manifests_are_unique_and_parse() {
        let (a, ab) = untag_manifest("v1").unwrap();
        let (b, _) = untag_manifest("v1").unwrap();
        assert_ne!(a.digest, b.digest);
        let doc = crate::model::document::Document::from_fetched(&a, ab, "t").unwrap();
        assert_eq!(doc.children().len(), 2);
    }
}
