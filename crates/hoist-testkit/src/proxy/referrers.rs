//! Emulation of the OCI referrers API (distribution spec 1.1) in front of a registry without
//! it (distribution 2.8.2): manifests with a `subject` are remembered as they are pushed, and
//! `GET /v2/<repo>/referrers/<digest>` is answered from that memory. See
//! [`ProxyState::emulate_referrers_api`].

use std::sync::atomic::Ordering;

use hyper::header::{self, HeaderValue};
use hyper::Response;

use super::bodies::ProxyBody;
use super::state::{lock, ProxyState};

impl ProxyState {
    /// Emulate the OCI referrers API (distribution spec 1.1) in front of an upstream without it.
    ///
    /// On: a `PUT /v2/<repo>/manifests/<ref>` is read whole (fault rules' body limits do not
    /// apply to it) and forwarded; when its JSON has a `subject` and the upstream answers 2xx,
    /// the answer gets `OCI-Subject: <subject digest>` and the proxy remembers the manifest's
    /// descriptor (mediaType, digest and size of the body, `artifactType` or else the config's
    /// mediaType, annotations) under (repo, subject). `GET /v2/<repo>/referrers/<digest>` is then
    /// answered by the proxy itself: 200 with an OCI index of those descriptors, possibly empty,
    /// filtered by `?artifactType=` (with `OCI-Filters-Applied: artifactType`). The upstream
    /// never sees referrers requests. Deletes are not tracked; what was remembered stays when
    /// the mode is turned off.
    ///
    /// Off (the default): referrers requests go upstream like any other.
    pub fn emulate_referrers_api(&self, on: bool) {
        self.referrers_api.store(on, Ordering::SeqCst);
    }

    /// Split referrers API answers into pages of `n` descriptors chained by `Link: <…>;
    /// rel="next"` headers, as the spec allows registries to do (0: everything in one answer).
    pub fn paginate_referrers(&self, n: u64) {
        self.referrers_page.store(n, Ordering::SeqCst);
    }

    /// The descriptors the referrers API emulation holds for `subject` in `repo`.
    pub fn referrers_of(&self, repo: &str, subject: &str) -> Vec<serde_json::Value> {
        lock(&self.referrers).get(&(repo.to_owned(), subject.to_owned())).cloned().unwrap_or_default()
    }

    pub(super) fn remember_referrer(&self, repo: String, subject: String, desc: serde_json::Value) {
        let mut map = lock(&self.referrers);
        let list = map.entry((repo, subject)).or_default();
        // one entry per manifest, however often it is pushed (by tag and by digest, again)
        if !list.iter().any(|d| d["digest"] == desc["digest"]) {
            list.push(desc);
        }
    }

    /// The referrers API answer for `GET /v2/<repo>/referrers/<subject>?<query>`.
    pub(super) fn referrers_response(&self, repo: &str, subject: &str, query: &str) -> Response<ProxyBody> {
        let filter = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "artifactType").map(|(_, v)| v);
        let mut manifests: Vec<serde_json::Value> = self
            .referrers_of(repo, subject)
            .into_iter()
            .filter(|d| filter.as_deref().is_none_or(|t| d["artifactType"].as_str() == Some(t)))
            .collect();
        let page_size = self.referrers_page.load(Ordering::SeqCst) as usize;
        let mut next = None;
        if page_size > 0 {
            let page: usize = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let start = (page * page_size).min(manifests.len());
            let end = (start + page_size).min(manifests.len());
            if end < manifests.len() {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("page", &(page + 1).to_string());
                if let Some(t) = &filter {
                    q.append_pair("artifactType", t);
                }
                next = Some(format!("</v2/{repo}/referrers/{subject}?{}>; rel=\"next\"", q.finish()));
            }
            manifests = manifests[start..end].to_vec();
        }
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": REFERRERS_INDEX,
            "manifests": manifests,
        })
        .to_string();
        let mut resp = Response::new(ProxyBody::full(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(REFERRERS_INDEX));
        if filter.is_some() {
            h.insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
        }
        if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert(header::LINK, link);
        }
        resp
    }
}

