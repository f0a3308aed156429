//! Fixtures: OCI layouts with random layers written by hand (so that hoist is judged on content
//! it did not create), the sample layout of `examples/`, and file-tree helpers.

use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};

use crate::tools::sha256 as digest_of;

/// `examples/` of the hoist repository (sample layout, image, model, hoist.toml).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// `examples/sample-layout`: an OCI layout with tags `multi` (a two-platform index) and
/// `artifact` (an OCI 1.1 artifact with a subject).
pub fn sample_layout_dir() -> PathBuf {
    examples_dir().join("sample-layout")
}

/// `len` pseudo-random bytes from `seed` (incompressible, reproducible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Write `data` as a blob of the layout at `dir`; returns its digest.
pub fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = digest_of(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&d["sha256:".len()..]), data).unwrap();
    d
}

/// The path of blob `digest` in the layout at `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// An image manifest over `layers` (raw bytes, tar media type) and a small config.
/// Returns (manifest bytes, manifest digest); writes every blob into `dir`.
pub fn write_image(dir: &Path, layers: &[&[u8]], label: &str) -> (Vec<u8>, String) {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"test": label}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest_of(l)).collect::<Vec<_>>()},
    })
    .to_string();
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": put_blob(dir, l), "size": l.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put_blob(dir, config.as_bytes()), "size": config.len()},
        "layers": layer_descs,
    })
    .to_string()
    .into_bytes();
    let d = put_blob(dir, &manifest);
    (manifest, d)
}

/// A complete layout at `dir` holding `images` as (tag, manifest bytes, digest).
pub fn write_index(dir: &Path, images: &[(&str, &[u8], &str)]) {
    let manifests: Vec<_> = images
        .iter()
        .map(|(tag, m, d)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": d, "size": m.len(),
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                   "manifests": manifests});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A one-image layout at `dir` tagged `tag`, with layers of the given sizes; returns the
/// manifest digest.
pub fn image_layout(dir: &Path, tag: &str, layer_sizes: &[usize], seed: u64) -> String {
    let layers: Vec<Vec<u8>> =
        layer_sizes.iter().enumerate().map(|(i, n)| random_bytes(*n, seed * 100 + i as u64)).collect();
    let refs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
    let (m, d) = write_image(dir, &refs, &format!("{tag}-{seed}"));
    write_index(dir, &[(tag, &m, &d)]);
    d
}

/// Every file under `dir` (relative path) but hoist's own `.hoist/` (locks, temp files),
/// sorted: to show a destination was not touched.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .filter(|p| !p.starts_with(".hoist"))
        .collect();
    v.sort();
    v
}

/// Copy a tree keeping modes and symlinks, giving every file the same fixed mtime (so a
/// copy differs from its source in timestamps, which reproducible builds must ignore).
pub fn copy_tree(src: &Path, dst: &Path) {
    use std::fs;
    use std::os::unix::fs::symlink;
    fs::create_dir_all(dst).unwrap();
    for e in walkdir::WalkDir::new(src).min_depth(1) {
        let e = e.unwrap();
        let to = dst.join(e.path().strip_prefix(src).unwrap());
        let ft = e.file_type();
        if ft.is_symlink() {
            symlink(fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            fs::create_dir_all(&to).unwrap();
            fs::set_permissions(&to, e.metadata().unwrap().permissions()).unwrap();
        } else {
            fs::copy(e.path(), &to).unwrap();
            filetime::set_file_mtime(&to, filetime::FileTime::from_unix_time(1_234_567_890, 0)).unwrap();
        }
    }
}
