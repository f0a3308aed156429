//! Referrers on a registry: the referrers API (`GET /v2/<repo>/referrers/<digest>`) when
//! the registry has it, else the tag schema fallback (an index tagged `sha256-<hex>`
//! listing the manifests whose `subject` is that digest), which hoist keeps up to date
//! on every manifest push that carries a `subject`.

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::errors::ErrorBody;
use super::http::{next_page, read_limited, Pages, ReadError};
use super::Repository;
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;
use crate::model::write::ImageIndex;

/// Rounds of read-modify-write of the fallback index before giving up.
const FALLBACK_ATTEMPTS: u32 = 5;

/// Pages of one referrers API answer hoist follows before calling the answer malformed
/// (each page at most [`media::MAX_MANIFEST_SIZE`]).
const MAX_REFERRERS_PAGES: usize = 1000;

/// Whether a repository serves the referrers API, learnt once per `Repository`.
#[derive(Clone, Default)]
pub(crate) struct ApiCache(std::sync::Arc<OnceCell<bool>>);

/// The tag of the fallback index for `subject`: `<alg>-<hex>` (alg at most 32 and hex
/// at most 64 characters, as the distribution spec truncates them).
pub fn fallback_tag(subject: &Digest) -> String {
    let alg: String = subject.algorithm().as_str().chars().take(32).collect();
    let hex: String = subject.hex().chars().take(64).collect();
    format!("{alg}-{hex}")
}

