//! What a Dockerfile build fetches from the network, from servers the test starts on
//! 127.0.0.1 (the test kit's `webfiles`: files with ETag/Last-Modified, git over `git
//! http-backend`): `ADD <url>` (mode 0600, mtime from Last-Modified, never extracted,
//! `--checksum` verified, revalidated with a conditional GET and reused on 304), `ADD <git
//! url>#ref[:subdir]` (`--keep-git-dir`, commit-time mtimes), and the build contexts that are
//! not a local directory: a git URL, an http(s) tarball, a tar on stdin, `-f -`. The images
//! are judged by reading their layers' tar headers, and one ADD-URL case and one git-context
//! case against BuildKit (dockerd 20.10 fetching from the same server).

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use hoist_testkit::webfiles::WebFiles;
use serde_json::Value;

const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_SECS: u64 = 1_445_412_480;

/// One entry of an image's filesystem, as its layers' tar headers say.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
}

/// The files of the image tagged `latest` in the OCI layout `dest` (layers applied in order,
/// no whiteouts expected).
fn image_entries(dest: &Path) -> BTreeMap<String, Entry> {
    let blob = |d: &str| dest.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let idx: Value = serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
    let m: Value =
        serde_json::from_slice(&fs::read(blob(idx["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for l in m["layers"].as_array().unwrap() {
        let raw = fs::read(blob(l["digest"].as_str().unwrap())).unwrap();
        let plain = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut v).unwrap();
            v
        } else {
            raw
        };
        let mut ar = tar::Archive::new(&plain[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                _ => 'f',
            };
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let entry = Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                data,
            };
            out.insert(path, entry);
        }
    }
    out
}

/// `hoist build ARGS... LAST` into the OCI layout `dest`, with `store`, uncompressed layers;
/// `stdin` fed to it. The output, whatever the status.
fn build_with(store: &Path, dest: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let o = format!("type=oci,dest={},tar=false", dest.display());
    let mut child = hoist_cmd()
        .env("HOIST_STORE", store)
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "-t", "img:latest", "--compression", "none", "--output", &o])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hoist");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    child.wait_with_output().unwrap()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hoist_testkit::tools::sha256_hex(b))
}

