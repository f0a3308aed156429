//! Registry operations against the real distribution (2.8.2, deletion enabled unless the
//! test says otherwise): `tag` moves no blob, `untag` keeps the manifest and its other tags
//! (distribution has no tag deletion, so regclient's method runs), `delete` refuses while
//! other tags point at the manifest and names them, a registry with deletion disabled is
//! reported as such, and `catalog` lists and filters repositories. skopeo judges what the
//! registry holds afterwards.

use crate::common::*;
use crate::support::*;

/// Tags of `repo` on `reg`, as skopeo lists them (sorted).
pub fn skopeo_tags(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let mut args = vec!["list-tags".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{}/{repo}", reg.host()));
    let out = skopeo(&args);
    let text = assert_success("skopeo list-tags", &out);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut tags: Vec<String> =
        v["Tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    tags.sort();
    tags
}

/// Push the sample layout's two-platform index to `host/repo:tag`; its digest.
fn push_sample(reg: &TestRegistry, repo_tag: &str) -> String {
    let src = format!("oci:{}:multi", sample_layout_dir().display());
    ok("hoist copy", hoist(["-q", "copy", &src, &format!("{}/{repo_tag}", reg.host())]));
    registry_manifest_digest(reg, repo_tag)
}

#[test]
fn tag_then_untag_keeps_the_manifest_and_its_other_tags() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let digest = push_sample(&reg, "ops/app:v1");
    let blobs_before = reg.count("PUT", "/blobs/uploads/");
    ok("hoist tag", hoist(["-q", "tag", &format!("{}/ops/app:v1", reg.host()), "v2", "v3"]));
    assert_eq!(reg.count("PUT", "/blobs/uploads/"), blobs_before, "tag moved a blob");
    assert_eq!(skopeo_tags(&reg, "ops/app"), ["v1", "v2", "v3"]);
    for t in ["v2", "v3"] {
        assert_eq!(registry_manifest_digest(&reg, &format!("ops/app:{t}")), digest);
    }
    let out = ok("hoist untag", hoist(["-q", "--format", "json", "untag", &format!("{}/ops/app:v2", reg.host())]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // distribution 2.8.2 has no tag deletion (DELETE by tag: 400 DIGEST_INVALID)
    assert_eq!(v["method"], "tempManifest", "{out}");
    assert_eq!(skopeo_tags(&reg, "ops/app"), ["v1", "v3"]);
    assert_eq!(registry_manifest_digest(&reg, "ops/app:v1"), digest);
    assert_eq!(registry_manifest_digest(&reg, "ops/app:v3"), digest);
    // the manifest itself is still there by digest
    skopeo_raw(&reg, &format!("{}/ops/app@{digest}", reg.host()));
    // the throwaway manifest went: a delete of it was logged, and no tag names it
    assert_eq!(reg.count("DELETE", "/manifests/sha256:"), 2, "probe + throwaway manifest");
    // untag of a tag that is not there: not found, exit 3
    let out = hoist(["-q", "untag", &format!("{}/ops/app:v2", reg.host())]);
    assert_eq!(out.status.code(), Some(3), "{:?}", output_text(&out));
}

#[test]
fn delete_refuses_while_other_tags_point_at_the_manifest() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let digest = push_sample(&reg, "ops/del:v1");
    ok("hoist tag", hoist(["-q", "tag", &format!("{}/ops/del:v1", reg.host()), "v2"]));
    // by tag: v2 also points at it
    let out = hoist(["-q", "delete", &format!("{}/ops/del:v1", reg.host())]);
    let (_, err) = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("v2") && err.contains("refused"), "{err}");
    // by digest: both tags point at it
    let by_digest = format!("{}/ops/del@{digest}", reg.host());
    let out = hoist(["-q", "delete", &by_digest]);
    let (_, err) = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("v1") && err.contains("v2"), "{err}");
    assert_eq!(skopeo_tags(&reg, "ops/del"), ["v1", "v2"], "a refused delete changed nothing");
    // --force deletes it with its tags
    let out = ok("hoist delete --force", hoist(["-q", "--format", "json", "delete", "--force", &by_digest]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(skopeo_tags(&reg, "ops/del"), Vec::<String>::new());
    // a manifest with one tag is deleted without --force
    let d2 = push_sample(&reg, "ops/del:solo");
    assert_eq!(ok("hoist delete", hoist(["-q", "delete", &format!("{}/ops/del:solo", reg.host())])), d2);
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{}/ops/del@{d2}", reg.host()));
    assert!(!skopeo(&args).status.success(), "the manifest is still there after delete");
}

#[test]
fn deletion_disabled_is_reported_and_untag_writes_nothing() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::start(RegistryOpts::no_delete());
    let digest = push_sample(&reg, "ops/nd:v1");
    ok("hoist tag", hoist(["-q", "tag", &format!("{}/ops/nd:v1", reg.host()), "v2"]));
    let manifests_before = reg.count("PUT", "/manifests/");
    let out = hoist(["-q", "untag", &format!("{}/ops/nd:v2", reg.host())]);
    let (_, err) = output_text(&out);
    assert!(!out.status.success());
    assert!(err.contains("deleting manifests is disabled") && err.contains("UNSUPPORTED"), "{err}");
    assert_eq!(reg.count("PUT", "/manifests/"), manifests_before, "untag wrote before finding deletion disabled");
    assert_eq!(registry_manifest_digest(&reg, "ops/nd:v2"), digest);
    let out = hoist(["-q", "delete", "--force", &format!("{}/ops/nd:v1", reg.host())]);
    let (_, err) = output_text(&out);
    assert!(!out.status.success());
    assert!(err.contains("deleting manifests is disabled") && err.contains("405"), "{err}");
    assert_eq!(skopeo_tags(&reg, "ops/nd"), ["v1", "v2"]);
}

#[test]
fn catalog_lists_and_filters_repositories() {
    // pages of 2 repositories (and n=1000 refused), so that three take two pages
    let reg = TestRegistry::start(RegistryOpts { catalog_max_entries: Some(2), ..RegistryOpts::plain() });
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("l");
    image_layout(&layout, "v1", &[10], 1);
    for repo in ["team/a", "team/b", "other/c"] {
        ok("push", hoist(["-q", "push", &format!("{}:v1", layout.display()), &format!("{}/{repo}:v1", reg.host())]));
    }
    let all = ok("hoist catalog", hoist(["catalog", &reg.host()]));
    assert_eq!(all.lines().collect::<Vec<_>>(), ["other/c", "team/a", "team/b"]);
    let out = ok("hoist catalog --filter", hoist(["--format", "json", "catalog", "--filter", "^team/", &reg.host()]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["team/a", "team/b"]));
    let out = hoist(["catalog", "--filter", "(", &reg.host()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(reg.count("GET", "/v2/_catalog?last=") >= 2, "pagination was not followed");
}

/// Whether distribution's storage under `reg` holds the blob `digest`.
fn stored_blob(reg: &TestRegistry, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    reg.data_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2])).exists()
}

