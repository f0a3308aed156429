//! SECURITY.md's "never writes through a symlink" for `model unpack` (#25): the cases a single
//! layer cannot show. A model's tar layers may not make links at all (the model profile of the
//! one extraction refuses symlinks and hard links), so the symlinks here are ones a layer tried
//! to make, or ones already in the destination directory, and each case checks the file
//! outside the destination, so that it fails if the guard is removed.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use hoist::model::media;
use hoist::model::write::ImageManifest;
use hoist::modelpack::unpack_model;
use hoist::transport::layout::Layout;
use hoist::Descriptor;

const RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
const TAR: &str = "application/vnd.cncf.model.weight.v1.tar";

/// A tar of `(path, kind, data, link)` entries.
fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Symlink { 0o777 } else { 0o644 });
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A model whose layers are `layers` (`(media type, bytes, filepath annotation)`), in a layout
/// under `t`; its manifest's descriptor.
fn model(t: &Path, layers: &[(&str, Vec<u8>, Option<&str>)]) -> (Layout, Descriptor) {
    let layout = Layout::create(t.join("oci")).unwrap();
    let config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    layout.write_blob_bytes(&config, media::EMPTY_JSON).unwrap();
    let mut descs = Vec::new();
    for (media_type, bytes, path) in layers {
        let mut d = Descriptor::of_bytes(*media_type, bytes);
        layout.write_blob_bytes(&d, bytes).unwrap();
        if let Some(p) = path {
            d = d.with_annotation(media::ANNOTATION_MODEL_FILEPATH_CNAI, *p);
        }
        descs.push(d);
    }
    let bytes = ImageManifest::new(config, descs).to_bytes().unwrap();
    let root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    layout.write_blob_bytes(&root, &bytes).unwrap();
    (layout, root)
}

/// A symlink made in an earlier layer, then used as a parent by a later one: the layer making
/// it is refused, and a symlink already in the destination used as a parent is refused too
/// (by a raw layer's path and by a tar layer's entry); nothing is written outside.
#[tokio::test]
async fn model_unpack_never_writes_through_a_symlink_parent() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let out_s = outside.to_str().unwrap();

    // 1. Layer 1 makes `esc -> OUTSIDE`, layer 2 writes `esc/owned`.
    let l1 = tar_of(&[("esc", tar::EntryType::Symlink, b"", Some(out_s))]);
    let l2 = tar_of(&[("esc/owned", tar::EntryType::Regular, b"pwned\n", None)]);
    let (layout, root) = model(&t.path().join("m1"), &[(TAR, l1, None), (TAR, l2, None)]);
    let dest = t.path().join("dest1");
    let r = unpack_model(&layout, &root, &dest).await;
    assert!(r.is_err(), "a model layer made a symlink: {r:?}");
    assert!(!outside.join("owned").exists(), "written through an earlier layer's symlink");

    // 2. `esc -> OUTSIDE` already in the destination; a raw layer at `esc/owned`, then a tar
    //    layer with `esc/owned`.
    for (i, layer) in [
        (RAW, b"pwned\n".to_vec(), Some("esc/owned")),
        (TAR, tar_of(&[("esc/owned", tar::EntryType::Regular, b"pwned\n", None)]), None),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = t.path().join(format!("dest2-{i}"));
        fs::create_dir(&dest).unwrap();
        symlink(&outside, dest.join("esc")).unwrap();
        let (layout, root) = model(&t.path().join(format!("m2-{i}")), &[layer]);
        let r = unpack_model(&layout, &root, &dest).await;
        let e = r.expect_err("a layer wrote below a symlink in the destination");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!outside.join("owned").exists(), "written through the destination's symlink");
    }
}

/// A symlink at the final path component (already in the destination, pointing outside) is
/// replaced by the unpacked file, never written through: by a raw layer and by a tar layer.
#[tokio::test]
async fn model_unpack_replaces_a_symlink_at_the_final_component() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.join("target");
    fs::write(&target, "keep\n").unwrap();
    for (i, layer) in
        [(RAW, b"new\n".to_vec(), Some("f")), (TAR, tar_of(&[("f", tar::EntryType::Regular, b"new\n", None)]), None)]
            .into_iter()
            .enumerate()
    {
        let dest = t.path().join(format!("dest-{i}"));
        fs::create_dir(&dest).unwrap();
        symlink(&target, dest.join("f")).unwrap();
        let (layout, root) = model(&t.path().join(format!("m-{i}")), &[layer]);
        let r = unpack_model(&layout, &root, &dest).await;
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n", "written through the final component: {r:?}");
        r.unwrap();
        let f = dest.join("f");
        assert!(fs::symlink_metadata(&f).unwrap().file_type().is_file(), "f is still a symlink");
        assert_eq!(fs::read_to_string(&f).unwrap(), "new\n");
    }
}

/// A hard link pointing outside the destination (`../outside/secret`, and an absolute path) is
/// refused: the outside file gets no second link and keeps its bytes.
#[tokio::test]
async fn model_unpack_refuses_a_hard_link_pointing_outside() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    fs::write(&secret, "secret\n").unwrap();
    for (i, link) in ["../outside/secret", secret.to_str().unwrap()].into_iter().enumerate() {
        let l = tar_of(&[("h", tar::EntryType::Link, b"", Some(link))]);
        let (layout, root) = model(&t.path().join(format!("m-{i}")), &[(TAR, l, None)]);
        let dest = t.path().join(format!("dest-{i}"));
        let r = unpack_model(&layout, &root, &dest).await;
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1, "the outside file got a hard link: {r:?}");
        assert!(r.is_err(), "a hard link out of the destination was accepted");
        assert!(!dest.join("h").exists());
        assert_eq!(fs::read_to_string(&secret).unwrap(), "secret\n");
    }
}