/// A gzip'd tar of `files` (path, content), as a context or an archive to ADD.
fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &c[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// `ADD <url>`: the file as BuildKit writes it (0600 root, mtime from Last-Modified, named
/// from the URL, an archive not extracted); a second build revalidates with the server's
/// ETag and reuses the stored download on 304 (same digest, every step cached); a changed
/// file is fetched again; `--checksum` refuses other bytes naming the URL and both digests,
/// and a matching checksum already in the store costs no request at all.
#[test]
fn add_url_is_streamed_checked_and_revalidated() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    web.put("/files/hello.txt", "hello\n", Some("\"v1\""), Some(LAST_MODIFIED));
    let archive = tar_gz(&[("inside.txt", b"in\n")]);
    web.put("/files/a.tar.gz", archive.clone(), None, None);
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let hello = web.url("/files/hello.txt");
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {hello} /\nADD --chown=7:8 {hello} /named\nADD --chmod=644 {} /d/\n",
            web.url("/files/a.tar.gz")
        ),
    )
    .unwrap();
    let store = t.join("store");
    let ctx_s = ctx.to_str().unwrap();
    let out = build_with(&store, &t.join("oci1"), &[ctx_s], None);
    let d1 = assert_success("hoist build", &out).trim().to_string();
    let img = image_entries(&t.join("oci1"));
    let f = &img["hello.txt"];
    assert_eq!((f.kind, f.mode, f.uid, f.gid), ('f', 0o600, 0, 0), "{f:?}");
    assert_eq!(f.data, b"hello\n");
    assert_eq!(f.mtime, LAST_MODIFIED_SECS, "mtime from Last-Modified");
    let n = &img["named"];
    assert_eq!((n.mode, n.uid, n.gid, &n.data[..]), (0o600, 7, 8, &b"hello\n"[..]));
    let a = &img["d/a.tar.gz"];
    assert_eq!((a.mode, &a.data), (0o644, &archive), "ADD of a URL is not extracted");
    assert!(!img.contains_key("d/inside.txt"));
    // the second ADD of the same URL already asked with the ETag the first got
    let first = web.requests_for("/files/hello.txt");
    assert_eq!(first.iter().filter(|r| r.status == 200).count(), 1, "{first:?}");
    assert!(first.iter().any(|r| r.status == 304 && r.if_none_match.as_deref() == Some("\"v1\"")), "{first:?}");

    // Again: conditional GETs answered 304, the stored file reused, every step cached.
    let before = web.requests_for("/files/hello.txt").len();
    let out = build_with(&store, &t.join("oci2"), &[ctx_s], None);
    let d2 = assert_success("hoist build (again)", &out).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(d1, d2, "same digest from the revalidated download");
    assert!(err.contains("not modified (304)"), "{err}");
    let again: Vec<_> = web.requests_for("/files/hello.txt").into_iter().skip(before).collect();
    assert!(!again.is_empty() && again.iter().all(|r| r.status == 304), "{again:?}");
    assert!(again.iter().all(|r| r.if_none_match.as_deref() == Some("\"v1\"")), "{again:?}");
    assert!(err.contains("3 steps cached"), "{err}");

    // Changed on the server: fetched again, a new layer.
    web.put("/files/hello.txt", "hello again\n", Some("\"v2\""), Some("Thu, 22 Oct 2015 07:28:00 GMT"));
    let out = build_with(&store, &t.join("oci3"), &[ctx_s], None);
    let d3 = assert_success("hoist build (changed)", &out).trim().to_string();
    assert_ne!(d3, d1);
    let img = image_entries(&t.join("oci3"));
    assert_eq!(img["hello.txt"].data, b"hello again\n");
    assert_eq!(img["hello.txt"].mtime, LAST_MODIFIED_SECS + 86_400);

    // --checksum: other bytes are refused, naming the URL and both digests.
    let wrong = format!("sha256:{}", "0".repeat(64));
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nADD --checksum={wrong} {hello} /x\n")).unwrap();
    let out = build_with(&store, &t.join("oci4"), &[ctx_s], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let actual = sha256(b"hello again\n");
    assert!(err.contains(&hello) && err.contains(&wrong) && err.contains(&actual), "{err}");
    assert!(!t.join("oci4").exists());

    // The right checksum, already in the store: built without a request.
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nADD --checksum={actual} {hello} /x\n")).unwrap();
    let before = web.requests().len();
    let out = build_with(&store, &t.join("oci5"), &[ctx_s], None);
    assert_success("hoist build --checksum", &out);
    assert_eq!(web.requests().len(), before, "no request for a checksum the store holds");
    assert_eq!(image_entries(&t.join("oci5"))["x"].data, b"hello again\n");

    // A server error is a failed build naming the URL; COPY refuses URLs as BuildKit does.
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nADD {} /x\n", web.url("/files/missing"))).unwrap();
    let out = build_with(&store, &t.join("oci6"), &[ctx_s], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/files/missing") && err.contains("404"), "{err}");
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nCOPY {hello} /x\n")).unwrap();
    let out = build_with(&store, &t.join("oci7"), &[ctx_s], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("can't be a URL for COPY"), "{err}");
}

/// A git repository with a committed tree, a tag and a fixed commit time, cloned bare as
/// `root/repo.git` for the server. Returns the commit time.
fn git_repo(t: &Path, root: &Path) -> u64 {
    let files: &[(&str, &[u8])] = &[
        ("a.txt", b"a\n"),
        ("sub/s.txt", b"s\n"),
        ("sub/deep/d.txt", b"d\n"),
        ("ctxdir/Dockerfile", b"FROM scratch\nCOPY f.txt /from-git\n"),
        ("ctxdir/f.txt", b"git context\n"),
        ("Dockerfile.root", b"FROM scratch\nCOPY ctxdir/f.txt /from-git\nCOPY sub /sub\n"),
    ];
    bare_repo(t, root, "repo", files);
    1_500_000_000
}

/// `git` in `dir` with a fixed identity and commit time; its stdout.
fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_COMMITTER_DATE", "1500000000 +0000")
        .env("GIT_AUTHOR_DATE", "1500000000 +0000")
        .output()
        .unwrap();
    assert_success(&format!("git {args:?}"), &out).trim().to_string()
}