/// Whether skopeo can read the manifest `repo@digest` on `reg`.
fn manifest_exists(reg: &TestRegistry, repo: &str, digest: &str) -> bool {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{}/{repo}@{digest}", reg.host()));
    skopeo(&args).status.success()
}

#[test]
fn retention_keeps_exactly_the_policy_and_gc_removes_only_unreferenced_blobs() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let h = reg.host();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("l");
    std::fs::create_dir_all(&layout).unwrap();
    // 47 version tags 1.0.0 .. 1.46.0, each a distinct image with its own layer
    let mut images = Vec::new();
    let mut layers = Vec::new();
    for i in 0..47u64 {
        let layer = random_bytes(512, 7000 + i);
        layers.push(digest_of(&layer));
        let (m, d) = write_image(&layout, &[&layer], &format!("ret-{i}"));
        images.push((format!("1.{i}.0"), m, d));
    }
    let refs: Vec<(&str, &[u8], &str)> =
        images.iter().map(|(t, m, d)| (t.as_str(), m.as_slice(), d.as_str())).collect();
    write_index(&layout, &refs);
    ok("push", hoist(["-q", "push", layout.to_str().unwrap(), &format!("{h}/ret/app")]));
    // `stable` names the oldest image; `latest` a multi-platform index, one of whose images is
    // also tagged 1.1.5 (covered by the policy, referenced by the kept index)
    ok("tag stable", hoist(["-q", "tag", &format!("{h}/ret/app:1.0.0"), "stable"]));
    let sample = format!("oci:{}:multi", sample_layout_dir().display());
    ok("copy multi", hoist(["-q", "copy", &sample, &format!("{h}/ret/app:latest")]));
    let index: serde_json::Value = serde_json::from_slice(&skopeo_raw(&reg, &format!("{h}/ret/app:latest"))).unwrap();
    let child = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    ok("tag child", hoist(["-q", "tag", &format!("{h}/ret/app@{child}"), "1.1.5"]));
    // a referrer of 1.5.0 (which the policy removes), reachable only through the fallback tag
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "signature of 1.5.0").unwrap();
    let note_arg = format!("{}:application/vnd.example.sig", note.display());
    let store = tmp.path().join("store");
    let sig = ok(
        "artifact push",
        hoist_in(
            &store,
            &[
                "artifact",
                "push",
                &format!("{h}/ret/app:sig"),
                &note_arg,
                "--artifact-type",
                "application/vnd.example.sig",
                "--subject",
                &format!("{h}/ret/app:1.5.0"),
            ],
        ),
    );
    let sig = sig.lines().last().unwrap().trim().to_string();
    ok("untag sig", hoist(["-q", "untag", &format!("{h}/ret/app:sig")]));
    let all_tags = skopeo_tags(&reg, "ret/app");
    assert_eq!(all_tags.len(), 51, "{all_tags:?}"); // 47 + stable + latest + 1.1.5 + the fallback tag
    let policy = ["--keep-last", "10", "--match", r"^1\."];
    // dry run: the plan, and nothing changes
    let mut args = vec!["--format", "json", "retention", "--dry-run"];
    args.extend(policy);
    let repo_arg = format!("{h}/ret/app");
    args.push(&repo_arg);
    let out = ok("retention --dry-run", hoist(&args));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let actions = v["plan"]["actions"].as_array().unwrap();
    let count = |a: &str| actions.iter().filter(|x| x["action"] == a).count();
    assert_eq!(count("keep"), 12, "{out}"); // 1.37.0 .. 1.46.0, stable, latest
    assert_eq!(count("untag"), 2, "{out}"); // 1.0.0 (stable's) and 1.1.5 (latest's child)
    assert_eq!(reg.count("DELETE", "/manifests/"), 3, "a dry run deleted something"); // the untag of sig above
    assert_eq!(skopeo_tags(&reg, "ret/app"), all_tags);
    // apply
    let mut args = vec!["-q", "retention"];
    args.extend(policy);
    args.push(&repo_arg);
    ok("retention", hoist(&args));
    let mut want: Vec<String> = (37..47).map(|i| format!("1.{i}.0")).collect();
    want.extend(["latest".to_string(), "stable".to_string()]);
    want.sort();
    assert_eq!(skopeo_tags(&reg, "ret/app"), want);
    assert!(manifest_exists(&reg, "ret/app", &images[0].2), "stable's manifest was deleted");
    assert!(manifest_exists(&reg, "ret/app", &child), "the kept index's child was deleted");
    assert!(!manifest_exists(&reg, "ret/app", &images[5].2), "1.5.0 is still there");
    assert!(!manifest_exists(&reg, "ret/app", &sig), "the referrer of a deleted image is still there");
    // garbage-collect: blobs of deleted images go, every kept image stays whole
    let gc = reg.garbage_collect(false);
    for (i, layer) in layers.iter().enumerate() {
        let keep = i == 0 || i >= 37;
        assert_eq!(stored_blob(&reg, layer), keep, "layer of 1.{i}.0 after gc\n{gc}");
    }
    for t in ["stable", "latest", "1.40.0"] {
        let dst = tmp.path().join(format!("pull-{t}"));
        let mut a = vec!["copy".to_string(), "--all".to_string()];
        a.extend(reg.skopeo_args("src"));
        a.push(format!("docker://{h}/ret/app:{t}"));
        a.push(format!("oci:{}:x", dst.display()));
        assert_success(&format!("skopeo copy of {t} after gc"), &skopeo(&a));
    }
}

