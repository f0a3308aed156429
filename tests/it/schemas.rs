//! Every JSON document hoist writes, judged by the official JSON schemas
//! (`../shared/schemas/`: OCI image-spec, ModelPack config, CNAB bundle; `VERSIONS` says
//! which) with python's `jsonschema` (`hoist_testkit::schemas`): the outputs of every
//! producing command (build, artifact pack, model pack, model convert, index create, bundle
//! create (also `--bundle-file`), OCI
//! layout, oci-archive and docker-archive outputs) are walked, and each `oci-layout`,
//! `index.json`, manifest, index, image config, ModelPack config and CNAB bundle.json is
//! validated; so are the Docker-format documents hoist writes (a Docker schema 2 manifest it
//! makes for a docker-archive image or rewrites on recompression, and a docker-archive's
//! `manifest.json`), against schemas written from their specifications (`tests/schemas/docker`,
//! no upstream schema exists).

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testkit::schemas::Validator;
use serde_json::Value;

use crate::common::*;

fn run(what: &str, args: &[String]) -> String {
    assert_success(what, &hoist(args)).trim().to_string()
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

/// The documents of one OCI layout (a directory) and the schema each must pass.
fn documents(v: &Validator, layout: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out = vec![
        (v.schema("image-spec/image-layout-schema.json"), layout.join("oci-layout")),
        (v.schema("image-spec/image-index-schema.json"), layout.join("index.json")),
    ];
    let blob = |d: &str| layout.join("blobs").join(d.replacen(':', "/", 1));
    for e in walkdir::WalkDir::new(layout.join("blobs")).min_depth(2).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(doc) = serde_json::from_slice::<Value>(&std::fs::read(e.path()).unwrap()) else { continue };
        let media_type = doc.get("mediaType").and_then(Value::as_str).unwrap_or_default();
        match media_type {
            "application/vnd.oci.image.manifest.v1+json" => {
                out.push((v.schema("image-spec/image-manifest-schema.json"), e.path().to_path_buf()));
                let config_type = doc["config"]["mediaType"].as_str().unwrap_or_default();
                let config = blob(doc["config"]["digest"].as_str().unwrap_or_default());
                let schema = match config_type {
                    "application/vnd.oci.image.config.v1+json" => Some("image-spec/config-schema.json"),
                    "application/vnd.cncf.model.config.v1+json" => Some("model-spec/config-schema.json"),
                    "application/vnd.cnab.config.v1+json" => Some("cnab-spec/bundle.schema.json"),
                    _ => None,
                };
                if let (Some(schema), true) = (schema, config.exists()) {
                    out.push((v.schema(schema), config));
                }
            }
            "application/vnd.oci.image.index.v1+json" => {
                out.push((v.schema("image-spec/image-index-schema.json"), e.path().to_path_buf()))
            }
            // Docker schema 2 (hoist makes one for a docker-archive image without manifest
            // bytes, and rewrites one when it recompresses its layers); a Docker image config
            // is an OCI image config too.
            "application/vnd.docker.distribution.manifest.v2+json" => {
                out.push((v.schema("docker/manifest-v2-schema2.json"), e.path().to_path_buf()));
                let config = blob(doc["config"]["digest"].as_str().unwrap_or_default());
                if config.exists() {
                    out.push((v.schema("image-spec/config-schema.json"), config));
                }
            }
            "application/vnd.docker.distribution.manifest.list.v2+json" => {
                out.push((v.schema("docker/manifest-list.json"), e.path().to_path_buf()))
            }
            _ => {}
        }
    }
    // A docker-archive's `manifest.json` (docker save's format).
    if layout.join("manifest.json").exists() {
        out.push((v.schema("docker/archive-manifest.json"), layout.join("manifest.json")));
    }
    out
}

/// A docker-archive as `docker save` wrote them before OCI layouts (no manifest bytes, no
/// index.json: `manifest.json`, the config and each layer as `<id>/layer.tar`) of the image
/// `tag` of `layout`.
fn legacy_docker_archive(layout: &Path, tag: &str, file: &Path) {
    let json = |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob = |d: &str| layout.join("blobs").join(d.replacen(':', "/", 1));
    let index = json(layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tagged manifest");
    let m = json(blob(entry["digest"].as_str().unwrap()));
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).unwrap();
    };
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    add(&config_name, &std::fs::read(blob(config_digest)).unwrap());
    let mut layers = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let name = format!("{}/layer.tar", d.trim_start_matches("sha256:"));
        add(&name, &std::fs::read(blob(d)).unwrap());
        layers.push(name);
    }
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["me/legacy:v1"], "Layers": layers}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.finish().unwrap();
}