/// A repository of `files` (one commit on `main`, tagged `v1`), cloned bare as
/// `root/NAME.git` for the server. Returns the commit id.
fn bare_repo(t: &Path, root: &Path, name: &str, files: &[(&str, &[u8])]) -> String {
    let work = t.join(format!("work-{name}"));
    for (p, c) in files {
        let f = work.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, c).unwrap();
    }
    run_git(&work, &["init", "-q"]);
    run_git(&work, &["add", "."]);
    run_git(&work, &["commit", "-q", "-m", "one"]);
    run_git(&work, &["tag", "v1"]);
    fs::create_dir_all(root).unwrap();
    let bare = root.join(format!("{name}.git"));
    run_git(t, &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    run_git(&work, &["rev-parse", "HEAD"])
}

/// `ADD <git url>#ref[:subdir]` over smart HTTP: the tree at the ref, owned by root, every
/// mtime the commit's time, no `.git` unless `--keep-git-dir`; a subdirectory alone.
#[test]
fn add_git_url_checks_out_the_ref() {
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    let time = git_repo(t, &t.join("git"));
    web.serve_git(&t.join("git"));
    let repo = web.url("/git/repo.git");
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {repo}#v1 /src/\nADD {repo}#main:sub /only-sub\nADD --keep-git-dir=true {repo} /withgit/\n"
        ),
    )
    .unwrap();
    let out = build_with(&t.join("store"), &t.join("oci"), &[ctx.to_str().unwrap()], None);
    assert_success("hoist build", &out);
    let img = image_entries(&t.join("oci"));
    let a = &img["src/a.txt"];
    assert_eq!((a.kind, a.mode, a.uid, a.gid, &a.data[..]), ('f', 0o644, 0, 0, &b"a\n"[..]), "{a:?}");
    assert_eq!(a.mtime, time, "the commit's time");
    assert_eq!(img["src/sub/deep/d.txt"].mtime, time);
    assert_eq!(img["src/sub"].mtime, time);
    assert!(!img.keys().any(|k| k.starts_with("src/.git")), "no .git without --keep-git-dir");
    assert_eq!(img["only-sub/s.txt"].data, b"s\n");
    assert_eq!(img["only-sub/deep/d.txt"].data, b"d\n");
    assert!(!img.contains_key("only-sub/a.txt"));
    assert!(img.contains_key("withgit/.git/HEAD"), "--keep-git-dir keeps .git");
    assert_eq!(img["withgit/a.txt"].data, b"a\n");
    let fetched: Vec<_> = web.requests().into_iter().filter(|r| r.path.contains("git-upload-pack")).collect();
    assert!(!fetched.is_empty(), "git went through the test server");

    // A ref the repository lacks: an error naming it.
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nADD {repo}#nosuchref /src/\n")).unwrap();
    let out = build_with(&t.join("store"), &t.join("oci2"), &[ctx.to_str().unwrap()], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nosuchref"), "{err}");
}

