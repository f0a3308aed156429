//! `hoist store ls|rm|prune`, and untagged results of `artifact pack` that do not pile up.

use std::path::Path;

use crate::cli_trust::text;
use crate::common::*;

fn pack(store: &Path, file: &Path, tag: Option<&str>) -> String {
    let mut args =
        vec!["-q".to_string(), "artifact".into(), "pack".into(), "--store".into(), store.display().to_string()];
    if let Some(t) = tag {
        args.extend(["--tag".to_string(), t.to_string()]);
    }
    args.push(file.display().to_string());
    let out = hoist(&args);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{se}");
    so.trim().to_string()
}

fn ls(store: &Path) -> Vec<serde_json::Value> {
    let out = hoist(["--format", "json", "store", "ls", "--store", store.to_str().unwrap()]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{se}");
    let v: serde_json::Value = serde_json::from_str(&so).unwrap();
    v["roots"].as_array().unwrap().clone()
}

#[test]
fn store_ls_rm_prune_and_old_untagged_results_go() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let files: Vec<_> = (0..3)
        .map(|i| {
            let f = t.path().join(format!("f{i}.txt"));
            std::fs::write(&f, format!("content {i}")).unwrap();
            f
        })
        .collect();
    let a = pack(&store, &files[0], None);
    let b = pack(&store, &files[1], None);
    let c = pack(&store, &files[2], Some("keep:v1"));
    let roots = ls(&store);
    assert_eq!(roots.len(), 3, "{roots:?}");
    let tagged: Vec<_> = roots.iter().filter(|r| r["tag"].is_string()).collect();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["digest"], c.as_str());
    assert!(roots.iter().all(|r| r["size"].as_u64().unwrap() > 0 && r["ageSeconds"].is_u64()), "{roots:?}");
    // Text listing: a header and one line per root.
    let out = hoist(["store", "ls", "--store", store.to_str().unwrap()]);
    assert_eq!(text(&out).0.lines().count(), 4, "{}", text(&out).0);

    // An untagged result older than a day is pruned by the next artifact command.
    let blob = store.join("blobs/sha256").join(a.trim_start_matches("sha256:"));
    let old = filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 3 * 86_400, 0);
    filetime::set_file_mtime(&blob, old).unwrap();
    let d = t.path().join("f3.txt");
    std::fs::write(&d, "content 3").unwrap();
    let fresh = pack(&store, &d, None);
    let digests: Vec<String> = ls(&store).iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect();
    assert!(!digests.contains(&a), "the old untagged result stayed: {digests:?}");
    assert!(digests.contains(&b) && digests.contains(&fresh) && digests.contains(&c), "{digests:?}");
    assert!(!blob.exists(), "its blobs were collected");

    // prune: untagged roots older than 0s go, tags stay.
    let out = hoist(["store", "prune", "--older-than", "0s", "--store", store.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let roots = ls(&store);
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert_eq!(roots[0]["tag"], "keep:v1");
    // rm: the tag, then gc; an unknown tag is not found (exit 3).
    let out = hoist(["store", "rm", "--store", store.to_str().unwrap(), "keep:v1"]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(ls(&store).is_empty());
    let blobs = std::fs::read_dir(store.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "gc removed every blob");
    let out = hoist(["store", "rm", "--store", store.to_str().unwrap(), "nope:v1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out).1);
    assert_eq!(hoist(["store", "prune", "--older-than", "soon"]).status.code(), Some(2));
}

#[test]
fn layout_gc_reports_the_size_of_stale_temp_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("l");
    copy_tree(&crate::cli_trust::sample_layout(), &dir);
    std::fs::create_dir_all(dir.join(".hoist/tmp")).unwrap();
    std::fs::write(dir.join(".hoist/tmp/partial-blob"), vec![7u8; 1000]).unwrap();
    let out = hoist(["--format", "json", "layout", "gc", dir.to_str().unwrap()]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{se}");
    let v: serde_json::Value = serde_json::from_str(so.trim()).unwrap();
    assert_eq!(v["tempFiles"], 1, "{v}");
    assert_eq!(v["tempBytes"], 1000, "{v}");
    assert!(se.contains("1 stale temp file(s), 1000 B"), "{se}");
    assert!(!dir.join(".hoist/tmp/partial-blob").exists());
}
