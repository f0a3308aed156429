#!/usr/bin/env python3
"""Build every case of a Dockerfile corpus (extract.py's output) with hoist and with a
reference builder, from one local busybox base, and compare outcome, rootfs (paths, types,
modes, owners, contents, link targets) and config.

    judge.py CORPUS OUT --hoist BIN --registry HOST:PORT [--ref buildkit|buildah] [--only SUBSTR]

The base must be pushed to HOST:PORT/library/busybox:latest beforehand (FROM busybox and
--from=busybox are rewritten to it). BuildKit is Docker's (DOCKER_HOST, DOCKER_BUILDKIT=1,
`docker build --network none`, then `docker save`); buildah uses vfs and chroot isolation.
Writes OUT/report.json and prints the agreement.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

DOCKER = "/usr/bin/docker"  # Debian's 20.10 CLI: the builtin BuildKit, no buildx needed
FIELDS = ["Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
          "StopSignal", "Healthcheck", "OnBuild", "Shell"]


def run(cmd, timeout=300, **kw):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return 124, "timeout"


def rewrite(df, base):
    out = []
    for line in df.split("\n"):
        w = line.split()
        if w and w[0].upper() == "FROM":
            line = re.sub(r"(?i)(\s)busybox(:latest)?(\s|$)", rf"\g<1>{base}\g<3>", line, count=1)
        line = re.sub(r"--from=busybox(:latest)?(\s|,|$)", rf"--from={base}\g<2>", line)
        line = re.sub(r"from=busybox(:latest)?(,|\s|$)", rf"from={base}\g<2>", line)
        out.append(line)
    return "\n".join(out)


def write_context(case, ctx, base):
    os.makedirs(ctx)
    os.chmod(ctx, 0o755)
    for f in case["files"]:
        p = os.path.join(ctx, f["name"])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if f["kind"] == "file":
            data = f["data"]
            if os.path.basename(f["name"]).startswith("Dockerfile"):
                data = rewrite(data, base)
            with open(p, "w") as fh:
                fh.write(data)
            os.chmod(p, f["mode"])
        elif f["kind"] == "dir":
            os.makedirs(p, exist_ok=True)
            os.chmod(p, f["mode"])
        else:
            os.symlink(f["target"], p)


def tree(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            own = f"{st.st_uid}:{st.st_gid}"
            if os.path.islink(p):
                out[rel] = f"l {os.readlink(p)} {own}"
            elif os.path.isdir(p):
                out[rel] = f"d {st.st_mode & 0o7777:o} {own}"
            elif os.path.isfile(p):
                h = hashlib.sha256(open(p, "rb").read()).hexdigest()[:16]
                out[rel] = f"f {st.st_mode & 0o7777:o} {own} {h}"
            else:
                out[rel] = f"o {st.st_mode:o} {own}"
    return out


def config(layout):
    saved = os.path.join(os.path.dirname(layout), "ref.tar")
    if layout.endswith("ref-oci") and os.path.exists(saved):
        # from the docker archive: the OCI conversion drops Healthcheck, OnBuild and Shell
        import tarfile
        with tarfile.open(saved) as t:
            man = json.load(t.extractfile("manifest.json"))
            c = json.load(t.extractfile(man[0]["Config"]))
    else:
        idx = json.load(open(os.path.join(layout, "index.json")))
        blob = lambda d: os.path.join(layout, "blobs", *d.split(":"))
        m = json.load(open(blob(idx["manifests"][0]["digest"])))
        c = json.load(open(blob(m["config"]["digest"])))
    cc = c.get("config") or {}
    out = {}
    for k in FIELDS:
        v = cc.get(k)
        if v in (None, "", {}, []):
            v = None
        if k == "Labels" and isinstance(v, dict):
            v = {a: b for a, b in v.items() if a != "io.buildah.version"} or None
        out[k] = v
    return out


def unpack(layout, dest):
    rc, log = run(["umoci", "unpack", "--image", f"{layout}:latest", dest])
    if rc != 0:
        raise RuntimeError(f"umoci unpack: {log}")
    return tree(os.path.join(dest, "rootfs"))


def dockerd_alive():
    return run([DOCKER, "version"], timeout=20)[0] == 0


def remove_stale_pidfile(pidfile):
    """A panicking 20.10 dockerd leaves its pid file behind, and a new dockerd refuses to start
    ("pid file found"): remove it once that process is gone (reaped, zombie or no longer there)."""
    import time
    try:
        pid = int(open(pidfile).read().strip())
    except (FileNotFoundError, ValueError):
        return
    for _ in range(100):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "X"
        if state in ("Z", "X"):
            os.remove(pidfile)
            return
        time.sleep(0.1)


def ensure_dockerd(args):
    """(Re)start the judge's own dockerd when it is not answering: 20.10's frontend panics
    (and takes the daemon down) on some Dockerfiles."""
    if dockerd_alive():
        return
    d = args.dockerd_dir
    os.makedirs(d, exist_ok=True)
    remove_stale_pidfile(os.path.join(d, "pid"))
    sock = os.path.join(d, "d.sock")
    os.environ["DOCKER_HOST"] = f"unix://{sock}"
    log = open(os.path.join(d, "log"), "a")
    subprocess.Popen(["dockerd", "--host", f"unix://{sock}", "--data-root", os.path.join(d, "root"),
                      "--exec-root", os.path.join(d, "exec"), "--pidfile", os.path.join(d, "pid"),
                      "--storage-driver", "vfs", "--iptables=false", "--bridge=none"],
                     stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        if dockerd_alive():
            return
        import time
        time.sleep(0.1)
    raise RuntimeError("dockerd did not start")


def ref_build(args, name, ctx, work):
    lay = os.path.join(work, "ref-oci")
    if args.ref == "buildkit":
        env = dict(os.environ, DOCKER_BUILDKIT="1")
        tag = f"hoist-judge/{name.lower()}:latest"
        rc, log = run([DOCKER, "build", "--network", "none", "-t", tag, ctx], env=env)
        if rc != 0:
            return False, log
        tar = os.path.join(work, "ref.tar")
        rc2, l2 = run([DOCKER, "save", "-o", tar, tag])
        run([DOCKER, "rmi", "-f", tag])
        if rc2 != 0 and "empty export" in l2:
            raise NotComparable("docker save cannot export an image without layers")
        if rc2 != 0:
            raise RuntimeError(f"docker save: {l2}")
        rc2, l2 = run(["skopeo", "copy", f"docker-archive:{tar}", f"oci:{lay}:latest"])
        if rc2 != 0:
            raise RuntimeError(f"skopeo copy: {l2}")
    else:
        root = os.path.join(args.out, "buildah")
        b = ["buildah", "--root", root + "/root", "--runroot", root + "/run", "--storage-driver", "vfs"]
        tag = f"localhost/judge-{name.lower()}:latest"
        rc, log = run(b + ["build", "--tls-verify=false", "--isolation", "chroot", "--runtime", "runc",
                           "-t", tag, ctx], env=dict(os.environ, BUILDAH_ISOLATION="chroot"))
        if rc != 0:
            return False, log
        rc2, l2 = run(b + ["push", tag, f"oci:{lay}:latest"])
        run(b + ["rmi", "-f", tag])
        if rc2 != 0:
            raise RuntimeError(f"buildah push: {l2}")
    return True, lay


class NotComparable(Exception):
    pass


def hoist_build(args, ctx, work):
    lay = os.path.join(work, "hoist-oci")
    # a store per case: cache mounts must not carry over from one case to the next
    env = dict(os.environ, HOIST_STORE=os.path.join(work, "hoist-store"))
    env.pop("SOURCE_DATE_EPOCH", None)
    rc, log = run([args.hoist, "build", "-t", "img:latest", "--output", f"type=oci,dest={lay},tar=false", ctx], env=env)
    if rc != 0:
        return False, log
    return True, lay


def judge(args, name, case):
    work = os.path.join(args.out, "work", name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    ctx = os.path.join(work, "ctx")
    write_context(case, ctx, f"{args.registry}/library/busybox:latest")
    if args.ref == "buildkit":
        ensure_dockerd(args)
    rok, rres = ref_build(args, name, ctx, work)
    if args.ref == "buildkit" and not rok and not dockerd_alive():
        return {"case": name, "verdict": "reference crashed", "ref_error": rres[-600:]}
    hok, hres = hoist_build(args, ctx, work)
    r = {"case": name, "ref_ok": rok, "hoist_ok": hok}
    if not rok:
        r["ref_error"] = rres[-600:]
    if not hok:
        r["hoist_error"] = hres[-600:]
    if rok != hok:
        r["verdict"] = "outcome differs"
        return r
    if not rok:
        r["verdict"] = "agree (both fail)"
        return r
    rt, ht = unpack(rres, os.path.join(work, "ref-un")), unpack(hres, os.path.join(work, "hoist-un"))
    diffs = [f"{k}: ref {rt.get(k)} hoist {ht.get(k)}" for k in sorted(set(rt) | set(ht)) if rt.get(k) != ht.get(k)]
    rc, hc = config(rres), config(hres)
    cdiffs = [f"config {k}: ref {rc[k]} hoist {hc[k]}" for k in FIELDS if rc[k] != hc[k]]
    if diffs or cdiffs:
        r["verdict"] = "image differs"
        r["diffs"] = (diffs + cdiffs)[:40]
    else:
        r["verdict"] = "agree"
    shutil.rmtree(work, ignore_errors=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--hoist", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--ref", default="buildkit", choices=["buildkit", "buildah"])
    ap.add_argument("--only", default="")
    ap.add_argument("--dockerd-dir", default="/tmp/hoist-judge-dockerd",
                    help="where the judge (re)starts its own dockerd when DOCKER_HOST does not answer")
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name in sorted(os.listdir(args.corpus)):
        if args.only not in name:
            continue
        case = json.load(open(os.path.join(args.corpus, name, "case.json")))
        try:
            r = judge(args, name, case)
        except NotComparable as e:
            r = {"case": name, "verdict": "not comparable", "error": str(e)}
        except Exception as e:  # a judge failure is reported, not counted as agreement
            r = {"case": name, "verdict": "judge error", "error": str(e)[-600:]}
        results.append(r)
        print(f"{r['verdict']:20} {name}", flush=True)
    counts = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    agree = sum(v for k, v in counts.items() if k.startswith("agree"))
    # cases that ran: both builders gave an answer the judge could compare
    ran = sum(v for k, v in counts.items() if k.startswith("agree") or k in ("outcome differs", "image differs"))
    summary = {"ref": args.ref, "cases": len(results), "counts": counts, "agreement": f"{agree}/{ran} of the cases that ran"}
    json.dump({"summary": summary, "results": results}, open(os.path.join(args.out, "report.json"), "w"), indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