/// Build contexts that are not a local directory: a git URL with a subdirectory, an http
/// tarball, a tar on stdin (`hoist build -`), a Dockerfile on stdin (`-f -`) with a local
/// context, and an http URL of a plain Dockerfile (an empty context).
#[test]
fn remote_and_stdin_build_contexts() {
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    git_repo(t, &t.join("git"));
    web.serve_git(&t.join("git"));
    let store = t.join("store");

    let out = build_with(&store, &t.join("oci1"), &[&format!("{}#main:ctxdir", web.url("/git/repo.git"))], None);
    assert_success("hoist build GIT-URL", &out);
    assert_eq!(image_entries(&t.join("oci1"))["from-git"].data, b"git context\n");
    // the context has no .git unless BuildKit's BUILDKIT_CONTEXT_KEEP_GIT_DIR says so
    let df = "FROM scratch\nCOPY . /ctx/\n";
    let git_ctx = format!("{}#main", web.url("/git/repo.git"));
    let out = build_with(&store, &t.join("oci1b"), &["-f", "-", &git_ctx], Some(df.as_bytes()));
    assert_success("hoist build -f - GIT-URL", &out);
    let img = image_entries(&t.join("oci1b"));
    assert!(img.contains_key("ctx/a.txt") && !img.keys().any(|k| k.starts_with("ctx/.git")), "{:?}", img.keys());
    let keep = ["--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1", "-f", "-", &git_ctx];
    let out = build_with(&store, &t.join("oci1c"), &keep, Some(df.as_bytes()));
    assert_success("hoist build BUILDKIT_CONTEXT_KEEP_GIT_DIR=1 GIT-URL", &out);
    assert!(image_entries(&t.join("oci1c")).contains_key("ctx/.git/HEAD"));

    let ctx_tar = tar_gz(&[("Dockerfile", b"FROM scratch\nCOPY f.txt /from-tar\n"), ("f.txt", b"tar context\n")]);
    web.put("/ctx.tar.gz", ctx_tar.clone(), None, None);
    let out = build_with(&store, &t.join("oci2"), &[&web.url("/ctx.tar.gz")], None);
    assert_success("hoist build TARBALL-URL", &out);
    assert_eq!(image_entries(&t.join("oci2"))["from-tar"].data, b"tar context\n");

    let out = build_with(&store, &t.join("oci3"), &["-"], Some(&ctx_tar));
    assert_success("hoist build - < ctx.tar.gz", &out);
    assert_eq!(image_entries(&t.join("oci3"))["from-tar"].data, b"tar context\n");

    let local = t.join("local");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("l.txt"), "local\n").unwrap();
    let df = b"FROM scratch\nCOPY l.txt /from-stdin-dockerfile\n";
    let out = build_with(&store, &t.join("oci4"), &["-f", "-", local.to_str().unwrap()], Some(df));
    assert_success("hoist build -f - DIR", &out);
    assert_eq!(image_entries(&t.join("oci4"))["from-stdin-dockerfile"].data, b"local\n");

    web.put("/Dockerfile", "FROM scratch\nLABEL from=url\n", None, None);
    let out = build_with(&store, &t.join("oci5"), &[&web.url("/Dockerfile")], None);
    assert_success("hoist build DOCKERFILE-URL", &out);

    let out = build_with(&store, &t.join("oci6"), &["-f", "-", "-"], Some(df));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stdin"), "{err}");
}

/// hoist against BuildKit (dockerd 20.10, the test kit's judge) on the same server: `ADD
/// <url>` (with and without `--chown`, an archive URL) and a git URL as the build context
/// give the same files: kinds, modes, owners, contents, and the mtimes BuildKit gives a
/// downloaded file (its `Last-Modified`); `-f` names a Dockerfile inside a git context.
#[test]
fn add_url_and_git_context_agree_with_buildkit() {
    hoist_testkit::require!("dockerd", "skopeo", "git");
    hoist_testkit::require_root!("dockerd needs root");
    let dockerd = match hoist_testkit::dockerd::Dockerd::start() {
        Ok(d) => d,
        Err(why) => panic!("dockerd (the BuildKit judge) did not start: {why}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    web.put("/files/hello.txt", "hello\n", Some("\"v1\""), Some(LAST_MODIFIED));
    web.put("/files/a.tar.gz", tar_gz(&[("inside.txt", b"in\n")]), None, Some(LAST_MODIFIED));
    git_repo(t, &t.join("git"));
    web.serve_git(&t.join("git"));
    let hello = web.url("/files/hello.txt");
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {hello} /\nADD --chown=7:8 {hello} /named\nADD {} /d/\n",
            web.url("/files/a.tar.gz")
        ),
    )
    .unwrap();
    // (dockerd 20.10's BuildKit takes no `:SUBDIR`: the Dockerfile is named inside the repo)
    let git_ctx = format!("{}#main", web.url("/git/repo.git"));
    let cases: [(&str, String, &[&str], &str); 2] = [
        ("add-url", ctx.display().to_string(), &[], "named"),
        ("git-context", git_ctx, &["-f", "Dockerfile.root"], "from-git"),
    ];
    let mut diffs = Vec::new();
    for (name, context, flags, must) in cases {
        let tag = format!("judge/{name}:latest");
        let bk = dockerd.build(&tag, Path::new(&context), flags);
        assert_success(&format!("docker build {name}"), &bk);
        let tarp = t.join(format!("{name}.tar"));
        dockerd.docker_ok(&["save", "-o", tarp.to_str().unwrap(), &tag]);
        let bk_layout = t.join(format!("{name}-bk"));
        let out = Command::new("skopeo")
            .args(["copy", &format!("docker-archive:{}", tarp.display())])
            .arg(format!("oci:{}:latest", bk_layout.display()))
            .output()
            .unwrap();
        assert_success("skopeo copy", &out);
        let hl = t.join(format!("{name}-hoist"));
        let args: Vec<&str> = flags.iter().copied().chain([context.as_str()]).collect();
        assert_success(&format!("hoist build {name}"), &build_with(&t.join("store"), &hl, &args, None));
        // everything but mtimes of directories (BuildKit stamps the ones it creates with the
        // time of the build) and of files copied from a context (hoist writes
        // SOURCE_DATE_EPOCH, BuildKit the checkout's time)
        let strip = |m: BTreeMap<String, Entry>| -> BTreeMap<String, Entry> {
            m.into_iter()
                .map(|(k, mut e)| {
                    if e.kind == 'd' || name == "git-context" {
                        e.mtime = 0;
                    }
                    (k, e)
                })
                .collect()
        };
        let (b, h) = (strip(image_entries(&bk_layout)), strip(image_entries(&hl)));
        assert!(b.contains_key(must) && h.contains_key(must), "{name}: {must} missing\n{b:?}\n{h:?}");
        for k in b.keys().chain(h.keys()).collect::<std::collections::BTreeSet<_>>() {
            if b.get(k) != h.get(k) {
                diffs.push(format!("{name} {k}: BuildKit {:?} hoist {:?}", b.get(k), h.get(k)));
            }
        }
    }
    assert!(diffs.is_empty(), "hoist differs from BuildKit:\n{}", diffs.join("\n"));
}