#[test]
fn retention_older_than_removes_only_images_created_before_the_cutoff() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let h = reg.host();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("l");
    std::fs::create_dir_all(&layout).unwrap();
    let images: Vec<(String, Vec<u8>, String)> = ["base", "nodate"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (m, d) = write_image(&layout, &[&random_bytes(256, 9100 + i as u64)], &format!("age-{t}"));
            (t.to_string(), m, d)
        })
        .collect();
    let refs: Vec<(&str, &[u8], &str)> =
        images.iter().map(|(t, m, d)| (t.as_str(), m.as_slice(), d.as_str())).collect();
    write_index(&layout, &refs);
    ok("push", hoist(["-q", "push", layout.to_str().unwrap(), &format!("{h}/age/app")]));
    // the same image re-dated: two old ones, one from an hour ago, one now; `nodate` has no
    // created time at all (its age is unknown, so no age policy removes it)
    let date =
        std::process::Command::new("date").args(["-u", "-d", "-1 hour", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    let recent = assert_success("date", &date).trim().to_string();
    for (tag, created) in
        [("y2001", "2001-01-01T00:00:00Z"), ("y1998", "1998-06-01T12:00:00Z"), ("hour", &recent), ("now", "now")]
    {
        let (src, dst) = (format!("{h}/age/app:base"), format!("{h}/age/app:{tag}"));
        ok("mutate --created", hoist(["-q", "mutate", &src, &dst, "--created", created]));
    }
    ok("untag base", hoist(["-q", "untag", &format!("{h}/age/app:base")]));
    let before = skopeo_tags(&reg, "age/app");
    assert_eq!(before, ["hour", "nodate", "now", "y1998", "y2001"]);
    let repo = format!("{h}/age/app");
    // dry run: the plan names exactly the two old tags, and nothing changes
    let out =
        ok("retention --dry-run", hoist(["--format", "json", "retention", "--dry-run", "--older-than", "30d", &repo]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut gone: Vec<&str> = v["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] != "keep")
        .flat_map(|a| match a["tags"].as_array() {
            Some(tags) => tags.iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>(),
            None => vec![a["tag"].as_str().unwrap()],
        })
        .collect();
    gone.sort();
    assert_eq!(gone, ["y1998", "y2001"], "{out}");
    assert_eq!(skopeo_tags(&reg, "age/app"), before);
    ok("retention --older-than", hoist(["-q", "retention", "--older-than", "30d", &repo]));
    assert_eq!(skopeo_tags(&reg, "age/app"), ["hour", "nodate", "now"]);
    // a tighter cutoff takes the hour-old image too, and still not the undated one
    ok("retention --older-than 10m", hoist(["-q", "retention", "--older-than", "10m", &repo]));
    assert_eq!(skopeo_tags(&reg, "age/app"), ["nodate", "now"]);
    assert!(manifest_exists(&reg, "age/app", &images[1].2), "the undated image was deleted");
}
