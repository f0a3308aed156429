//! Crash safety of layout writes: `hoist copy`/`hoist pull` killed with SIGKILL at random
//! moments must leave a layout that `hoist layout fsck` finds consistent (a tag never points
//! at a missing blob), and whose leftovers `hoist layout gc` removes. Also two writers at once.

#[allow(unused_imports)] // not every test file uses every re-export
use crate::common;
use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use support::*;

const MIB: usize = 1 << 20;

fn spawn_hoist(args: &[String]) -> std::process::Child {
    hoist_cmd().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn hoist")
}

/// fsck must be clean whenever the layout exists at all (a kill before `oci-layout` was
/// written leaves no layout).
#[track_caller]
fn assert_consistent(dst: &Path, what: &str) {
    if !dst.join("oci-layout").exists() {
        return;
    }
    let out = hoist(["layout", "fsck", dst.to_str().unwrap()]);
    let (so, se) = output_text(&out);
    assert!(out.status.success(), "{what}: fsck found problems\n{so}\n{se}\nfiles: {:?}", tree(dst));
}

fn gc_cleans(dst: &Path) {
    if !dst.join("oci-layout").exists() {
        return;
    }
    assert_success("gc", &hoist(["layout", "gc", dst.to_str().unwrap()]));
    let tmp = dst.join(".hoist/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "gc left temp files: {left:?}");
    assert_consistent(dst, "after gc");
}

#[test]
fn sigkill_during_layout_writes_leaves_a_consistent_layout() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    image_layout(src.path(), "v1", &[16 * MIB, 12 * MIB, 8 * MIB, 4 * MIB, 100_000], 21);
    let src_ref = format!("oci:{}:v1", src.path().display());
    assert_success(
        "seed registry",
        &hoist(["--insecure-registry", &reg.host(), "-q", "copy", &src_ref, &format!("{}/crash/img:v1", reg.host())]),
    );
    let work = tempfile::tempdir().unwrap();

    // How long a whole copy takes here, to spread the kills over it.
    let probe = work.path().join("probe");
    let t = Instant::now();
    assert_success("probe copy", &hoist(["-q", "copy", &src_ref, &format!("oci:{}:v1", probe.display())]));
    let copy_time = t.elapsed().max(Duration::from_millis(50));
    let t = Instant::now();
    let pulled = work.path().join("probe-pull");
    assert_success(
        "probe pull",
        &hoist([
            "--insecure-registry",
            &reg.host(),
            "-q",
            "pull",
            &format!("{}/crash/img:v1", reg.host()),
            &format!("{}:v1", pulled.display()),
        ]),
    );
    let pull_time = t.elapsed().max(Duration::from_millis(50));

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    // Run until at least 20 runs were killed mid-way (a run that finished before the kill
    // proves nothing about crashes), bounded so a very fast machine still ends.
    let want_killed = 20;
    let max_runs = 120;
    let mut killed = 0;
    let mut runs = 0;
    for i in 0..max_runs {
        if killed >= want_killed && runs >= 24 {
            break;
        }
        runs += 1;
        // groups of 4 runs write into the same layout, so later runs start from a crashed one
        let dst = work.path().join(format!("dst{}", i / 4));
        let from_registry = i % 3 == 2;
        let (args, budget) = if from_registry {
            let a = vec![
                "--insecure-registry".to_string(),
                reg.host(),
                "-q".into(),
                "pull".into(),
                format!("{}/crash/img:v1", reg.host()),
                format!("{}:t{i}", dst.display()),
            ];
            (a, pull_time)
        } else {
            (vec!["-q".to_string(), "copy".into(), src_ref.clone(), format!("oci:{}:t{i}", dst.display())], copy_time)
        };
        let delay = budget.mul_f64(rng.gen_range(0.0..0.8));
        let mut child = spawn_hoist(&args);
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let status = child.wait().unwrap();
        assert_consistent(&dst, &format!("run {i} (killed after {delay:?}, exit {status})"));
        if i % 4 == 3 {
            // a finished copy into the crashed layout works, then gc cleans up
            assert_success(
                "copy after crashes",
                &hoist(["-q", "copy", &src_ref, &format!("oci:{}:done", dst.display())]),
            );
            gc_cleans(&dst);
        }
    }
    eprintln!("{runs} runs, {killed} killed mid-way (copy ~{copy_time:?}, pull ~{pull_time:?})");
    assert!(killed >= want_killed, "only {killed} of {runs} runs were killed mid-way; the test proves little");
}

#[test]
fn two_writers_into_one_layout_both_succeed() {
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a");
    let b = work.path().join("b");
    image_layout(&a, "v1", &[6 * MIB, 3 * MIB, 50_000], 31);
    image_layout(&b, "v1", &[5 * MIB, 4 * MIB, 60_000], 32);
    for round in 0..3 {
        let dst = work.path().join(format!("dst{round}"));
        let mk = |src: &Path, tag: &str| {
            vec![
                "-q".to_string(),
                "copy".into(),
                format!("oci:{}:v1", src.display()),
                format!("oci:{}:{tag}", dst.display()),
            ]
        };
        let mut c1 = hoist_cmd().args(mk(&a, "a")).stderr(Stdio::piped()).spawn().unwrap();
        let mut c2 = hoist_cmd().args(mk(&b, "b")).stderr(Stdio::piped()).spawn().unwrap();
        let s1 = c1.wait().unwrap();
        let s2 = c2.wait().unwrap();
        assert!(s1.success() && s2.success(), "round {round}: {s1} {s2}");
        let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
        let tags: Vec<String> = idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string))
            .collect();
        assert!(tags.contains(&"a".to_string()) && tags.contains(&"b".to_string()), "round {round}: tags {tags:?}");
        assert_consistent(&dst, "two writers");
    }
}
