#!/usr/bin/env python3
"""Benchmark data for bench/run.sh (kept under bench/work/data, rebuilt when the size changes).

  model/model.safetensors  SIZE MiB of random bytes (+ a small config.json)
  sys.tar                  tar of regular files from /usr/lib and /usr/share, about SIZE MiB
  tree/                    FILES small files (0.5-32 KiB, slices of sys.tar: compressible like real files)
  img-layout/              OCI layout `bench`: one image whose single (uncompressed) layer is sys.tar
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys

MiB = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def model(data, size):
    d = os.path.join(data, "model")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        left = size * MiB
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architectures": ["BenchForCausalLM"], "hidden_size": 4096}, f)


def systar(data, size):
    limit = size * MiB
    total = 0
    names = []
    for top in ("/usr/lib", "/usr/share"):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(root, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not os.path.isfile(p) or os.path.islink(p) or not os.access(p, os.R_OK):
                    continue
                names.append(p)
                total += 512 + (st.st_size + 511) // 512 * 512
                if total >= limit:
                    break
            if total >= limit:
                break
        if total >= limit:
            break
    lst = os.path.join(data, "sys.list")
    with open(lst, "wb") as f:
        f.write(b"\0".join(n.encode() for n in names) + b"\0")
    subprocess.run(["tar", "--null", "--no-recursion", "-T", lst, "-cf", os.path.join(data, "sys.tar")],
                   check=True, stderr=subprocess.DEVNULL)


def tree(data, files):
    d = os.path.join(data, "tree")
    src = open(os.path.join(data, "sys.tar"), "rb").read(256 * MiB)
    rnd = random.Random(42)
    per_dir = 200
    for i in range(files):
        sub = os.path.join(d, "d%03d" % (i // per_dir))
        if i % per_dir == 0:
            os.makedirs(sub, exist_ok=True)
        n = min(int(rnd.lognormvariate(8.5, 1.0)) + 512, 32 * 1024)
        off = rnd.randrange(0, max(1, len(src) - n))
        with open(os.path.join(sub, "f%05d.dat" % i), "wb") as f:
            f.write(src[off:off + n])


def img_layout(data):
    lay = os.path.join(data, "img-layout")
    blobs = os.path.join(lay, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    tar = os.path.join(data, "sys.tar")
    hexd = sha256_file(tar)
    size = os.path.getsize(tar)
    os.link(tar, os.path.join(blobs, hexd))

    def put(obj):
        b = json.dumps(obj, separators=(",", ":")).encode()
        h = hashlib.sha256(b).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(b)
        return h, len(b)

    ch, cs = put({"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hexd]}, "config": {}})
    mh, ms = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                             "digest": "sha256:" + ch, "size": cs},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                              "digest": "sha256:" + hexd, "size": size}]})
    with open(os.path.join(lay, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(lay, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mh, "size": ms,
             "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
    with open(os.path.join(data, "layer.env"), "w") as f:
        f.write("LAYER_DIGEST=sha256:%s\nLAYER_SIZE=%d\n" % (hexd, size))


def main():
    data, size, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    stamp = os.path.join(data, ".stamp")
    want = "%d %d\n" % (size, files)
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    model(data, size)
    systar(data, size)
    tree(data, files)
    img_layout(data)
    with open(stamp, "w") as f:
        f.write(want)


if __name__ == "__main__":
    main()