impl Repository {
    /// Manifests in this repository whose `subject` is `subject`, optionally only those
    /// of `artifact_type`. Uses the referrers API when the registry answers it with an
    /// OCI index; otherwise reads the `sha256-<hex>` fallback index (none: empty list).
    /// A registry already known to lack the API is not asked again.
    ///
    /// The filter goes to the API as `?artifactType=` and is also applied here: a registry
    /// MAY ignore it (it then omits `OCI-Filters-Applied`), the fallback index is never
    /// filtered, and filtering a filtered list again changes nothing, so the header need not
    /// be read.
    pub async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
        let api = match self.referrers_api.0.get() {
            Some(false) => None,
            _ => self.referrers_api_get(subject, artifact_type).await?,
        };
        let list = match api {
            Some(list) => list,
            None => self.read_fallback(subject).await?.map(|(_, l)| l).unwrap_or_default(),
        };
        Ok(list.into_iter().filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t))).collect())
    }

    /// `GET referrers/<digest>[?artifactType=<t>]`: Some(list) only for a 200 with an OCI
    /// index body. Either way the answer is remembered as whether the registry has the API.
    async fn referrers_api_get(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        let mut path = format!("referrers/{subject}");
        if let Some(t) = artifact_type {
            // media types hold `+` and `/`: a raw `+` would reach the registry as a space
            path.push_str("?artifactType=");
            path.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let resp = self.request(Method::GET, &path, false, &|r| r.header(ACCEPT, media::OCI_INDEX)).await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        if status != StatusCode::OK || ct != media::OCI_INDEX {
            tracing::debug!(%status, content_type = %ct, repo = %self.loc(), "no referrers API");
            let _ = self.referrers_api.0.set(false);
            return Ok(None);
        }
        let _ = self.referrers_api.0.set(true);
        // The answer may come in pages chained by `Link: <…>; rel="next"`.
        let mut list = Vec::new();
        let mut resp = resp;
        let mut pages = Pages::new(&path, MAX_REFERRERS_PAGES);
        loop {
            let next = next_page(&resp, &self.repo);
            // a page is an index: the manifest limit applies
            let body = match read_limited(resp, media::MAX_MANIFEST_SIZE, &self.registry, self.client.opts.read_timeout)
                .await
            {
                Ok(b) => b,
                Err(ReadError::TooLarge) => {
                    return Err(Error::malformed(
                        format!("referrers of {subject}"),
                        self.loc(),
                        "exceeds the manifest limit",
                    ))
                }
                Err(ReadError::Failed(e)) => return Err(e),
            };
            let doc = Document::parse(body.clone(), Digest::sha256_of(&body), Some(media::OCI_INDEX), &self.loc())?;
            let View::Index(i) = doc.view else {
                return Err(Error::malformed(format!("referrers of {subject}"), self.loc(), "not an index"));
            };
            list.extend(i.manifests);
            let Some(next) = next else { break };
            pages.follow(&next).map_err(|why| Error::malformed(format!("referrers of {subject}"), self.loc(), why))?;
            resp = self.request(Method::GET, &next, false, &|r| r.header(ACCEPT, media::OCI_INDEX)).await?;
            if resp.status() != StatusCode::OK {
                let status = resp.status();
                return Err(self.registry_error(&Method::GET, &next, status, &ErrorBody::read(resp).await));
            }
        }
        Ok(Some(list))
    }

    /// Whether the registry serves the referrers API (asked once per repository).
    async fn has_referrers_api(&self, subject: &Digest) -> Result<bool> {
        if let Some(v) = self.referrers_api.0.get() {
            return Ok(*v);
        }
        Ok(self.referrers_api_get(subject, None).await?.is_some())
    }

    /// The fallback index for `subject`: (its digest, its manifests), None when the tag is missing.
    async fn read_fallback(&self, subject: &Digest) -> Result<Option<(Digest, Vec<Descriptor>)>> {
        let tag = fallback_tag(subject);
        let (mt, bytes) = match self.get_manifest(&tag).await {
            Ok(x) => x,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let digest = Digest::sha256_of(&bytes);
        let doc = Document::parse(bytes, digest.clone(), Some(&mt), &format!("{}:{tag}", self.loc()))?;
        match doc.view {
            View::Index(i) => Ok(Some((digest, i.manifests))),
            View::Manifest(_) => Err(Error::malformed(
                format!("referrers fallback tag {tag}"),
                self.loc(),
                "is a manifest, not an index",
            )),
        }
    }

    async fn put_index(&self, tag: &str, bytes: Bytes, names: Vec<Digest>) -> Result<()> {
        let path = format!("manifests/{tag}");
        // as every manifest PUT: not while what it names is being written here (see `links`)
        let own = Digest::sha256_of(&bytes);
        let resp = {
            let _held = self.client.links.lock(&self.link_scope(), Some(&own), names).await;
            self.request(Method::PUT, &path, true, &|r| r.header(CONTENT_TYPE, media::OCI_INDEX).body(bytes.clone()))
                .await?
        };
        let status = resp.status();
        if !status.is_success() {
            let body = ErrorBody::read(resp).await;
            return Err(self.registry_error(&Method::PUT, &path, status, &body));
        }
        Ok(())
    }

    /// Add `entry` to the fallback index of `subject` (creating it), unless listed.
    ///
    /// The distribution spec has no conditional PUT, so this is a read-modify-write race
    /// with other writers of the same tag. hoist narrows it: it re-reads the tag right
    /// before the PUT and starts over when it changed, and reads it again after the PUT,
    /// starting over when another writer replaced it without our entry. Two writers can
    /// still interleave between those reads; the loser's entry is then missing until it
    /// pushes again (the registries that avoid this are the ones with the referrers API).
    async fn add_to_fallback(&self, subject: &Digest, entry: &Descriptor) -> Result<()> {
        let tag = fallback_tag(subject);
        for attempt in 1..=FALLBACK_ATTEMPTS {
            let current = self.read_fallback(subject).await?;
            let (before, mut manifests) = match current {
                Some((d, m)) => (Some(d), m),
                None => (None, Vec::new()),
            };
            if manifests.iter().any(|d| d.digest == entry.digest) {
                return Ok(());
            }
            manifests.push(entry.clone());
            let names = manifests.iter().map(|d| d.digest.clone()).collect();
            let bytes = Bytes::from(ImageIndex::new(manifests).to_bytes()?);
            let again = self.read_fallback(subject).await?.map(|(d, _)| d);
            if again != before {
                tracing::info!(%tag, attempt, "referrers fallback index changed while updating; retrying");
                continue;
            }
            self.put_index(&tag, bytes, names).await?;
            let after = self.read_fallback(subject).await?;
            if after.is_some_and(|(_, m)| m.iter().any(|d| d.digest == entry.digest)) {
                tracing::info!(%tag, referrer = %entry.digest, "referrers fallback index updated");
                return Ok(());
            }
            tracing::info!(%tag, attempt, "referrers fallback index replaced by another writer; retrying");
        }
        Err(Error::refused(
            self.loc(),
            format!(
                "could not add {} to the referrers fallback index {tag} after {FALLBACK_ATTEMPTS} attempts (concurrent writers)",
                entry.digest
            ),
        ))
    }
}

/// Called after a manifest PUT succeeded: when the manifest has a `subject` and the
/// registry has no referrers API, record it in the subject's fallback index.
/// `oci_subject_header`: the PUT answered with `OCI-Subject` (the registry indexed it).
pub(super) async fn after_push_manifest(
    repo: &Repository,
    desc: &Descriptor,
    bytes: &Bytes,
    oci_subject_header: bool,
) -> Result<()> {
    if !bytes.windows(9).any(|w| w == b"\"subject\"") {
        return Ok(());
    }
    let doc = match Document::parse(bytes.clone(), desc.digest.clone(), Some(&desc.media_type), &repo.loc()) {
        Ok(doc) => doc,
        Err(e) => {
            // The registry took it; a document hoist cannot read is not indexed here.
            tracing::warn!(digest = %desc.digest, error = %e, "not recording referrer");
            return Ok(());
        }
    };
    let Some(subject) = doc.subject().cloned() else {
        return Ok(());
    };
    if oci_subject_header {
        let _ = repo.referrers_api.0.set(true);
        return Ok(());
    }
    if repo.has_referrers_api(&subject.digest).await? {
        return Ok(());
    }
    repo.add_to_fallback(&subject.digest, &Document::referrer_descriptor(&doc)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tag_schema() {
        let d: Digest = media::EMPTY_JSON_DIGEST.parse().unwrap();
        assert_eq!(fallback_tag(&d), "sha256-44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }

    #[test]
    fn referrer_descriptor_golden() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"annotations":{"b":"2","a":"1"}}"#;
        let desc = Descriptor::of_bytes(media::OCI_MANIFEST, raw);
        let doc = Document::from_fetched(&desc, Bytes::from_static(raw), "test").unwrap();
        let r = Document::referrer_descriptor(&doc);
        let idx = ImageIndex::new(vec![r]).to_bytes().unwrap();
        assert_eq!(
            String::from_utf8(idx).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.oci.empty.v1+json","digest":"{}","size":{},"annotations":{{"a":"1","b":"2"}}}}]}}"#,
                desc.digest,
                raw.len()
            )
        );
    }
}
