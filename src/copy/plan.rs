//! What a copy moves: the roots a source endpoint names and the tags each one gets at the
//! destination endpoint. This is the policy `hoist copy`, `push` and `pull` follow; a library
//! user calling [`roots`] and then [`graph_many`](super::graph_many) gets the same result:
//!
//! - a source that names a tag or digest gives that one root;
//! - a registry reference without one means [`default_tag()`];
//! - a layout or archive without one gives every root it holds, each with its own tag
//!   (one root per digest, carrying all the tags the source gives it);
//! - the destination's tag, when it names one, replaces the source's tags (a source with
//!   several roots is then refused: which one would get the tag?); a destination `@digest`
//!   must be the digest of the root; a registry destination without tag or digest tags an
//!   untagged root with [`default_tag()`].
//!
//! Not here: moving bytes (the graph copy in [`super`]), opening transports
//! ([`crate::transport::open_source`]).

use tokio::io::AsyncReadExt;

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::reference::{check_tag, TagOrDigest};
use crate::transport::layout::tag_of_ref_name;
use crate::transport::roots::check_stored_name;
use crate::transport::{unwrap_io_error, Endpoint, Source, VerifyReader};

pub use crate::model::reference::DEFAULT_TAG;

/// The tag a reference that names neither tag nor digest means (`latest`, as docker has it).
pub fn default_tag() -> &'static str {
    DEFAULT_TAG
}

/// One root to copy and the tags it gets at the destination (none: an untagged root), as
/// [`graph_many`](super::graph_many) takes them.
pub type Root = (Descriptor, Vec<String>);

/// The tag or digest to resolve in the source `ep`: the one it names, [`default_tag()`] for a
/// registry reference naming none, `None` (the transport's own default root) otherwise.
pub fn source_reference(ep: &Endpoint) -> Option<TagOrDigest> {
    match (ep.reference(), ep) {
        (None, Endpoint::Registry(_)) => Some(TagOrDigest::Tag(DEFAULT_TAG.to_string())),
        (r, _) => r,
    }
}

/// Resolve the one root `ep` names in `src` (opened from `ep`), per [`source_reference`].
pub async fn resolve(ep: &Endpoint, src: &dyn Source) -> Result<Descriptor> {
    src.resolve(source_reference(ep).as_ref()).await
}

/// The roots to copy from `src` (opened from `src_ep`) to `dst_ep`, each with its tags.
/// See the module doc for the rules; errors name the endpoint at fault.
pub async fn roots(src_ep: &Endpoint, src: &dyn Source, dst_ep: &Endpoint) -> Result<Vec<Root>> {
    let found: Vec<(Descriptor, Option<String>)> = match (src_ep.reference(), src_ep) {
        (Some(r), _) => vec![(src.resolve(Some(&r)).await?, src_ep.tag())],
        (None, Endpoint::Registry(_)) => {
            let tag = TagOrDigest::Tag(DEFAULT_TAG.to_string());
            vec![(src.resolve(Some(&tag)).await?, Some(DEFAULT_TAG.to_string()))]
        }
        (None, _) => {
            let roots = src.roots().await?;
            if roots.is_empty() {
                return Err(Error::not_found("any manifest", src.location()));
            }
            // A docker-archive names images by their full names (RepoTags); elsewhere a
            // stored full name gives its tag.
            let full_names = matches!(dst_ep, Endpoint::DockerArchive { .. });
            roots
                .into_iter()
                .map(|(d, t)| (d, t.map(|t| if full_names { t } else { tag_of_ref_name(&t).to_string() })))
                .collect()
        }
    };
    destination_tags(src_ep, dst_ep, group_by_digest(found))
}

/// One root per digest, with all the tags the source gives it, in first-seen order.
fn group_by_digest(found: Vec<(Descriptor, Option<String>)>) -> Vec<Root> {
    let mut roots: Vec<Root> = Vec::new();
    let mut at: HashMap<Digest, (usize, HashSet<String>)> = HashMap::new();
    for (desc, tag) in found {
        let (i, seen) = at.entry(desc.digest.clone()).or_insert_with(|| {
            roots.push((desc, Vec::new()));
            (roots.len() - 1, HashSet::new())
        });
        if let Some(t) = tag.filter(|t| seen.insert(t.clone())) {
            roots[*i].1.push(t);
        }
    }
    roots
}

