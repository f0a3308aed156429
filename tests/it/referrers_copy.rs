//! Referrers travel with what they refer to, on request: `copy --referrers` copies every
//! referrer of each copied manifest, recursively, found through the referrers API (the fault
//! proxy's emulation) or the tag fallback (plain distribution), and the destination lists
//! them; `--digest-tags` copies cosign's `sha256-<hex>.sig` style tags. Nothing by default.

use std::path::Path;

use hoist_testkit::proxy::FaultProxy;

use crate::common::*;
use crate::support::*;

const SIG: &str = "application/vnd.example.sig";
const SBOM: &str = "application/vnd.example.sbom+json";

fn push_artifact(tmp: &Path, dest: &str, ty: &str, content: &str, subject: Option<&str>) -> String {
    let file = tmp.join(format!("{}.txt", content.replace(['/', ' ', ':'], "_")));
    std::fs::write(&file, content).unwrap();
    let file_arg = format!("{}:{ty}", file.display());
    let mut args = vec!["artifact", "push", dest, &file_arg, "--artifact-type", ty];
    if let Some(s) = subject {
        args.extend(["--subject", s]);
    }
    ok("artifact push", hoist_in(&tmp.join("store"), &args))
}

/// Digests of `hoist referrers REF` (text output: one digest first on each line).
fn referrers_of(reference: &str) -> Vec<String> {
    let out = ok(&format!("hoist referrers {reference}"), hoist(["--format", "json", "referrers", reference]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let list = v.get("manifests").or_else(|| v.get("referrers")).cloned().unwrap_or(v);
    list.as_array()
        .unwrap_or_else(|| panic!("no list in {out}"))
        .iter()
        .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn tags_of(reference: &str) -> Vec<String> {
    ok("hoist tags", hoist(["tags", reference])).lines().map(str::to_string).collect()
}

#[test]
fn referrers_and_digest_tags_are_copied_on_request() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    proxy.emulate_referrers_api(true);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let layout = t.join("layout");
    let image = image_layout(&layout, "v1", &[1000, 2000], 7);
    // Source repositories: one through the API, one with the tag fallback.
    for (host, repo) in [(proxy.host(), "api/src"), (reg.host(), "fb/src")] {
        let src = format!("{host}/{repo}");
        ok("push", hoist(["-q", "push", &format!("{}:v1", layout.display()), &format!("{src}:v1")]));
        let sig = push_artifact(t, &format!("{src}:sig"), SIG, &format!("sig {repo}"), Some(&format!("{src}:v1")));
        let sbom = push_artifact(t, &format!("{src}:sbom"), SBOM, &format!("sbom {repo}"), Some(&format!("{src}:v1")));
        // A referrer of a referrer.
        let sig_of_sbom = push_artifact(
            t,
            &format!("{src}:sig2"),
            SIG,
            &format!("sig of sbom {repo}"),
            Some(&format!("{src}@{sbom}")),
        );
        // cosign's digest tag (no subject).
        let cosign_tag = format!("{}.sig", image.replacen(':', "-", 1));
        let cosign = push_artifact(t, &format!("{src}:{cosign_tag}"), SIG, &format!("cosign {repo}"), None);

        // Default: the image only.
        let plain = format!("{}/{repo}-plain", reg.host());
        ok("copy", hoist(["copy", &format!("{src}:v1"), &format!("{plain}:v1")]));
        assert!(referrers_of(&format!("{plain}@{image}")).is_empty(), "{repo}: nothing extra by default");
        assert_eq!(tags_of(&plain), ["v1"], "{repo}");

        // --referrers --digest-tags to a registry (tag fallback there) and into a layout.
        let dst = format!("{}/{repo}-full", reg.host());
        let out = hoist(["copy", "--referrers", "--digest-tags", &format!("{src}:v1"), &format!("{dst}:v1")]);
        ok("copy --referrers --digest-tags", out);
        let mut got = referrers_of(&format!("{dst}@{image}"));
        got.sort();
        let mut want = vec![sig.clone(), sbom.clone()];
        want.sort();
        assert_eq!(got, want, "{repo}: referrers of the image at the destination");
        assert_eq!(
            referrers_of(&format!("{dst}@{sbom}")),
            std::slice::from_ref(&sig_of_sbom),
            "{repo}: referrer of a referrer"
        );
        assert!(tags_of(&dst).contains(&cosign_tag), "{repo}: {:?}", tags_of(&dst));
        let cosign_at_dst = ok("inspect", hoist(["--format", "json", "inspect", &format!("{dst}:{cosign_tag}")]));
        assert!(cosign_at_dst.contains(&cosign), "{cosign_at_dst}");

        let oci = t.join(format!("oci-{}", repo.replace('/', "-")));
        ok(
            "copy to layout",
            hoist(["copy", "--referrers", &format!("{src}:v1"), &format!("oci:{}:v1", oci.display())]),
        );
        let mut got = referrers_of(&format!("oci:{}:v1", oci.display()));
        got.sort();
        assert_eq!(got, want, "{repo}: referrers in the layout");
        // ... and on from the layout to a registry with the referrers API.
        let api_dst = format!("{}/{repo}-from-layout", proxy.host());
        ok(
            "copy from layout",
            hoist(["copy", "--referrers", &format!("oci:{}:v1", oci.display()), &format!("{api_dst}:v1")]),
        );
        let mut got = referrers_of(&format!("{api_dst}@{image}"));
        got.sort();
        assert_eq!(got, want, "{repo}: referrers through the API after layout -> registry");
        assert_eq!(referrers_of(&format!("{api_dst}@{sbom}")), [sig_of_sbom]);
    }
}
