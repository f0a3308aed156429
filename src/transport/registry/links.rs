//! Writes of a digest into a repository kept apart from the PUTs of manifests naming it.
//!
//! distribution (2.8.2, filesystem storage) records that a repository holds a blob or a
//! manifest in a small `link` file, and rewrites it on every cross-repository mount, every
//! finished upload and every manifest PUT of that digest, even when it is there already:
//! truncate, then write. A manifest PUT checks each blob (and an index each manifest) it
//! names by reading those files; if it reads one in the moment between the truncate and the
//! write, the PUT is refused with `MANIFEST_BLOB_UNKNOWN` although the blob is there. Two
//! images sharing a layer, copied side by side into one repository (`sync`), did exactly
//! that: one image's lane mounted the layer again while the other's manifest went up.
//!
//! So, within one [`super::Client`], per repository and digest: a write (mount, upload,
//! manifest PUT) holds the digest exclusively; a manifest PUT holds each digest it names
//! shared, and existence checks (HEAD) hold theirs shared too, so a check made while the
//! same digest is being written waits for the write and sees its result. A manifest PUT
//! takes its locks in digest order, so two PUTs never wait for each other in a circle.
//! Entries live only while someone holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::model::digest::Digest;

type Key = (Arc<str>, Digest);

/// The locks of one client: (registry/repository, digest) -> lock.
#[derive(Default)]
pub(super) struct LinkLocks {
    map: Mutex<HashMap<Key, Arc<RwLock<()>>>>,
}

enum Held {
    Read(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// Locks held until dropped.
pub(super) struct LinkGuard<'a> {
    locks: &'a LinkLocks,
    keys: Vec<Key>,
    held: Vec<Held>,
    /// The write lock had to wait for another holder (someone else was writing or reading
    /// the digest): what it knew about the digest may be stale.
    pub(super) waited: bool,
}

impl LinkLocks {
    fn entry(&self, key: &Key) -> Arc<RwLock<()>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone()
    }

    /// Hold `write` exclusively (if any) and each of `read` shared, in `repo` (its
    /// `registry/repository`).
    pub(super) async fn lock(
        &self,
        repo: &str,
        write: Option<&Digest>,
        read: impl IntoIterator<Item = Digest>,
    ) -> LinkGuard<'_> {
        let repo: Arc<str> = Arc::from(repo);
        let mut wanted: Vec<(Digest, bool)> = read.into_iter().map(|d| (d, false)).collect();
        if let Some(w) = write {
            wanted.retain(|(d, _)| d != w);
            wanted.push((w.clone(), true));
        }
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        wanted.dedup_by(|a, b| a.0 == b.0);
        let mut guard =
            LinkGuard { locks: self, keys: Vec::with_capacity(wanted.len()), held: Vec::new(), waited: false };
        for (digest, write) in wanted {
            let key = (repo.clone(), digest);
            let lock = self.entry(&key);
            guard.keys.push(key);
            let held = if write {
                match lock.clone().try_write_owned() {
                    Ok(g) => Held::Write(g),
                    Err(_) => {
                        guard.waited = true;
                        Held::Write(lock.write_owned().await)
                    }
                }
            } else {
                Held::Read(lock.read_owned().await)
            };
            guard.held.push(held);
        }
        guard
    }

    /// Entries held or awaited (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        self.held.clear();
        // Clones of an entry are only made under the map's lock: one that only the map holds
        // now is neither held nor awaited.
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        for key in self.keys.drain(..) {
            if map.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[tokio::test]
    async fn a_write_excludes_a_put_naming_the_digest_and_entries_go_away() {
        let locks = LinkLocks::default();
        let w = locks.lock("r/a", Some(&d("layer")), []).await;
        assert!(!w.waited);
        // another repository, or another digest, does not wait
        drop(locks.lock("r/b", None, [d("layer")]).await);
        drop(locks.lock("r/a", Some(&d("m2")), [d("other")]).await);
        // a manifest naming the layer waits for the write
        let (m, layer) = (d("m"), d("layer"));
        let put = locks.lock("r/a", Some(&m), [d("config"), d("layer")]);
        tokio::pin!(put);
        assert!(futures::poll!(&mut put).is_pending());
        drop(w);
        let g = put.await;
        // a second write of a digest held shared waits, and says so
        let again = locks.lock("r/a", Some(&layer), []);
        tokio::pin!(again);
        assert!(futures::poll!(&mut again).is_pending());
        drop(g);
        let again = again.await;
        assert!(again.waited);
        drop(again);
        assert_eq!(locks.len(), 0, "no entry outlives its holders");
    }
}