/// The destination's side of the plan: its tag replaces the source's, its digest is checked.
fn destination_tags(src_ep: &Endpoint, dst_ep: &Endpoint, roots: Vec<Root>) -> Result<Vec<Root>> {
    let dst_digest: Option<Digest> = match dst_ep {
        Endpoint::Registry(r) => r.digest.clone(),
        _ => dst_ep.reference().and_then(|r| r.digest().cloned()),
    };
    // docker-archive names (repo:tag) go into manifest.json when the writer is created.
    let explicit_dst_tag = if matches!(dst_ep, Endpoint::DockerArchive { .. }) { None } else { dst_ep.tag() };
    let dst_is_registry = matches!(dst_ep, Endpoint::Registry(_));
    if roots.len() > 1 && (dst_ep.reference().is_some() || dst_digest.is_some()) {
        return Err(Error::InvalidReference {
            reference: src_ep.to_string(),
            reason: format!(
                "holds {} manifests; name one with :TAG or @DIGEST to give it the tag {}",
                roots.len(),
                dst_ep
            ),
        });
    }
    let mut plan = Vec::with_capacity(roots.len());
    for (desc, src_tags) in roots {
        if let Some(d) = &dst_digest {
            if *d != desc.digest {
                return Err(Error::DigestMismatch {
                    what: "destination reference".into(),
                    location: dst_ep.to_string(),
                    expected: d.to_string(),
                    actual: desc.digest.to_string(),
                });
            }
        }
        let tags = match (&explicit_dst_tag, &dst_digest) {
            (Some(t), _) => vec![t.clone()],
            (None, Some(_)) => vec![],
            (None, None) if dst_is_registry && src_tags.is_empty() => vec![DEFAULT_TAG.to_string()],
            // A name stored in the source never picks a path or another repository: it is
            // checked, and a registry takes only a plain tag (a layout keeps podman's
            // `localhost/app:v1` style names as its ref.name).
            (None, None) => {
                for t in &src_tags {
                    check_stored_name(t, "tag", &src_ep.to_string())?;
                    if dst_is_registry {
                        check_tag(t, &src_ep.to_string())?;
                    }
                }
                src_tags
            }
        };
        plan.push((desc, tags));
    }
    Ok(plan)
}

