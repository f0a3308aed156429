//! The bodies of hoist's fuzz targets, shared by the cargo-fuzz binaries in
//! `fuzz_targets/` and by the cheap `tests/it/fuzz_smoke.rs` (which includes this file).
//! Each body must not panic on any input; errors are fine.

use std::io::Write;
use std::str::FromStr;

/// References and transport endpoints (`hoist::model::reference::Reference`, `hoist::transport::Endpoint`).
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = hoist::model::reference::Reference::from_str(s) {
        // what parses must print, parse again, and print the same (one normal form)
        let again = r.to_string();
        let r2 = hoist::model::reference::Reference::from_str(&again)
            .unwrap_or_else(|e| panic!("{s:?} printed as {again:?}, which does not parse: {e}"));
        assert_eq!(r2.to_string(), again, "{s:?}: printing is not stable");
    }
    if let Ok(e) = hoist::transport::Endpoint::from_str(s) {
        let _ = e.to_string();
        let _ = e.tag();
        let _ = e.reference();
    }
}

/// Manifests and indexes (`hoist::model::document::Document::parse`), with and without a media type hint.
pub fn document(data: &[u8]) {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let digest = hoist::Digest::sha256_of(data);
    for hint in [
        None,
        Some(hoist::model::media::OCI_MANIFEST),
        Some(hoist::model::media::OCI_INDEX),
        Some(hoist::model::media::DOCKER_MANIFEST),
        Some(hoist::model::media::DOCKER_MANIFEST_LIST),
    ] {
        if let Ok(doc) = hoist::model::document::Document::parse(bytes.clone(), digest.clone(), hint, "fuzz") {
            let _ = doc.children();
            let _ = doc.descriptor();
            let _ = doc.artifact_type();
            let _ = doc.subject();
        }
    }
}

/// Digests (`hoist::Digest` FromStr).
pub fn digest(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = hoist::Digest::from_str(s) {
        let printed = d.to_string();
        let again = hoist::Digest::from_str(&printed).expect("a printed digest parses");
        assert_eq!(again, d);
        let _ = d.hex();
    }
}

/// Tar reading (`hoist::transport::archive::oci::OciArchive::open` on a temp file).
pub fn tar(data: &[u8]) {
    let Ok(mut f) = tempfile::NamedTempFile::new() else { return };
    if f.write_all(data).is_err() {
        return;
    }
    let _ = hoist::transport::archive::oci::OciArchive::open(f.path());
    let _ = hoist::transport::archive::docker::DockerArchive::open(f.path());
}

/// `WWW-Authenticate` challenges (`hoist::transport::registry::auth::parse_challenge`).
pub fn challenge(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = hoist::transport::registry::auth::parse_challenge(s);
}

/// `Link` headers of paginated answers (`hoist::transport::registry::http::next_page_of_link`).
pub fn link(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for repo in ["r", "a/b", ""] {
        let _ = hoist::transport::registry::http::next_page_of_link(s, repo);
    }
}

/// config.json / auth.json contents (`hoist::transport::registry::credentials::stored_credential`).
pub fn config(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    for registry in ["docker.io", "localhost:5000", "registry.example.com"] {
        let _ = hoist::transport::registry::credentials::stored_credential(&v, registry);
    }
}
