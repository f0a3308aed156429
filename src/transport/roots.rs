//! The one root/tag index: the `manifests` of a layout's `index.json` (and of an OCI
//! archive's, and the roots the memory transport keeps). An entry is a root descriptor; its
//! `org.opencontainers.image.ref.name` annotation is its tag. Entries keep the exact fields
//! they were read with (unknown ones included) and their order; a new tag goes at the end.
//!
//! Tags and digests are looked up in maps, so setting N tags costs O(N), not O(N²): copying
//! a layout with 8,000 tags once rewrote index.json with a `retain` per tag.

use std::collections::HashMap;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::Document;
use crate::model::media;
use crate::model::reference::{same_image_name, split_tag, TagOrDigest};

/// One entry, kept as its JSON (about 200 bytes for a tagged image) rather than as a parsed
/// descriptor and a JSON tree (about 2 KiB): a layout of 100k tags is read and rewritten
/// whole by every tag update, so this is what its index costs in memory. Descriptors are
/// parsed again when asked for.
#[derive(Clone, Debug)]
struct Entry {
    /// The entry as read (compacted), or as written for a new one: unknown fields and key
    /// order kept.
    raw: Box<RawValue>,
    digest: Digest,
}

impl Entry {
    /// From a descriptor hoist writes.
    fn of(desc: &Descriptor) -> Result<Entry> {
        let raw = serde_json::value::to_raw_value(desc).map_err(|e| Error::serialize("index.json entry", e))?;
        Ok(Entry { raw, digest: desc.digest.clone() })
    }

    fn desc(&self) -> Descriptor {
        // every entry parsed as a descriptor when it was read or made
        serde_json::from_str(self.raw.get()).expect("index entry is a descriptor")
    }
}

/// Root descriptors and their tags, in order, as `index.json` holds them.
#[derive(Clone, Debug, Default)]
pub struct RootIndex {
    /// The other fields of the index document, in file order.
    fields: serde_json::Map<String, Value>,
    /// Entries in order; `None` for one removed since it was read.
    slots: Vec<Option<Entry>>,
    /// Slots of the live entries with each tag, in order.
    by_tag: HashMap<String, Vec<usize>>,
    /// Number of live entries with each digest.
    by_digest: HashMap<Digest, usize>,
}

