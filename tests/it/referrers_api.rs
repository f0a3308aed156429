//! hoist against a registry that has the OCI referrers API: distribution 2.8.2 behind the
//! fault proxy in its referrers API mode (`ProxyState::emulate_referrers_api`), which answers
//! `GET /v2/<repo>/referrers/<digest>` itself and adds `OCI-Subject` to manifest PUTs with a
//! `subject`. Each test also runs hoist straight at the registry (no API) as the control that
//! shows the assertion can fail.
//!
//! `hoist copy` is not tested here: the graph copy does not look for referrers of what it copies.

use crate::common;
use crate::support;

use std::path::Path;

use common::*;
use hoist_testkit::proxy::FaultProxy;
use serde_json::Value;
use support::*;

const SIG: &str = "application/vnd.example.sig";
const SBOM: &str = "application/vnd.example.sbom+json";

/// A one-image layout (made from `seed`) pushed to `host/repo_tag`; returns the manifest digest.
fn push_image(tmp: &Path, host: &str, repo_tag: &str, seed: u64) -> String {
    let layout = tmp.join(format!("layout-{seed}"));
    let digest = image_layout(&layout, "v1", &[1000, 2000], seed);
    let out = hoist(["-q", "push", &format!("{}:v1", layout.display()), &format!("{host}/{repo_tag}")]);
    assert_success("push image", &out);
    digest
}

/// `hoist artifact push HOST/REPO_TAG FILE:TYPE --artifact-type TYPE --subject SUBJECT [-a k=v]`;
/// returns the artifact's digest. `content` makes artifacts of the same type differ.
fn push_artifact(tmp: &Path, dest: &str, ty: &str, content: &str, subject: &str, annotation: Option<&str>) -> String {
    let file = tmp.join(format!("{}.txt", content.replace(['/', ' '], "_")));
    std::fs::write(&file, content).unwrap();
    let file_arg = format!("{}:{ty}", file.display());
    let mut args = vec!["artifact", "push", dest, &file_arg, "--artifact-type", ty, "--subject", subject];
    if let Some(a) = annotation {
        args.extend(["--annotation", a]);
    }
    ok("artifact push", hoist_in(&tmp.join("store"), &args))
}

fn json_of(r: reqwest::blocking::Response) -> Value {
    serde_json::from_slice(&r.bytes().unwrap()).unwrap()
}

fn fallback_tag(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// Manifest PUTs the registry logged under `/v2/<repo>/manifests/<tag>`.
fn manifest_puts(reg: &TestRegistry, repo: &str, tag: &str) -> usize {
    let path = format!("/v2/{repo}/manifests/{tag}");
    reg.requests().iter().filter(|r| r.method == "PUT" && r.path == path).count()
}

/// With `OCI-Subject` on the PUT answer, an artifact push leaves the fallback tag alone and
/// does not even probe the referrers API; straight to the registry it creates the tag.
#[test]
fn oci_subject_header_skips_the_fallback_tag() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    proxy.emulate_referrers_api(true);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // control: no API, so hoist writes the fallback index
    let subject = push_image(t, &reg.host(), "direct/img:v1", 5);
    let tag = fallback_tag(&subject);
    let direct = format!("{}/direct/img", reg.host());
    push_artifact(t, &format!("{direct}:sig"), SIG, "direct sig", &format!("{direct}:v1"), None);
    assert_eq!(manifest_puts(&reg, "direct/img", &tag), 1, "control: the fallback tag was not written");

    // through the API registry
    assert_eq!(push_image(t, &reg.host(), "api/img:v1", 5), subject);
    let api = format!("{}/api/img", proxy.host());
    let sig = push_artifact(t, &format!("{api}:sig"), SIG, "api sig", &format!("{api}:v1"), None);
    assert_eq!(manifest_puts(&reg, "api/img", &tag), 0, "fallback tag written although the registry indexed it");
    assert_eq!(reg.count("GET", "/v2/api/img/manifests/sha256-"), 0, "fallback tag read");
    let ex = proxy.exchanges();
    assert!(
        ex.iter().any(|e| e.method == "PUT" && e.path == "/v2/api/img/manifests/sig" && e.status == Some(201)),
        "{ex:#?}"
    );
    // OCI-Subject alone told hoist: no probe of the API
    assert!(!ex.iter().any(|e| e.path.contains("/referrers/")), "{ex:#?}");
    // the artifact is on the registry with its subject (judged by skopeo)
    if hoist_testkit::optional!("skopeo") {
        let mut args = vec!["inspect".to_string(), "--raw".to_string()];
        args.extend(reg.skopeo_args(""));
        args.push(format!("docker://{}/api/img:sig", reg.host()));
        let raw = assert_success("skopeo inspect", &skopeo(&args));
        assert_eq!(digest_of(raw.as_bytes()), sig);
        let m: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["subject"]["digest"], Value::from(subject.clone()));
    }
    // and the emulated API indexed it
    let listed: Vec<Value> = proxy.referrers_of("api/img", &subject);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], Value::from(sig));
}