/// A git fetch is bounded by the bytes it puts on disk (the build context's bound, given
/// smaller here): a repository whose pack is larger than the bound, and one whose pack is
/// small but whose checkout expands past it (4 MiB of zeros), are both refused, naming the
/// URL and the bound; the same repositories under a larger bound check out.
#[test]
fn git_fetch_is_bounded_by_bytes_on_disk() {
    use hoist::dockerfile::remote::{git_checkout_blocking, GitFetch, GitRef};
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    // bytes that do not compress: a chain of digests
    let mut noise = Vec::new();
    let mut h = b"seed".to_vec();
    while noise.len() < 512 << 10 {
        h = hoist_testkit::tools::sha256_hex(&h).into_bytes();
        noise.extend(hex_bytes(&h));
    }
    bare_repo(t, &t.join("git"), "noise", &[("noise.bin", &noise)]);
    bare_repo(t, &t.join("git"), "zeros", &[("zeros.bin", &vec![0u8; 4 << 20])]);
    web.serve_git(&t.join("git"));
    let work = t.join("checkouts");
    for (name, bound) in [("noise", 256u64 << 10), ("zeros", 1 << 20)] {
        let url = web.url(&format!("/git/{name}.git"));
        let r = GitRef::parse(&format!("{url}#main")).unwrap();
        let small = GitFetch { max_bytes: bound, ..GitFetch::default() };
        let err = match git_checkout_blocking(&r, &work, &small) {
            Ok(_) => panic!("{name}: checked out past a bound of {bound} bytes"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&url) && err.contains(&bound.to_string()), "{name}: {err}");
        let large = GitFetch { max_bytes: 16 << 20, ..GitFetch::default() };
        let co = git_checkout_blocking(&r, &work, &large).unwrap();
        assert!(co.dir.join(format!("{name}.bin")).is_file());
    }
    // nothing is left of the refused fetches
    let left: Vec<_> = fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `hex` (ASCII hex digits) as bytes.
fn hex_bytes(hex: &[u8]) -> Vec<u8> {
    hex.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()).collect()
}

