//! `hoist retention`: untag or delete a repository's tags by policy (`keep_last`,
//! `older_than`, `matching`), never deleting a manifest that a kept tag, or an index a kept
//! tag names, still references, and deleting the referrers (referrers-API fallback indexes,
//! cosign's `sha256-<hex>.sig|.att|.sbom` tags) of what it deletes.
//!
//! A [`Plan`] is made first (read-only: the tag list and one HEAD per tag, the documents of
//! kept indexes, created times when the policy needs them) and applied after; the CLI prints
//! it before applying, and `--dry-run` stops there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::transport::registry::Repository;
use crate::transport::Source;

/// Which tags go.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Keep the N newest of the tags the policy covers (semver order when all are versions,
    /// else by created time); the rest go.
    pub keep_last: Option<usize>,
    /// Tags whose image was created longer ago than this go (with `keep_last`: only those
    /// outside the N newest).
    pub older_than: Option<Duration>,
    /// Only tags matching this are covered (alone: every matching tag goes).
    pub matching: Option<regex::Regex>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// The tag stays.
    Keep {
        /// The tag.
        tag: String,
        /// Its manifest.
        digest: Digest,
    },
    /// The tag goes; its manifest stays (something kept references it).
    Untag {
        /// The tag.
        tag: String,
        /// Its manifest, which stays.
        digest: Digest,
    },
    /// The manifest goes, with these tags.
    Delete {
        /// The manifest.
        digest: Digest,
        /// Tags that go with it.
        tags: Vec<String>,
        /// Why: `policy`, `child of <digest>`, `referrer of <digest>`.
        reason: String,
    },
}

/// What a policy does to a repository.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Every step, kept tags first, then untags, then deletes (referrers before subjects).
    pub actions: Vec<Action>,
}

impl Plan {
    /// Tags kept.
    pub fn kept(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a, Action::Keep { .. })).count()
    }
}

/// A referrers-API fallback tag (`sha256-<64 hex>`) or a cosign tag (`….sig`, `.att`, `.sbom`):
/// attached to its subject, never subject to the policy itself.
pub(super) fn attached_subject(tag: &str) -> Option<Digest> {
    let base = tag.strip_prefix("sha256-")?;
    let hex = base.split('.').next()?;
    let rest = &base[hex.len()..];
    if !(rest.is_empty() || rest == ".sig" || rest == ".att" || rest == ".sbom") {
        return None;
    }
    format!("sha256:{hex}").parse().ok()
}