/// Unpack a tar (oci-archive, docker-archive) into a directory next to it.
fn untar(file: &Path) -> PathBuf {
    let dir = file.with_extension("unpacked");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("tar").arg("-xf").arg(file).arg("-C").arg(&dir).output().unwrap();
    assert_success("tar -xf", &out);
    dir
}

#[test]
fn every_document_hoist_writes_passes_the_official_schemas() {
    let v = match Validator::new() {
        Ok(v) => v,
        Err(why) => hoist_testkit::skip!("{why}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = s(t.join("store"));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut layouts: Vec<PathBuf> = Vec::new();

    // build: a layout, an oci-archive, a docker-archive, a named OCI directory.
    let (built, oa, da, named) = (t.join("built"), t.join("built.tar"), t.join("built-docker.tar"), t.join("named"));
    run(
        "hoist build",
        &[
            "build".into(),
            "--store".into(),
            store.clone(),
            "-f".into(),
            s(examples.join("hoist.toml")),
            "--output".into(),
            format!("oci:{}:v1", built.display()),
            "--output".into(),
            format!("type=oci,dest={}", oa.display()),
            "--output".into(),
            format!("type=docker,dest={},name=me/app:v1", da.display()),
            "--output".into(),
            format!("type=oci,dest={},tar=false,name=me/app:v1", named.display()),
        ],
    );
    layouts.extend([built.clone(), untar(&oa), untar(&da), named]);
    // Single-platform images for index create.
    for arch in ["amd64", "arm64"] {
        let dir = t.join(format!("img-{arch}"));
        run(
            "hoist build --platform",
            &[
                "build".into(),
                "--store".into(),
                store.clone(),
                "--platform".into(),
                format!("linux/{arch}"),
                "-f".into(),
                s(examples.join("hoist.toml")),
                "--output".into(),
                format!("oci:{}:v1", dir.display()),
            ],
        );
    }

    // artifact pack.
    std::fs::write(t.join("notes.txt"), "notes\n").unwrap();
    let art = t.join("artifact");
    run(
        "hoist artifact pack",
        &[
            "artifact".into(),
            "pack".into(),
            "--store".into(),
            store.clone(),
            "--artifact-type".into(),
            "application/vnd.example.notes".into(),
            format!("{}:text/plain", t.join("notes.txt").display()),
            "--output".into(),
            format!("oci:{}:v1", art.display()),
        ],
    );
    layouts.push(art);

    // model pack.
    let model = t.join("model-src");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("model.safetensors"), vec![7u8; 4096]).unwrap();
    std::fs::write(model.join("config.json"), "{\"hidden\": 8}\n").unwrap();
    std::fs::write(model.join("README.md"), "# tiny\n").unwrap();
    let packed = t.join("model");
    run(
        "hoist model pack",
        &[
            "model".into(),
            "pack".into(),
            "--store".into(),
            store.clone(),
            "--name".into(),
            "tiny".into(),
            s(&model),
            "--output".into(),
            format!("oci:{}:v1", packed.display()),
        ],
    );
    layouts.push(packed.clone());
    // model convert: to a ModelKit (its manifest is judged) and back to a ModelPack (its config too).
    let (kit, back) = (t.join("model-kit"), t.join("model-back"));
    for (from, to, format) in [(&packed, &kit, "modelkit"), (&kit, &back, "modelpack")] {
        run(
            "hoist model convert",
            &[
                "model".into(),
                "convert".into(),
                format!("oci:{}:v1", from.display()),
                format!("oci:{}:v1", to.display()),
                "--to".into(),
                format.into(),
            ],
        );
    }
    layouts.extend([kit, back]);

    // index create.
    let index = t.join("index");
    run(
        "hoist index create",
        &[
            "index".into(),
            "create".into(),
            format!("oci:{}:v1", t.join("img-amd64").display()),
            format!("oci:{}:v1", t.join("img-arm64").display()),
            "--annotation".into(),
            "index:org.opencontainers.image.description=both".into(),
            "--tag".into(),
            format!("oci:{}:v1", index.display()),
        ],
    );
    layouts.push(index);

    // bundle create.
    let bundle = t.join("bundle");
    run(
        "hoist bundle create",
        &[
            "bundle".into(),
            "create".into(),
            "--name".into(),
            "hello".into(),
            "--version".into(),
            "0.1.0".into(),
            "--invocation".into(),
            format!("oci:{}:v1", t.join("img-amd64").display()),
            "--component".into(),
            format!("web=oci:{}:v1", t.join("img-arm64").display()),
            "--keyword".into(),
            "demo".into(),
            "--maintainer".into(),
            "Jane Doe <jane@example.com> (https://example.com)".into(),
            "--tag".into(),
            format!("oci:{}:v1", bundle.display()),
        ],
    );
    layouts.push(bundle);

    // bundle create --bundle-file: the cnab-spec example bundle.json, kept whole.
    let mut whole: Value = serde_json::from_slice(
        &std::fs::read(v.schema("fixtures/cnab-spec-101.01-bundle.json")).expect("cnab-spec example bundle.json"),
    )
    .unwrap();
    whole["invocationImages"] = serde_json::json!([{"image": format!("oci:{}:v1", t.join("img-amd64").display())}]);
    whole["images"] = serde_json::json!({"my-microservice": {
        "image": format!("oci:{}:v1", t.join("img-arm64").display()), "description": "my microservice"}});
    let whole_file = t.join("bundle.json");
    std::fs::write(&whole_file, serde_json::to_vec(&whole).unwrap()).unwrap();
    let bundle_file = t.join("bundle-file");
    run(
        "hoist bundle create --bundle-file",
        &[
            "bundle".into(),
            "create".into(),
            "--bundle-file".into(),
            s(&whole_file),
            "--tag".into(),
            format!("oci:{}:v1", bundle_file.display()),
        ],
    );
    layouts.push(bundle_file);

    // Docker-format documents: a legacy docker-archive (no manifest bytes) copied to a
    // docker-archive gets a Docker schema 2 manifest made by hoist; decompressing its layers
    // into a layout rewrites that manifest (Docker tar layers), still Docker schema 2.
    let legacy = t.join("legacy-docker.tar");
    legacy_docker_archive(&t.join("img-amd64"), "v1", &legacy);
    let docker_out = t.join("from-legacy.tar");
    run(
        "hoist copy docker-archive -> docker-archive",
        &[
            "copy".into(),
            format!("docker-archive:{}", legacy.display()),
            format!("docker-archive:{}:me/app:v1", docker_out.display()),
        ],
    );
    let docker_dir = untar(&docker_out);
    let recompressed = t.join("docker-recompressed");
    run(
        "hoist copy --dest-compress none of a Docker schema 2 image",
        &[
            "copy".into(),
            "--dest-compress".into(),
            "none".into(),
            format!("docker-archive:{}", docker_out.display()),
            format!("oci:{}:v1", recompressed.display()),
        ],
    );
    layouts.extend([docker_dir, recompressed.clone()]);
    let rewritten = std::fs::read_to_string(recompressed.join("index.json")).unwrap();
    assert!(rewritten.contains("application/vnd.docker.distribution.manifest.v2+json"), "{rewritten}");

    let mut pairs = Vec::new();
    for l in &layouts {
        pairs.extend(documents(&v, l));
    }
    // Every kind of document was seen.
    for kind in [
        "image-layout-schema",
        "image-index-schema",
        "image-manifest-schema",
        "image-spec/config-schema",
        "model-spec/config-schema",
        "bundle.schema",
        "docker/manifest-v2-schema2",
        "docker/archive-manifest",
    ] {
        assert!(pairs.iter().any(|(s, _)| s.to_string_lossy().contains(kind)), "no document judged by {kind}");
    }
    let bundles = pairs.iter().filter(|(s, _)| s.ends_with("cnab-spec/bundle.schema.json")).count();
    assert!(bundles >= 2, "bundle create and bundle create --bundle-file each wrote a bundle.json ({bundles} seen)");
    let failures = v.validate(&pairs);
    assert!(
        failures.is_empty(),
        "{} of {} documents fail their schema:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n")
    );
}