/// `ADD --checksum=<commit> <git url>#ref` (BuildKit's): the commit the reference resolves
/// to must start with the given hex digits (all 40, or a prefix); another commit fails the
/// build naming both, and a reference that is itself another commit id fails before any
/// fetch. A checksum that is not hex, or on a context file, is refused.
#[test]
fn add_git_checksum_pins_the_commit() {
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    let commit = bare_repo(t, &t.join("git"), "pinned", &[("p.txt", b"pinned\n")]);
    web.serve_git(&t.join("git"));
    let repo = web.url("/git/pinned.git");
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("local.txt"), "l\n").unwrap();
    let store = t.join("store");
    let build = |df: String, out: &str| {
        fs::write(ctx.join("Dockerfile"), df).unwrap();
        build_with(&store, &t.join(out), &[ctx.to_str().unwrap()], None)
    };
    let out = build(format!("FROM scratch\nADD --checksum={commit} {repo}#v1 /src/\n"), "oci1");
    assert_success("ADD --checksum=COMMIT GIT", &out);
    assert_eq!(image_entries(&t.join("oci1"))["src/p.txt"].data, b"pinned\n");
    let out = build(format!("FROM scratch\nADD --checksum={} {repo}#main /src/\n", &commit[..12]), "oci2");
    assert_success("ADD --checksum=PREFIX GIT", &out);

    let wrong = "0123456789abcdef0123456789abcdef01234567";
    let out = build(format!("FROM scratch\nADD --checksum={wrong} {repo}#main /src/\n"), "oci3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(wrong) && err.contains(&commit) && err.contains(&repo), "{err}");
    assert!(!t.join("oci3").exists());

    // a commit id as the reference that the checksum does not match: no request at all
    let before = web.requests().len();
    let out = build(format!("FROM scratch\nADD --checksum={wrong} {repo}#{commit} /src/\n"), "oci4");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(wrong) && err.contains(&commit), "{err}");
    assert_eq!(web.requests().len(), before, "fetched despite a mismatch known before");

    let out = build(format!("FROM scratch\nADD --checksum=v1 {repo}#main /src/\n"), "oci5");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("hex commit"), "{err}");
    let out = build(format!("FROM scratch\nADD --checksum={commit} local.txt /l\n"), "oci6");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("HTTP(S) or Git"), "{err}");
}

/// BuildKit's pre-flight secrets for what a build fetches go to their host only:
/// `HTTP_AUTH_TOKEN_<hostname>` as `Authorization: Bearer …` and `HTTP_AUTH_HEADER_<hostname>`
/// as it is, for `ADD <url>`; `GIT_AUTH_TOKEN.<host:port>` as `basic
/// base64(x-access-token:…)` for a git source. The same server reached as `localhost` is
/// another host and sees none of them, nor does a redirect from the right host to it; the
/// values never reach the build's output.
#[test]
fn fetch_credentials_go_only_to_their_host() {
    use base64::Engine;
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    let other = |p: &str| web.url(p).replacen("127.0.0.1", "localhost", 1);
    let port = web.url("").rsplit(':').next().unwrap().to_string();
    web.put("/files/a.txt", "a\n", None, None);
    web.put("/files/b.txt", "b\n", None, None);
    web.put_redirect("/files/away.txt", &other("/files/b.txt"));
    bare_repo(t, &t.join("git"), "private", &[("p.txt", b"p\n")]);
    bare_repo(t, &t.join("git"), "public", &[("q.txt", b"q\n")]);
    web.serve_git(&t.join("git"));
    let secret = |name: &str, v: &str| {
        let p = t.join(name);
        fs::write(&p, v).unwrap();
        p.display().to_string()
    };
    let (tok, hdr, gtok) = ("s3cr3t-token", "Basic aGVsbG86d29ybGQ=", "g1t-token");
    let tok_file = secret("tok", &format!("{tok}\n"));
    let hdr_file = secret("hdr", &format!("{hdr}\n"));
    let gtok_file = secret("gtok", gtok);
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD {} /a\nADD {} /b\nADD {} /away\nADD {}#main /private/\nADD {}#main /public/\n",
            web.url("/files/a.txt"),
            other("/files/b.txt"),
            web.url("/files/away.txt"),
            web.url("/git/private.git"),
            other("/git/public.git"),
        ),
    )
    .unwrap();
    let store = t.join("store");
    let ctx_s = ctx.to_str().unwrap();
    let s1 = format!("id=HTTP_AUTH_TOKEN_127.0.0.1,src={tok_file}");
    let s2 = format!("id=GIT_AUTH_TOKEN.127.0.0.1:{port},src={gtok_file}");
    let out = build_with(&store, &t.join("oci1"), &["--secret", &s1, "--secret", &s2, ctx_s], None);
    assert_success("hoist build with fetch secrets", &out);
    let img = image_entries(&t.join("oci1"));
    assert_eq!((&img["a"].data[..], &img["away"].data[..]), (&b"a\n"[..], &b"b\n"[..]));
    assert!(img.contains_key("private/p.txt") && img.contains_key("public/q.txt"));
    let log = web.requests();
    let auth_of = |pfx: &str| -> Vec<Option<String>> {
        log.iter().filter(|r| r.path.starts_with(pfx)).map(|r| r.authorization.clone()).collect()
    };
    let bearer = Some(format!("Bearer {tok}"));
    let git_basic =
        Some(format!("basic {}", base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{gtok}"))));
    assert!(auth_of("/files/a.txt").iter().all(|a| *a == bearer) && !auth_of("/files/a.txt").is_empty());
    assert!(auth_of("/files/away.txt").iter().all(|a| *a == bearer), "{log:?}");
    // b.txt: asked directly at localhost, and reached by the redirect
    assert_eq!(auth_of("/files/b.txt"), vec![None, None], "{log:?}");
    let private = auth_of("/git/private.git");
    assert!(!private.is_empty() && private.iter().all(|a| *a == git_basic), "{private:?}");
    let public = auth_of("/git/public.git");
    assert!(!public.is_empty() && public.iter().all(Option::is_none), "{public:?}");
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!shown.contains(tok) && !shown.contains(gtok), "{shown}");

    // The header secret, for the other host: sent there as it is, and nowhere else.
    let before = web.requests().len();
    let s3 = format!("id=HTTP_AUTH_HEADER_localhost,src={hdr_file}");
    let out = build_with(&store, &t.join("oci2"), &["--no-cache", "--secret", &s3, ctx_s], None);
    assert_success("hoist build with a header secret", &out);
    let log: Vec<_> = web.requests().into_iter().skip(before).collect();
    // b.txt asked at localhost gets it; the redirect from 127.0.0.1 adds none
    let sent: Vec<_> = log.iter().filter(|r| r.authorization.is_some()).collect();
    assert_eq!(sent.len(), 1, "{log:?}");
    assert_eq!((sent[0].path.as_str(), sent[0].authorization.as_deref()), ("/files/b.txt", Some(hdr)));
    assert_eq!(log.iter().filter(|r| r.path == "/files/b.txt").count(), 2, "{log:?}");
}