/// The members of a JSON object, each value as its raw JSON, in file order.
struct RawMembers(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawMembers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<RawMembers, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, Box<RawValue>>()? {
                    v.push(kv);
                }
                Ok(RawMembers(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// `raw` without whitespace between tokens (as serde_json writes JSON): entries read from a
/// pretty-printed index.json are written back compact, as they were when parsed into trees.
fn compact(raw: Box<RawValue>) -> std::result::Result<Box<RawValue>, serde_json::Error> {
    let (mut in_string, mut escaped) = (false, false);
    let spaced = raw.get().bytes().any(|b| {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            false
        } else {
            in_string = b == b'"';
            b.is_ascii_whitespace()
        }
    });
    if !spaced {
        return Ok(raw);
    }
    serde_json::value::to_raw_value(&serde_json::from_str::<Value>(raw.get())?)
}

impl RootIndex {
    /// An empty index.
    pub fn new() -> RootIndex {
        RootIndex::default()
    }

    /// Parse an `index.json`. A missing `manifests` counts as empty; every entry must be a
    /// descriptor. `location` names the file in errors.
    pub fn parse(raw: &[u8], location: &str) -> Result<RootIndex> {
        Self::parse_inner(raw, location, false)
    }

    /// Parse an `index.json` that must be a valid image index: `schemaVersion` 2 and a
    /// `manifests` array (what `gc` and `fsck` demand before they judge a layout by it).
    pub fn parse_strict(raw: &[u8], location: &str) -> Result<RootIndex> {
        Self::parse_inner(raw, location, true)
    }

    fn parse_inner(raw: &[u8], location: &str, strict: bool) -> Result<RootIndex> {
        let bad = |reason: &dyn std::fmt::Display| Error::malformed("index.json", location, reason);
        let first = |s: &[u8]| s.iter().copied().find(|b| !b.is_ascii_whitespace());
        if first(raw) != Some(b'{') {
            // as serde_json would say it, for what is not JSON at all
            serde_json::from_slice::<Value>(raw).map_err(|e| bad(&e))?;
            return Err(bad(&"not a JSON object"));
        }
        let RawMembers(members) = serde_json::from_slice(raw).map_err(|e| bad(&e))?;
        let mut fields = serde_json::Map::new();
        let mut manifests = None;
        for (k, v) in members {
            if k == "manifests" {
                manifests = Some(v);
            } else {
                fields.insert(k, serde_json::from_str(v.get()).map_err(|e| bad(&e))?);
            }
        }
        let manifests: Vec<Box<RawValue>> = match manifests {
            Some(m) if first(m.get().as_bytes()) == Some(b'[') => serde_json::from_str(m.get()).map_err(|e| bad(&e))?,
            None if !strict => vec![],
            Some(m) if m.get().trim() == "null" && !strict => vec![],
            None => return Err(bad(&"no manifests array")),
            Some(m) if m.get().trim() == "null" => return Err(bad(&"no manifests array")),
            Some(_) => return Err(bad(&"manifests is not an array")),
        };
        if strict && fields.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
            return Err(bad(&"schemaVersion is not 2"));
        }
        let mut index = RootIndex { fields, ..RootIndex::default() };
        index.slots.reserve(manifests.len());
        for raw in manifests {
            let desc: Descriptor = serde_json::from_str(raw.get()).map_err(|e| bad(&e))?;
            let raw = compact(raw).map_err(|e| bad(&e))?;
            index.push(Entry { raw, digest: desc.digest.clone() }, desc.ref_name());
        }
        Ok(index)
    }

    /// The `index.json` bytes: `schemaVersion`, `mediaType`, `manifests`, then the other
    /// fields as read.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let err = |e: serde_json::Error| Error::serialize("index.json", e);
        let mut fields = self.fields.clone();
        let schema = fields.remove("schemaVersion").unwrap_or(Value::from(2));
        let media_type = fields.remove("mediaType").unwrap_or(Value::from(media::OCI_INDEX));
        let mut out = Vec::with_capacity(64 + self.live().map(|e| e.raw.get().len() + 1).sum::<usize>());
        out.extend_from_slice(b"{\"schemaVersion\":");
        serde_json::to_writer(&mut out, &schema).map_err(err)?;
        out.extend_from_slice(b",\"mediaType\":");
        serde_json::to_writer(&mut out, &media_type).map_err(err)?;
        out.extend_from_slice(b",\"manifests\":[");
        for (i, e) in self.live().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(e.raw.get().as_bytes());
        }
        out.push(b']');
        for (k, v) in &fields {
            out.push(b',');
            serde_json::to_writer(&mut out, k).map_err(err)?;
            out.push(b':');
            serde_json::to_writer(&mut out, v).map_err(err)?;
        }
        out.push(b'}');
        Ok(out)
    }

    fn live(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    fn push(&mut self, e: Entry, tag: Option<&str>) {
        let slot = self.slots.len();
        if let Some(tag) = tag {
            self.by_tag.entry(tag.to_string()).or_default().push(slot);
        }
        *self.by_digest.entry(e.digest.clone()).or_default() += 1;
        self.slots.push(Some(e));
    }

    fn remove_slot(&mut self, slot: usize) {
        if let Some(e) = self.slots[slot].take() {
            if let Some(n) = self.by_digest.get_mut(&e.digest) {
                *n -= 1;
                if *n == 0 {
                    self.by_digest.remove(&e.digest);
                }
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_digest.values().sum()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The entries in order (tags as `ref.name` annotations).
    pub fn entries(&self) -> Vec<Descriptor> {
        self.live().map(Entry::desc).collect()
    }

    /// Every root with its tag, in order.
    pub fn roots(&self) -> Vec<(Descriptor, Option<String>)> {
        self.live()
            .map(|e| {
                let d = e.desc();
                let tag = d.ref_name().map(str::to_string);
                (d, tag)
            })
            .collect()
    }

    /// Each tag with the digest of the entry it names (the last one when several do), in no
    /// particular order; no descriptor is parsed.
    pub fn tag_digests(&self) -> impl Iterator<Item = (&str, &Digest)> {
        self.by_tag.iter().filter_map(|(t, slots)| {
            slots.iter().rev().find_map(|&i| self.slots[i].as_ref()).map(|e| (t.as_str(), &e.digest))
        })
    }

    /// Every root with its tag, in order, each parsed as the iterator reaches it (a whole
    /// layout's roots are never all held as descriptors at once).
    pub fn into_roots(self) -> impl Iterator<Item = (Descriptor, Option<String>)> {
        self.slots.into_iter().flatten().map(|e| {
            let d = e.desc();
            let tag = d.ref_name().map(str::to_string);
            (d, tag)
        })
    }

    /// Whether `digest` is a root (tagged or not).
    pub fn contains_digest(&self, digest: &Digest) -> bool {
        self.by_digest.contains_key(digest)
    }

    /// Point `tag` at `desc`, replacing every entry with that tag; the new entry goes last.
    /// Its `ref.name` is `tag` whatever `ref.name` `desc` carried (the tag it had in its source).
    pub fn set_tag(&mut self, desc: &Descriptor, tag: &str) -> Result<()> {
        let mut desc = desc.clone();
        desc.annotations.insert(media::ANNOTATION_REF_NAME.into(), tag.to_string());
        let e = Entry::of(&desc)?;
        self.untag(tag);
        self.push(e, Some(tag));
        Ok(())
    }

    /// Add `desc` as an untagged root unless its digest is already a root. True if added.
    pub fn add_untagged(&mut self, desc: &Descriptor) -> Result<bool> {
        if self.contains_digest(&desc.digest) {
            return Ok(false);
        }
        let mut desc = desc.clone();
        desc.annotations.remove(media::ANNOTATION_REF_NAME);
        self.push(Entry::of(&desc)?, None);
        Ok(true)
    }

    /// Remove every entry tagged `tag`. True if there was one.
    pub fn untag(&mut self, tag: &str) -> bool {
        let Some(slots) = self.by_tag.remove(tag) else { return false };
        let mut found = false;
        for s in slots {
            found |= self.slots[s].is_some();
            self.remove_slot(s);
        }
        found
    }

    /// Resolve `reference`: None is the only root, a digest is an entry or any manifest
    /// `manifest_by_digest` finds, else a name: a `ref.name` or `io.containerd.image.name` as
    /// stored, else the tag of a full reference stored as `ref.name`, else a full name that
    /// is the same once normalized (`alpine:3` finds `docker.io/library/alpine:3`).
    pub fn resolve(
        &self,
        reference: Option<&TagOrDigest>,
        location: &str,
        manifest_by_digest: impl FnOnce(&Digest) -> Result<Option<Bytes>>,
    ) -> Result<Descriptor> {
        if let Some(tag) = reference.and_then(TagOrDigest::tag) {
            let exact = self.by_tag.get(tag).and_then(|s| s.iter().find_map(|&i| self.slots[i].as_ref()));
            if let Some(e) = exact {
                return Ok(e.desc());
            }
        }
        resolve_in_entries(&self.entries(), reference, location, manifest_by_digest)
    }
}

/// `RootIndex::resolve` over a plain list of entries (archives that keep one).
pub fn resolve_in_entries(
    entries: &[Descriptor],
    reference: Option<&TagOrDigest>,
    location: &str,
    manifest_by_digest: impl FnOnce(&Digest) -> Result<Option<Bytes>>,
) -> Result<Descriptor> {
    match reference {
        None => match entries.len() {
            1 => Ok(entries[0].clone()),
            0 => Err(Error::not_found("any manifest", location)),
            n => Err(Error::InvalidReference {
                reference: location.to_string(),
                reason: format!(
                    "{location} holds {n} manifests; name one with :TAG or @DIGEST (tags: {})",
                    entries.iter().filter_map(|d| d.ref_name()).collect::<Vec<_>>().join(", ")
                ),
            }),
        },
        Some(TagOrDigest::Digest(digest)) => {
            let digest = digest.clone();
            if let Some(d) = entries.iter().find(|d| d.digest == digest) {
                return Ok(d.clone());
            }
            let bytes =
                manifest_by_digest(&digest)?.ok_or_else(|| Error::not_found(format!("manifest {digest}"), location))?;
            let actual = digest.same_alg_of(&bytes);
            if actual != digest {
                return Err(Error::DigestMismatch {
                    what: "manifest".into(),
                    location: location.into(),
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            Ok(Document::parse(bytes, digest, None, location)?.descriptor())
        }
        Some(TagOrDigest::Tag(name)) => {
            let name = name.as_str();
            let exact = entries.iter().position(|d| stored_names(d).any(|n| n == name));
            let by_tag = || entries.iter().position(|d| d.ref_name().is_some_and(|n| tag_of_ref_name(n) == name));
            let by_normalized = || {
                entries.iter().position(|d| stored_names(d).any(|n| n.contains(['/', ':']) && same_image_name(n, name)))
            };
            match exact.or_else(by_tag).or_else(by_normalized) {
                Some(i) => Ok(entries[i].clone()),
                None => Err(Error::not_found(format!("tag {name:?}"), location)),
            }
        }
    }
}

/// The names an index.json entry answers to: its `ref.name` and its
/// `io.containerd.image.name` (the full name BuildKit, containerd and hoist write there).
fn stored_names(d: &Descriptor) -> impl Iterator<Item = &str> {
    d.ref_name().into_iter().chain(d.annotations.get(media::ANNOTATION_CONTAINERD_IMAGE_NAME).map(String::as_str))
}

/// The tag part of a layout `ref.name`: itself, or the tag of a full reference (one with a
/// `/`: a bare `a:b` is a name as it is).
pub fn tag_of_ref_name(name: &str) -> &str {
    match split_tag(name) {
        (_, Some(t)) if name.contains('/') => t,
        _ => name,
    }
}

/// Longest name read from an archive that may become a tag or name (the longest reference
/// hoist parses).
const MAX_STORED_NAME: usize = 4096;

/// Check a name stored in a source (an archive's or a layout's (`ref.name` annotation, `RepoTags` entry) before it
/// is handed out as a tag or name: such names are data from the source, and may never choose
/// a path or another repository at the destination. Refuses empty or overlong names, `..`,
/// absolute paths, backslashes, percent-encoding (`%2f` is an encoded slash), NUL and other
/// control characters, with an error naming `what` and the archive at `location`.
pub fn check_stored_name(name: &str, what: &str, location: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_STORED_NAME {
        Some("is too long")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else if name.starts_with('/') {
        Some("is an absolute path")
    } else if name.contains("..") {
        Some("contains '..'")
    } else if name.contains('\\') {
        Some("contains a backslash")
    } else if name.contains('%') {
        Some("is percent-encoded (an encoded slash or other character)")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::InvalidReference {
            reference: name.to_string(),
            reason: format!("{what} stored in {location} {why}; refused as a tag or name"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_order_and_replaces_tags() {
        let a = Descriptor::of_bytes(media::OCI_MANIFEST, b"a");
        let raw = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":1,"zz":1,"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}],"x":true}}"#,
            media::OCI_MANIFEST,
            a.digest
        );
        let mut idx = RootIndex::parse(raw.as_bytes(), "t").unwrap();
        assert_eq!(idx.len(), 1);
        let out = String::from_utf8(idx.to_bytes().unwrap()).unwrap();
        assert!(out.contains(r#""size":1,"zz":1,"annotations""#), "{out}");
        assert!(out.ends_with(r#""x":true}"#), "{out}");
        let b = Descriptor::of_bytes(media::OCI_MANIFEST, b"b");
        idx.set_tag(&b, "v2").unwrap();
        idx.set_tag(&b, "v1").unwrap();
        let tags: Vec<_> = idx.roots().into_iter().map(|(d, t)| (d.digest, t.unwrap())).collect();
        assert_eq!(tags, [(b.digest.clone(), "v2".to_string()), (b.digest.clone(), "v1".to_string())]);
        assert!(!idx.add_untagged(&b).unwrap());
        assert!(idx.add_untagged(&a).unwrap());
        assert!(idx.untag("v1") && !idx.untag("v1"));
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.resolve(Some(&"v2".into()), "t", |_| Ok(None)).unwrap().digest, b.digest);
        assert!(RootIndex::parse_strict(b"{}", "t").is_err());
        assert!(RootIndex::parse_strict(br#"{"schemaVersion":2,"manifests":[]}"#, "t").is_ok());
        assert!(RootIndex::parse(br#"{"manifests":{}}"#, "t").is_err());
    }

    #[test]
    fn entries_are_kept_as_compact_json() {
        let a = Descriptor::of_bytes(media::OCI_MANIFEST, b"a");
        let doc = serde_json::json!({
            "manifests": [{"mediaType": media::OCI_MANIFEST, "digest": a.digest.to_string(), "size": 1,
                           "zz": "a \"b\" c", "annotations": {"org.opencontainers.image.ref.name": "v 1"}}],
            "schemaVersion": 2,
            "x": [1, 2],
        });
        let want = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":1,"zz":"a \"b\" c","annotations":{{"org.opencontainers.image.ref.name":"v 1"}}}}],"x":[1,2]}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            a.digest
        );
        for raw in [serde_json::to_vec_pretty(&doc).unwrap(), serde_json::to_vec(&doc).unwrap()] {
            let idx = RootIndex::parse(&raw, "t").unwrap();
            assert_eq!(String::from_utf8(idx.to_bytes().unwrap()).unwrap(), want);
            assert_eq!(idx.tag_digests().collect::<Vec<_>>(), [("v 1", &a.digest)]);
            let roots: Vec<_> = idx.into_roots().map(|(d, t)| (d.digest, t)).collect();
            assert_eq!(roots, [(a.digest.clone(), Some("v 1".to_string()))]);
        }
        assert!(RootIndex::parse(b"[]", "t").unwrap_err().to_string().contains("not a JSON object"));
        assert!(RootIndex::parse(b"{", "t").is_err());
    }

    #[test]
    fn names_resolve_in_short_and_full_form() {
        let d = |b: &[u8], ann: &[(&str, &str)]| {
            let mut d = Descriptor::of_bytes(media::OCI_MANIFEST, b);
            for (k, v) in ann {
                d.annotations.insert(k.to_string(), v.to_string());
            }
            d
        };
        let entries = vec![
            d(b"a", &[(media::ANNOTATION_REF_NAME, "localhost/app:v1")]),
            d(
                b"b",
                &[
                    (media::ANNOTATION_REF_NAME, "3.20"),
                    (media::ANNOTATION_CONTAINERD_IMAGE_NAME, "docker.io/library/alpine:3.20"),
                ],
            ),
            d(b"c", &[(media::ANNOTATION_REF_NAME, "docker.io/me/app:latest")]),
        ];
        let find = |r: &str| resolve_in_entries(&entries, Some(&r.into()), "t", |_| Ok(None)).map(|d| d.digest);
        for (name, want) in [
            ("localhost/app:v1", 0),
            ("v1", 0),
            ("3.20", 1),
            ("alpine:3.20", 1),
            ("docker.io/library/alpine:3.20", 1),
            ("me/app", 2),
            ("me/app:latest", 2),
            ("latest", 2),
        ] {
            assert_eq!(find(name).unwrap(), entries[want].digest, "{name}");
        }
        assert!(find("alpine").is_err());
        let idx = RootIndex::parse(
            &serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
            "t",
        )
        .unwrap();
        assert_eq!(idx.resolve(Some(&"alpine:3.20".into()), "t", |_| Ok(None)).unwrap().digest, entries[1].digest);
    }

    #[test]
    fn ref_name_tags() {
        assert_eq!(tag_of_ref_name("v1"), "v1");
        assert_eq!(tag_of_ref_name("docker.io/library/alpine:3.20"), "3.20");
        assert_eq!(tag_of_ref_name("localhost:5000/a/b:latest"), "latest");
        assert_eq!(tag_of_ref_name("localhost:5000/a/b"), "localhost:5000/a/b");
    }
}