/// Read a whole small blob (a config, a bundle.json) of at most `limit` bytes into memory,
/// verified against its descriptor: a blob larger than `limit` is refused before any byte is
/// read, and a digest or size mismatch is an error.
pub async fn read_small_blob(src: &dyn Source, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
    if desc.size > limit {
        return Err(Error::malformed(
            format!("blob {}", desc.digest),
            src.location(),
            format!("{} bytes exceeds the {limit} byte limit", desc.size),
        ));
    }
    let stream = src.open_blob(desc, 0).await?;
    let mut buf = Vec::with_capacity(desc.size as usize);
    VerifyReader::new(stream, desc, src.location())
        .read_to_end(&mut buf)
        .await
        .map_err(|e| unwrap_io_error(e, format!("blob {}", desc.digest)))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::media;
    use crate::transport::memory::Memory;
    use crate::transport::Destination;

    fn ep(s: &str) -> Endpoint {
        s.parse().expect("endpoint")
    }

    fn digests_and_tags(plan: &[Root]) -> Vec<(Digest, Vec<String>)> {
        plan.iter().map(|(d, t)| (d.digest.clone(), t.clone())).collect()
    }

    /// A memory source holding two small indexes: `a` tagged `v1` and `v2`, `b` tagged `w`.
    async fn two_roots() -> (Memory, Descriptor, Descriptor) {
        let m = Memory::new();
        let mut out = Vec::new();
        for n in ["a", "b"] {
            let bytes = format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"annotations":{{"n":"{n}"}}}}"#,
                media::OCI_INDEX
            );
            let desc = Descriptor::new(media::OCI_INDEX, Digest::sha256_of(bytes.as_bytes()), bytes.len() as u64);
            out.push((desc, bytes));
        }
        let (a, b) = (&out[0], &out[1]);
        for t in ["v1", "v2"] {
            m.push_manifest(&a.0, a.1.clone().into(), Some(t)).await.expect("push");
        }
        m.push_manifest(&b.0, b.1.clone().into(), Some("w")).await.expect("push");
        (m, out[0].0.clone(), out[1].0.clone())
    }

    #[test]
    fn default_tag_is_latest() {
        assert_eq!(default_tag(), "latest");
        assert_eq!(source_reference(&ep("localhost:5000/a")), Some(TagOrDigest::Tag("latest".into())));
        assert_eq!(source_reference(&ep("oci:dir")), None);
        assert_eq!(source_reference(&ep("oci:dir:v1")), Some(TagOrDigest::Tag("v1".into())));
    }

    #[tokio::test]
    async fn stored_names_never_pick_a_path_or_repository() {
        for bad in ["../../etc", "a%2fb", "/abs"] {
            let (m, a, _) = two_roots().await;
            let bytes = m.fetch_manifest_bytes(&a).await.expect("bytes");
            m.push_manifest(&a, bytes, Some(bad)).await.expect("push");
            let e = roots(&ep("oci:src"), &m, &ep("oci:dst")).await.expect_err(bad);
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        // podman's names are kept in a layout; a registry takes only plain tags.
        let (m, a, _) = two_roots().await;
        let bytes = m.fetch_manifest_bytes(&a).await.expect("bytes");
        m.push_manifest(&a, bytes, Some("localhost/app:v1")).await.expect("push");
        assert!(roots(&ep("oci:src"), &m, &ep("oci:dst")).await.is_ok());
        // ... to a registry as its tag part, in the repository the user named
        let plan = roots(&ep("oci:src"), &m, &ep("localhost:5000/x")).await.expect("plan");
        assert!(plan[0].1.contains(&"v1".to_string()), "{:?}", plan[0].1);
        // ... and a name that is no tag at all is refused there.
        let (m, a, _) = two_roots().await;
        let bytes = m.fetch_manifest_bytes(&a).await.expect("bytes");
        m.push_manifest(&a, bytes, Some("alpine:3.20")).await.expect("push");
        assert!(roots(&ep("oci:src"), &m, &ep("oci:dst")).await.is_ok());
        assert!(roots(&ep("oci:src"), &m, &ep("localhost:5000/x")).await.is_err());
    }

    #[tokio::test]
    async fn every_root_once_with_all_its_tags() {
        let (m, a, b) = two_roots().await;
        let plan = roots(&ep("oci:src"), &m, &ep("oci:dst")).await.expect("plan");
        assert_eq!(
            digests_and_tags(&plan),
            vec![(a.digest.clone(), vec!["v1".to_string(), "v2".to_string()]), (b.digest, vec!["w".into()])]
        );
        // A registry destination without a tag keeps the source's tags.
        let plan = roots(&ep("oci:src"), &m, &ep("localhost:5000/x")).await.expect("plan");
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[1].1, vec!["w".to_string()]);
    }

    #[tokio::test]
    async fn destination_tag_needs_one_root() {
        let (m, a, _) = two_roots().await;
        let e = roots(&ep("oci:src"), &m, &ep("localhost:5000/x:t")).await.unwrap_err();
        assert!(e.to_string().contains("holds 2 manifests"), "{e}");
        let plan = roots(&ep("oci:src:v2"), &m, &ep("localhost:5000/x:t")).await.expect("plan");
        assert_eq!(digests_and_tags(&plan), vec![(a.digest, vec!["t".to_string()])]);
    }

    #[tokio::test]
    async fn destination_digest_is_checked() {
        let (m, a, b) = two_roots().await;
        let good = format!("localhost:5000/x@{}", a.digest);
        let plan = roots(&ep("oci:src:v1"), &m, &ep(&good)).await.expect("plan");
        assert_eq!(digests_and_tags(&plan), vec![(a.digest.clone(), vec![])]);
        let bad = format!("localhost:5000/x@{}", b.digest);
        let e = roots(&ep("oci:src:v1"), &m, &ep(&bad)).await.unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    }

    #[tokio::test]
    async fn untagged_root_gets_the_default_tag_in_a_registry() {
        let m = Memory::new();
        let bytes = format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#, media::OCI_INDEX);
        let desc = Descriptor::new(media::OCI_INDEX, Digest::sha256_of(bytes.as_bytes()), bytes.len() as u64);
        m.push_manifest(&desc, bytes.into(), None).await.expect("push");
        m.add_root(&desc).await.expect("root");
        let plan = roots(&ep("oci:src"), &m, &ep("localhost:5000/x")).await.expect("plan");
        assert_eq!(digests_and_tags(&plan), vec![(desc.digest.clone(), vec![DEFAULT_TAG.to_string()])]);
        let plan = roots(&ep("oci:src"), &m, &ep("oci:out")).await.expect("plan");
        assert_eq!(digests_and_tags(&plan), vec![(desc.digest, vec![])]);
    }

    #[tokio::test]
    async fn empty_source_is_not_found() {
        let e = roots(&ep("oci:src"), &Memory::new(), &ep("oci:out")).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
}