/// buildx's named contexts from URLs (BuildKit's rules): `NAME=GIT-URL#REF[:SUBDIR]` is the
/// checkout, read as a local named context is (`COPY --from=NAME`, `FROM NAME`);
/// `NAME=https://…/x.tar.gz` is a directory holding the download as the one file `context`
/// (mode 0600, never extracted), fetched with the credentials for its host. The image's
/// history names the URL, not a temp dir, so a second build gives the same digest.
#[test]
fn named_contexts_from_urls() {
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    git_repo(t, &t.join("git"));
    web.serve_git(&t.join("git"));
    let archive = tar_gz(&[("in.txt", b"in\n")]);
    web.put("/x.tar.gz", archive.clone(), Some("\"x1\""), Some(LAST_MODIFIED));
    let repo = web.url("/git/repo.git");
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM sub AS fromsub\nFROM scratch\nCOPY --from=src a.txt /from-git/a.txt\nCOPY --from=fromsub /s.txt /from-sub/\nCOPY --from=tarball context /x.tar.gz\n",
    )
    .unwrap();
    let tok = t.join("tok");
    fs::write(&tok, "ctx-token").unwrap();
    let (src, sub, tarball) =
        (format!("src={repo}#v1"), format!("sub={repo}#main:sub"), format!("tarball={}", web.url("/x.tar.gz")));
    let secret = format!("id=HTTP_AUTH_TOKEN_127.0.0.1,src={}", tok.display());
    let args = [
        "--build-context",
        &src,
        "--build-context",
        &sub,
        "--build-context",
        &tarball,
        "--secret",
        &secret,
        ctx.to_str().unwrap(),
    ];
    let store = t.join("store");
    let out = build_with(&store, &t.join("oci1"), &args, None);
    let d1 = assert_success("hoist build --build-context NAME=URL", &out).trim().to_string();
    let img = image_entries(&t.join("oci1"));
    assert_eq!(img["from-git/a.txt"].data, b"a\n");
    assert_eq!(img["from-sub/s.txt"].data, b"s\n");
    assert!(!img.contains_key("from-sub/a.txt"));
    let x = &img["x.tar.gz"];
    assert_eq!((x.mode, &x.data), (0o600, &archive), "the download as it is");
    assert!(!img.contains_key("in.txt"));
    let got = web.requests_for("/x.tar.gz");
    assert!(!got.is_empty() && got.iter().all(|r| r.authorization.as_deref() == Some("Bearer ctx-token")), "{got:?}");
    assert!(web.requests().iter().any(|r| r.path.contains("git-upload-pack")));

    let out = build_with(&store, &t.join("oci2"), &args, None);
    let d2 = assert_success("hoist build --build-context NAME=URL (again)", &out).trim().to_string();
    assert_eq!(d1, d2, "fetched contexts give the same image again");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not modified (304)"), "{err}");
}