/// Media type of a referrers API answer.
const REFERRERS_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `/v2/<repo>/<kind>/<ref>[?query]` → (repo, ref, query); `<repo>` may contain slashes.
pub(super) fn split_v2_path<'a>(path: &'a str, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let (repo, reference) = p.strip_prefix("/v2/")?.rsplit_once(&format!("/{kind}/"))?;
    (!repo.is_empty() && !reference.is_empty() && !reference.contains('/')).then_some((repo, reference, query))
}

/// For a manifest body with a `subject`: (subject digest, the descriptor a referrers list holds
/// for it), as the distribution spec says: mediaType, digest, size, `artifactType` (the
/// manifest's, else its config's mediaType; none for an index without one) and annotations.
/// Written here from the spec rather than with hoist's own code (the digest too), which it is
/// meant to judge.
pub(super) fn referrer_entry(body: &[u8], content_type: Option<&str>) -> Option<(String, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let subject = v.get("subject")?.get("digest")?.as_str()?.to_owned();
    let media_type = v.get("mediaType").and_then(|m| m.as_str()).or(content_type)?;
    let mut desc = serde_json::json!({
        "mediaType": media_type,
        "digest": crate::tools::sha256(body),
        "size": body.len(),
    });
    let non_empty = |x: Option<&serde_json::Value>| x.filter(|x| x.as_str().is_some_and(|s| !s.is_empty())).cloned();
    let artifact_type =
        non_empty(v.get("artifactType")).or_else(|| non_empty(v.get("config").and_then(|c| c.get("mediaType"))));
    if let Some(t) = artifact_type {
        desc["artifactType"] = t;
    }
    if let Some(a) = v.get("annotations").filter(|a| a.as_object().is_some_and(|o| !o.is_empty())) {
        desc["annotations"] = a.clone();
    }
    Some((subject, desc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_paths() {
        assert_eq!(
            split_v2_path("/v2/a/b/referrers/sha256:ab?artifactType=x%2Fy", "referrers"),
            Some(("a/b", "sha256:ab", "artifactType=x%2Fy"))
        );
        assert_eq!(split_v2_path("/v2/a/manifests/v1", "manifests"), Some(("a", "v1", "")));
        assert_eq!(split_v2_path("/v2/a/blobs/uploads/u", "manifests"), None);
        assert_eq!(split_v2_path("/v2/a/manifests/", "manifests"), None);
        assert_eq!(split_v2_path("/x/a/manifests/v1", "manifests"), None);
    }

    #[test]
    fn referrer_entries_follow_the_spec() {
        let subject =
            r#""subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1}"#;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.x.config","digest":"sha256:bb","size":2}},"layers":[],{subject},"annotations":{{"k":"v"}}}}"#
        );
        let (s, d) = referrer_entry(m.as_bytes(), None).unwrap();
        assert_eq!(s, "sha256:aa");
        assert_eq!(d["artifactType"], "application/vnd.x.config", "config media type when no artifactType");
        assert_eq!(d["annotations"]["k"], "v");
        assert_eq!(d["size"], m.len());
        assert_eq!(d["digest"], crate::tools::sha256(m.as_bytes()));
        // an index without mediaType or artifactType: the Content-Type, no artifactType
        let i = format!(r#"{{"schemaVersion":2,"manifests":[],{subject}}}"#);
        let (_, d) = referrer_entry(i.as_bytes(), Some("application/vnd.oci.image.index.v1+json")).unwrap();
        assert_eq!(d["mediaType"], "application/vnd.oci.image.index.v1+json");
        assert!(d.get("artifactType").is_none() && d.get("annotations").is_none(), "{d}");
        let with_type = i.replace("\"manifests\"", "\"artifactType\":\"application/vnd.x\",\"manifests\"");
        assert_eq!(referrer_entry(with_type.as_bytes(), Some("x/y")).unwrap().1["artifactType"], "application/vnd.x");
        assert!(referrer_entry(br#"{"schemaVersion":2,"layers":[]}"#, None).is_none(), "no subject");
    }
}
