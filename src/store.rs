//! The local store: the OCI layout that `build`, `artifact` and `model pack` store into
//! (`$HOIST_STORE`), and its policy: where it is by default, how long untagged results stay,
//! and what `store prune` removes. The CLI only parses flags and prints.

use std::path::PathBuf;

use crate::error::Result;
use crate::transport::layout::Layout;
use crate::transport::Source;
use crate::Descriptor;

/// How long untagged results of `artifact push` and `model pack` stay in the store: older
/// ones are pruned at the end of the next such command (so a re-run within a day reuses them).
pub const KEEP_UNTAGGED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `$HOIST_STORE`, else `$XDG_DATA_HOME/hoist/store`, else `~/.local/share/hoist/store`.
pub fn default_store() -> PathBuf {
    if let Some(s) = std::env::var_os("HOIST_STORE").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(d).join("hoist/store");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/hoist/store")
}

/// Age of a root: how long ago its manifest blob was stored.
pub fn age_of(layout: &Layout, d: &Descriptor) -> Option<std::time::Duration> {
    let m = std::fs::symlink_metadata(layout.blob_path_of(&d.digest)).ok()?;
    m.modified().ok()?.elapsed().ok()
}

/// Total size of the distinct blobs under `d` (manifests, configs, layers).
pub async fn total_size(layout: &Layout, d: &Descriptor) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![d.clone()];
    let mut total = 0;
    while let Some(d) = stack.pop() {
        if !seen.insert(d.digest.clone()) || seen.len() > 100_000 {
            continue;
        }
        total += d.size;
        if crate::model::media::is_document(&d.media_type) {
            if let Ok(doc) = layout.fetch_document(&d).await {
                match &doc.view {
                    crate::model::document::View::Index(i) => stack.extend(i.manifests.iter().cloned()),
                    crate::model::document::View::Manifest(m) => {
                        stack.push(m.config.clone());
                        stack.extend(m.layers.iter().cloned());
                    }
                }
            }
        }
    }
    total
}

/// Untagged roots of `layout` older than `age` removed from index.json (all of them with
/// `dry_run` false), then gc. Returns the removed roots and the gc report.
pub async fn prune(
    layout: &Layout,
    age: std::time::Duration,
    dry_run: bool,
) -> Result<(Vec<Descriptor>, crate::transport::layout::GcReport)> {
    let old: Vec<Descriptor> = layout
        .root_index()?
        .roots()
        .into_iter()
        .filter(|(d, tag)| tag.is_none() && age_of(layout, d).is_some_and(|a| a >= age))
        .map(|(d, _)| d)
        .collect();
    if !dry_run && !old.is_empty() {
        let gone: std::collections::HashSet<_> = old.iter().map(|d| d.digest.clone()).collect();
        remove_roots(layout, |d, tag| tag.is_none() && gone.contains(&d.digest))?;
    }
    let report = layout.gc(dry_run).await?;
    Ok((old, report))
}

/// Rewrite index.json without the roots `drop` picks (order of the rest kept).
pub fn remove_roots(layout: &Layout, drop: impl Fn(&Descriptor, Option<&str>) -> bool) -> Result<usize> {
    layout.update_index(|index| {
        let mut kept = crate::transport::roots::RootIndex::new();
        let mut removed = 0;
        for (d, tag) in index.roots() {
            if drop(&d, tag.as_deref()) {
                removed += 1;
                continue;
            }
            match tag {
                Some(t) => kept.set_tag(&d, &t)?,
                None => {
                    kept.add_untagged(&d)?;
                }
            }
        }
        *index = kept;
        Ok(removed)
    })
}
