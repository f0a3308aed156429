//! Unpack an image into a snapshotter, as `ctr pull` does, so `ctr run` starts at once: for
//! each layer of the host platform's image, the snapshot named by its chain ID is reused when
//! it exists, else prepared on its parent, filled by the diff service's `Apply` (containerd
//! reads the layer from its own content store and decompresses it) and committed under the
//! chain ID. The applied digest must be the config's diff ID. Then the labels containerd's
//! unpacker sets: `containerd.io/uncompressed` on each layer and
//! `containerd.io/gc.ref.snapshot.<snapshotter>` on the config, which keeps the snapshots
//! alive as long as the image is.

use std::collections::BTreeMap;

use containerd_client::services::v1::snapshots::{
    snapshots_client::SnapshotsClient, CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::{diff_client::DiffClient, ApplyRequest};
use containerd_client::tonic::{transport::Channel, Code, Status};
use serde::Deserialize;

use super::client::to_proto;
use super::Containerd;
use crate::error::{Error, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;

/// Label on a layer blob: the digest of its uncompressed tar (its diff ID).
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Label prefix on a config: the top snapshot of the image, per snapshotter.
const LABEL_GC_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
/// The largest image config read for its diff IDs (docker's and containerd's limit for
/// manifests is the same order).
const MAX_CONFIG_SIZE: u64 = media::MAX_MANIFEST_SIZE;

#[derive(Deserialize)]
struct ConfigView {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Chain IDs of a layer stack: `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub(super) fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn is_image_config(media_type: &str) -> bool {
    media_type == media::OCI_CONFIG || media_type == media::DOCKER_CONFIG
}

/// Unpack `root` (an image, or the host platform's image of an index) into the target's
/// snapshotter. Artifacts and indexes without an image for this host are left as they are.
pub(super) async fn unpack(c: &Containerd, root: &Document) -> Result<()> {
    let manifest = match &root.view {
        View::Manifest(_) => root.clone(),
        View::Index(ix) => {
            let host = Platform::host();
            let Some(entry) = ix.manifests.iter().find(|d| host.matches_entry(d)) else { return Ok(()) };
            let bytes = c.read_all(entry, media::MAX_MANIFEST_SIZE).await?;
            let doc = Document::from_fetched(entry, bytes, &c.location)?;
            if doc.is_index() {
                return Ok(());
            }
            doc
        }
    };
    let View::Manifest(m) = &manifest.view else { return Ok(()) };
    if !is_image_config(&m.config.media_type) || m.layers.is_empty() {
        return Ok(());
    }
    let config = c.read_all(&m.config, MAX_CONFIG_SIZE).await?;
    let view: ConfigView = serde_json::from_slice(&config)
        .map_err(|e| Error::malformed(format!("image config {}", m.config.digest), c.location.clone(), e))?;
    let diff_ids = view
        .rootfs
        .map(|r| r.diff_ids)
        .unwrap_or_default()
        .iter()
        .map(|d| d.parse::<Digest>())
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != m.layers.len() {
        return Err(Error::malformed(
            format!("image config {}", m.config.digest),
            c.location.clone(),
            format!("{} diff_ids for {} layers", diff_ids.len(), m.layers.len()),
        ));
    }
    let chains = chain_ids(&diff_ids);
    let snapshotter = c.target.snapshotter.clone();
    let mut snaps = SnapshotsClient::new(c.channel.clone());
    let mut parent = String::new();
    for ((layer, diff_id), chain) in m.layers.iter().zip(&diff_ids).zip(&chains) {
        let name = chain.to_string();
        let stat = StatSnapshotRequest { snapshotter: snapshotter.clone(), key: name.clone() };
        match snaps.stat(c.req(stat)).await {
            Ok(_) => {
                parent = name;
                continue;
            }
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(snapshot_error(c, &snapshotter, s)),
        }
        apply_layer(c, &mut snaps, layer, diff_id, &parent, &name).await?;
        c.add_labels(&layer.digest, BTreeMap::from([(LABEL_UNCOMPRESSED.to_string(), diff_id.to_string())])).await?;
        parent = name;
    }
    let label = format!("{LABEL_GC_SNAPSHOT}.{snapshotter}");
    c.add_labels(&m.config.digest, BTreeMap::from([(label, parent)])).await
}

/// Prepare a snapshot on `parent`, apply `layer` into it, check its diff ID, commit it as `name`.
async fn apply_layer(
    c: &Containerd,
    snaps: &mut SnapshotsClient<Channel>,
    layer: &Descriptor,
    diff_id: &Digest,
    parent: &str,
    name: &str,
) -> Result<()> {
    let snapshotter = c.target.snapshotter.clone();
    let key = format!("hoist-extract-{:016x}-{name}", rand::random::<u64>());
    let prep = PrepareSnapshotRequest {
        snapshotter: snapshotter.clone(),
        key: key.clone(),
        parent: parent.to_string(),
        labels: Default::default(),
    };
    let mounts = snaps.prepare(c.req(prep)).await.map_err(|s| snapshot_error(c, &snapshotter, s))?.into_inner().mounts;
    let remove = |snaps: &mut SnapshotsClient<Channel>| {
        let r = RemoveSnapshotRequest { snapshotter: snapshotter.clone(), key: key.clone() };
        let req = c.req(r);
        let mut s = snaps.clone();
        async move {
            let _ = s.remove(req).await;
        }
    };
    let apply = ApplyRequest { diff: Some(to_proto(layer)), mounts, payloads: Default::default(), sync_fs: false };
    let applied = match DiffClient::new(c.channel.clone()).apply(c.req(apply)).await {
        Ok(r) => r.into_inner().applied,
        Err(s) => {
            remove(snaps).await;
            return Err(c.status(&format!("unpack layer {} (diff apply)", layer.digest), s));
        }
    };
    let got = applied.map(|a| a.digest).unwrap_or_default();
    if got != diff_id.to_string() {
        remove(snaps).await;
        return Err(Error::DigestMismatch {
            what: format!("uncompressed layer {}", layer.digest),
            location: c.location.clone(),
            expected: diff_id.to_string(),
            actual: got,
        });
    }
    let commit = CommitSnapshotRequest {
        snapshotter: snapshotter.clone(),
        name: name.to_string(),
        key: key.clone(),
        labels: Default::default(),
    };
    match snaps.commit(c.req(commit)).await {
        Ok(_) => Ok(()),
        // Another unpack committed the same chain meanwhile: theirs is as good.
        Err(s) if s.code() == Code::AlreadyExists => {
            remove(snaps).await;
            Ok(())
        }
        Err(s) => {
            remove(snaps).await;
            Err(snapshot_error(c, &snapshotter, s))
        }
    }
}

/// A snapshot service failure; an unknown snapshotter is said so.
fn snapshot_error(c: &Containerd, snapshotter: &str, s: Status) -> Error {
    if s.message().contains("snapshotter not loaded") || s.message().contains("not loaded") {
        return Error::Unsupported(format!(
            "{}: snapshotter {snapshotter:?} is not loaded in containerd at {} (`ctr plugins ls` lists the loaded ones; \
             overlayfs and native are usual; CONTAINERD_SNAPSHOTTER or unpack=false)",
            c.location,
            c.target.address.display()
        ));
    }
    c.status(&format!("unpack into snapshotter {snapshotter}"), s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a: Digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".parse().unwrap();
        let b: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }
}