/// `hoist referrers` reads the API when the registry has one: the list is the API's (which
/// knows referrers the fallback index does not, and not the one only the fallback lists),
/// the filter goes to the registry, and `--format json` carries the descriptors.
#[test]
fn referrers_are_listed_from_the_api() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    proxy.emulate_referrers_api(true);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");

    let subject = push_image(t, &reg.host(), "r/img:v1", 5);
    let direct = format!("{}/r/img", reg.host());
    let api = format!("{}/r/img", proxy.host());
    // only in the fallback index: pushed straight to the registry
    let old = push_artifact(t, &format!("{direct}:old"), SBOM, "old sbom", &format!("{direct}:v1"), None);
    // only in the API: pushed through it, so no fallback update
    let sig = push_artifact(t, &format!("{api}:sig"), SIG, "sig", &format!("{api}:v1"), Some("org.example.signer=t"));
    let sbom = push_artifact(t, &format!("{api}:sbom"), SBOM, "new sbom", &format!("{api}:v1"), None);

    // control: straight to the registry, the fallback index lists only `old`
    let text = ok("referrers direct", hoist_in(&store, &["referrers", &format!("{direct}:v1")]));
    let listed: Vec<&str> = text.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(listed, [old.as_str()], "{text}");

    let fallback_reads = reg.count("GET", "/manifests/sha256-");
    let upstream_api = reg.count("GET", "/referrers/");
    proxy.state().reset();
    let out = ok("referrers json", hoist_in(&store, &["--format", "json", "referrers", &format!("{api}:v1")]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["subject"]["digest"], Value::from(subject.clone()));
    let m = v["manifests"].as_array().unwrap();
    let digests: Vec<&str> = m.iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, [sig.as_str(), sbom.as_str()], "{v}");
    assert_eq!(m[0]["artifactType"], SIG);
    assert_eq!(m[0]["annotations"]["org.example.signer"], "t");
    assert_eq!(m[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m[1]["artifactType"], SBOM);
    let ex = proxy.exchanges();
    let api_gets: Vec<_> = ex.iter().filter(|e| e.method == "GET" && e.path.contains("/referrers/")).collect();
    assert_eq!(api_gets.len(), 1, "{ex:#?}");
    assert_eq!(api_gets[0].path, format!("/v2/r/img/referrers/{subject}"));
    assert_eq!(api_gets[0].status, Some(200));
    assert_eq!(reg.count("GET", "/manifests/sha256-"), fallback_reads, "fallback index read despite the API");
    assert_eq!(reg.count("GET", "/referrers/"), upstream_api, "the proxy let a referrers request through");

    // --artifact-type: asked of the registry (which filters), listed as text
    proxy.state().reset();
    let text =
        ok("referrers filtered", hoist_in(&store, &["referrers", "--artifact-type", SBOM, &format!("{api}:v1")]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[..2], [sbom.as_str(), SBOM], "{text}");
    let ex = proxy.exchanges();
    let q = url::form_urlencoded::byte_serialize(SBOM.as_bytes()).collect::<String>();
    assert!(
        ex.iter().any(|e| e.path == format!("/v2/r/img/referrers/{subject}?artifactType={q}") && e.status == Some(200)),
        "filter not sent to the registry: {ex:#?}"
    );

    // no referrers: the API's empty list, no fallback read
    let lonely = push_image(t, &reg.host(), "r/img:lonely", 6);
    proxy.state().reset();
    let out = ok("referrers none", hoist_in(&store, &["--format", "json", "referrers", &format!("{api}:lonely")]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["manifests"], Value::Array(vec![]), "{v}");
    let ex = proxy.exchanges();
    assert!(ex.iter().any(|e| e.path == format!("/v2/r/img/referrers/{lonely}") && e.status == Some(200)), "{ex:#?}");
    assert!(!ex.iter().any(|e| e.path.contains("/manifests/sha256-")), "fallback read: {ex:#?}");
}

/// A registry that pages its referrers answer (`Link: <…>; rel="next"`): hoist follows the
/// links and lists every referrer, filtered pages included.
#[test]
fn paginated_referrers_answers_are_followed() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    proxy.emulate_referrers_api(true);
    proxy.paginate_referrers(1);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    push_image(t, &reg.host(), "p/img:v1", 7);
    let api = format!("{}/p/img", proxy.host());
    let subject = format!("{api}:v1");
    let mut want = vec![
        push_artifact(t, &format!("{api}:a"), SIG, "sig a", &subject, None),
        push_artifact(t, &format!("{api}:b"), SBOM, "sbom b", &subject, None),
        push_artifact(t, &format!("{api}:c"), SIG, "sig c", &subject, None),
    ];

    proxy.state().reset();
    let out = ok("referrers paged", hoist_in(&store, &["--format", "json", "referrers", &subject]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut got: Vec<String> =
        v["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every page listed: {v}");
    let pages = proxy.exchanges().iter().filter(|e| e.path.contains("/referrers/") && e.status == Some(200)).count();
    assert_eq!(pages, 3, "one GET per page of one");

    let text = ok("referrers paged filtered", hoist_in(&store, &["referrers", "--artifact-type", SIG, &subject]));
    assert_eq!(text.lines().count(), 2, "both signatures, over two pages: {text}");
}

/// A `Repository` asks the referrers API once it knows the registry lacks it no more, but
/// keeps asking one that has it (the list, unlike the capability, changes).
#[test]
fn repository_remembers_whether_the_api_exists() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    proxy.emulate_referrers_api(true);
    let tmp = tempfile::tempdir().unwrap();
    let subject: hoist::Digest = push_image(tmp.path(), &reg.host(), "c/img:v1", 7).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = hoist::transport::registry::Client::new(Default::default()).unwrap();
    let list_twice = |host: String| {
        let repo = client.repository(&format!("{host}/c/img:v1").parse().unwrap());
        rt.block_on(async {
            for _ in 0..2 {
                assert!(repo.referrers(&subject, None).await.unwrap().is_empty());
            }
        })
    };
    list_twice(reg.host());
    assert_eq!(reg.count("GET", "/referrers/"), 1, "asked a registry without the API twice");
    assert_eq!(reg.count("GET", &format!("/manifests/{}", fallback_tag(&subject.to_string()))), 2);
    list_twice(proxy.host());
    let api_gets = proxy.exchanges().iter().filter(|e| e.path.contains("/referrers/") && e.status == Some(200)).count();
    assert_eq!(api_gets, 2);
}

/// The emulation itself, over plain HTTP: `OCI-Subject` only on manifests with a subject,
/// the descriptor the spec asks for, the filter and its header, nothing of it when off.
#[test]
fn proxy_emulates_the_referrers_api() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let subject = push_image(t, &reg.host(), "e/img:v1", 8);
    let direct = format!("{}/e/img", reg.host());
    let art = push_artifact(t, &format!("{direct}:a"), SIG, "a", &format!("{direct}:v1"), Some("k=v"));
    let http = reqwest::blocking::Client::new();
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let get = |url: String| http.get(url).header("accept", accept).send().unwrap();
    let art_bytes = get(format!("{}/v2/e/img/manifests/a", reg.url())).bytes().unwrap();
    let img_bytes = get(format!("{}/v2/e/img/manifests/v1", reg.url())).bytes().unwrap();
    assert_eq!(digest_of(&art_bytes), art);
    let referrers = |q: &str| get(format!("{}/v2/e/img/referrers/{subject}{q}", proxy.url()));

    // off: referrers requests reach distribution 2.8.2, which has no such route
    let upstream_before = reg.count("GET", "/referrers/");
    assert_eq!(referrers("").status().as_u16(), 404);
    proxy.emulate_referrers_api(true);
    let put = |tag: &str, body: &bytes::Bytes| {
        let r = http
            .put(format!("{}/v2/e/img/manifests/{tag}", proxy.url()))
            .header("content-type", accept)
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(r.headers()["docker-content-digest"], digest_of(body).as_str(), "body changed on the way");
        r.headers().get("oci-subject").map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(put("img-again", &img_bytes), None, "OCI-Subject on a manifest without subject");
    assert_eq!(put("a-again", &art_bytes), Some(subject.clone()));
    assert_eq!(put("a-third", &art_bytes), Some(subject.clone()));

    let r = referrers("");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    assert!(r.headers().get("oci-filters-applied").is_none());
    let v = json_of(r);
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let want = serde_json::json!([{"mediaType": accept, "digest": art, "size": art_bytes.len(),
                                   "artifactType": SIG, "annotations": {"k": "v"}}]);
    assert_eq!(v["manifests"], want, "one entry however often pushed");

    let r = referrers(&format!(
        "?artifactType={}",
        url::form_urlencoded::byte_serialize(SBOM.as_bytes()).collect::<String>()
    ));
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    assert_eq!(json_of(r)["manifests"], serde_json::json!([]));
    let r = referrers(&format!(
        "?artifactType={}",
        url::form_urlencoded::byte_serialize(SIG.as_bytes()).collect::<String>()
    ));
    assert_eq!(json_of(r)["manifests"], want);
    // another repository's referrers are its own
    let other = get(format!("{}/v2/other/referrers/{subject}", proxy.url()));
    let other = json_of(other);
    assert_eq!(other["manifests"], serde_json::json!([]));
    assert_eq!(
        reg.count("GET", "/referrers/"),
        upstream_before + 1,
        "only the request made while off reached the registry"
    );
}