/// The plan of `policy` for `repo` (nothing changes).
pub async fn plan(repo: &Repository, policy: &Policy, jobs: usize) -> Result<Plan> {
    if policy.keep_last.is_none() && policy.older_than.is_none() && policy.matching.is_none() {
        return Err(Error::Usage("retention: give --keep-last, --older-than or --match".into()));
    }
    let tags = repo.tags().await?;
    let heads: Vec<(String, Descriptor)> =
        repo.tag_digests(&tags, jobs).await?.into_iter().filter_map(|(t, d)| d.map(|d| (t, d))).collect();
    let (attached, normal): (Vec<_>, Vec<_>) = heads.into_iter().partition(|(t, _)| attached_subject(t).is_some());
    let covered: Vec<String> = normal
        .iter()
        .filter(|(t, _)| policy.matching.as_ref().is_none_or(|m| m.is_match(t)))
        .map(|(t, _)| t.clone())
        .collect();
    let filters = super::Filters { keep_last: policy.keep_last, newer_than: None, exclude: None };
    // newest first by the sync filters' order, then cut
    let removed: BTreeSet<String> = {
        let ordered = if policy.keep_last.is_some() {
            super::apply_age_filters(
                repo,
                covered.clone(),
                &super::Filters { keep_last: Some(usize::MAX), ..filters },
                jobs,
            )
            .await?
        } else {
            covered.clone()
        };
        let beyond: Vec<String> = match policy.keep_last {
            Some(n) => ordered.into_iter().skip(n).collect(),
            None => ordered,
        };
        match policy.older_than {
            Some(age) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let cutoff = now - age.as_secs() as i64;
                let mut old = BTreeSet::new();
                for t in beyond {
                    if super::created_of(repo, &t).await?.is_some_and(|c| c < cutoff) {
                        old.insert(t);
                    }
                }
                old
            }
            None => beyond.into_iter().collect(),
        }
    };
    let by_tag: BTreeMap<&str, &Descriptor> = normal.iter().map(|(t, d)| (t.as_str(), d)).collect();
    // what stays referenced: kept tags' manifests and, through kept indexes, their children
    let mut kept: BTreeSet<Digest> = BTreeSet::new();
    let mut queue: Vec<Descriptor> =
        normal.iter().filter(|(t, _)| !removed.contains(t)).map(|(_, d)| d.clone()).collect();
    while let Some(d) = queue.pop() {
        if !kept.insert(d.digest.clone()) || !media::is_index(&d.media_type) {
            continue;
        }
        if let View::Index(i) = &repo.fetch_document(&d).await?.view {
            queue.extend(i.manifests.iter().filter(|c| media::is_document(&c.media_type)).cloned());
        }
    }
    let mut actions = Vec::new();
    for (t, d) in &normal {
        if !removed.contains(t) {
            actions.push(Action::Keep { tag: t.clone(), digest: d.digest.clone() });
        }
    }
    let mut deletes: BTreeMap<Digest, (Descriptor, Vec<String>)> = BTreeMap::new();
    for t in &removed {
        let d = by_tag[t.as_str()];
        if kept.contains(&d.digest) {
            actions.push(Action::Untag { tag: t.clone(), digest: d.digest.clone() });
        } else {
            deletes.entry(d.digest.clone()).or_insert_with(|| (d.clone(), vec![])).1.push(t.clone());
        }
    }
    // children of deleted indexes that nothing kept references, and the referrers of all
    // of them (API or fallback index, cosign tags), recursively
    let mut extra: Vec<Action> = Vec::new();
    let mut seen: BTreeSet<Digest> = deletes.keys().cloned().collect();
    let mut work: Vec<Descriptor> = deletes.values().map(|(d, _)| d.clone()).collect();
    while let Some(d) = work.pop() {
        if media::is_index(&d.media_type) {
            if let View::Index(i) = &repo.fetch_document(&d).await?.view {
                for c in i.manifests.iter().filter(|c| media::is_document(&c.media_type)) {
                    if !kept.contains(&c.digest) && seen.insert(c.digest.clone()) {
                        extra.push(Action::Delete {
                            digest: c.digest.clone(),
                            tags: vec![],
                            reason: format!("child of {}", d.digest),
                        });
                        work.push(c.clone());
                    }
                }
            }
        }
        let referrers = repo.referrers(&d.digest, None).await.unwrap_or_default();
        for r in referrers {
            if !kept.contains(&r.digest) && seen.insert(r.digest.clone()) {
                extra.push(Action::Delete {
                    digest: r.digest.clone(),
                    tags: vec![],
                    reason: format!("referrer of {}", d.digest),
                });
                work.push(r);
            }
        }
        for (t, a) in &attached {
            if attached_subject(t).as_ref() == Some(&d.digest)
                && !kept.contains(&a.digest)
                && seen.insert(a.digest.clone())
            {
                extra.push(Action::Delete {
                    digest: a.digest.clone(),
                    tags: vec![t.clone()],
                    reason: format!("attached to {} (tag {t})", d.digest),
                });
                work.push(a.clone());
            }
        }
    }
    // referrers and children first: a subject goes after what points at it
    actions.extend(extra.into_iter().rev());
    for (digest, (_, tags)) in deletes {
        actions.push(Action::Delete { digest, tags, reason: "policy".into() });
    }
    Ok(Plan { actions })
}

/// What applying a plan did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// Tags removed by untagging.
    pub untagged: usize,
    /// Manifests deleted.
    pub deleted: usize,
    /// Steps that failed, with why (the others went on).
    pub errors: Vec<String>,
}

/// Apply `plan` to `repo`: untags first, then deletes in the plan's order.
pub async fn apply(repo: &Repository, plan: &Plan) -> Result<Applied> {
    let mut out = Applied::default();
    if plan.actions.iter().any(|a| matches!(a, Action::Delete { .. } | Action::Untag { .. })) {
        repo.check_delete_enabled().await?;
    }
    for a in &plan.actions {
        if let Action::Untag { tag, .. } = a {
            match repo.untag(tag).await {
                Ok(_) => out.untagged += 1,
                Err(e) => out.errors.push(format!("untag {tag}: {e}")),
            }
        }
    }
    for a in &plan.actions {
        if let Action::Delete { digest, .. } = a {
            match repo.delete_manifest(digest).await {
                Ok(()) => out.deleted += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => out.errors.push(format!("delete {digest}: {e}")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_tags() {
        let h = "a".repeat(64);
        assert!(attached_subject(&format!("sha256-{h}")).is_some());
        assert!(attached_subject(&format!("sha256-{h}.sig")).is_some());
        assert!(attached_subject(&format!("sha256-{h}.foo")).is_none());
        assert!(attached_subject("sha256-abc").is_none());
        assert!(attached_subject("v1").is_none());
    }
}