/// Git checkouts are kept between builds, by URL and commit, in the store's build cache: a
/// second build of the same commit asks the server which commit the ref names (`ls-refs`)
/// and fetches no objects; the image is the same. A new commit on the ref is fetched. A git
/// build context goes through the same kept checkouts: its second build fetches no objects
/// and gives the same image, and a store where `ADD` kept the commit fetches none at all.
#[test]
fn git_checkouts_are_kept_between_builds() {
    hoist_testkit::require!("git");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let web = WebFiles::start();
    bare_repo(t, &t.join("git"), "kept", &[("k.txt", b"k\n"), ("Dockerfile", b"FROM scratch\nCOPY k.txt /ctx-k\n")]);
    web.serve_git(&t.join("git"));
    let repo = web.url("/git/kept.git");
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nADD {repo}#main /src/\n")).unwrap();
    let store = t.join("store");
    let fetches = |from: usize| {
        web.requests()
            .into_iter()
            .skip(from)
            .filter(|r| matches!(r.git_command.as_deref(), Some("fetch" | "want")))
            .count()
    };
    let out = build_with(&store, &t.join("oci1"), &[ctx.to_str().unwrap()], None);
    let d1 = assert_success("hoist build (first)", &out).trim().to_string();
    assert!(fetches(0) > 0, "{:?}", web.requests());
    let before = web.requests().len();
    let out = build_with(&store, &t.join("oci2"), &["--no-cache", ctx.to_str().unwrap()], None);
    let d2 = assert_success("hoist build (again)", &out).trim().to_string();
    assert_eq!(d1, d2);
    assert_eq!(fetches(before), 0, "objects fetched again: {:?}", &web.requests()[before..]);
    assert!(web.requests().len() > before, "the ref is still asked for");
    assert_eq!(image_entries(&t.join("oci2"))["src/k.txt"].data, b"k\n");

    // a new commit on main: fetched
    let work = t.join("work-kept");
    fs::write(work.join("k.txt"), "k2\n").unwrap();
    run_git(&work, &["commit", "-qam", "two"]);
    run_git(&work, &["push", "-q", t.join("git/kept.git").to_str().unwrap(), "main"]);
    let before = web.requests().len();
    let out = build_with(&store, &t.join("oci3"), &[ctx.to_str().unwrap()], None);
    assert_success("hoist build (new commit)", &out);
    assert!(fetches(before) > 0);
    assert_eq!(image_entries(&t.join("oci3"))["src/k.txt"].data, b"k2\n");

    // the repository as the build context: fetched once into a new store, then kept
    let git_ctx = format!("{repo}#main");
    let (store2, before) = (t.join("store2"), web.requests().len());
    let out = build_with(&store2, &t.join("oci4"), &[&git_ctx], None);
    let c1 = assert_success("hoist build GIT-CONTEXT (first)", &out).trim().to_string();
    assert!(fetches(before) > 0, "{:?}", &web.requests()[before..]);
    let before = web.requests().len();
    let out = build_with(&store2, &t.join("oci5"), &["--no-cache", &git_ctx], None);
    let c2 = assert_success("hoist build GIT-CONTEXT (again)", &out).trim().to_string();
    assert_eq!(c1, c2);
    assert_eq!(fetches(before), 0, "objects fetched again: {:?}", &web.requests()[before..]);
    assert_eq!(image_entries(&t.join("oci5"))["ctx-k"].data, b"k2\n");
    // the store whose ADD kept this commit: one cache for both
    let before = web.requests().len();
    let out = build_with(&store, &t.join("oci6"), &[&git_ctx], None);
    assert_eq!(assert_success("hoist build GIT-CONTEXT (ADD's store)", &out).trim(), c1);
    assert_eq!(fetches(before), 0, "objects fetched again: {:?}", &web.requests()[before..]);
}
