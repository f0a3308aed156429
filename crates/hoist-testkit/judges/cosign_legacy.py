#!/usr/bin/env python3
"""An independent signer and verifier of cosign's legacy signature format, written from
cosign's specs/SIGNATURE_SPEC.md and go-securesystemslib's `encrypted` package (not from
hoist's code), with Python `cryptography`, `hashlib.scrypt` and PyNaCl's secretbox.

Commands (registry over plain HTTP on 127.0.0.1):
  genkey PREFIX [--kind ec|rsa|ed25519] [--password P]   PREFIX.key (cosign-encrypted with
                        a password, else unencrypted PKCS#8) and PREFIX.pub
  pubkey KEY [--password P]          print the PKIX public key PEM of a key (opens cosign's
                                     encrypted format)
  sign URL REPO DIGEST KEY [--identity REF] [--password P] [--claim-digest D] [--tamper]
                                     add a simple-signing layer to REPO:sha256-<hex>.sig
  verify URL REPO DIGEST PUB [--identity-repo HOST/REPO]
                                     exit 0 when a layer verifies, prints one JSON per layer
  attest URL REPO DIGEST KEY PREDICATE --type URI --name HOST/REPO [--password P] [--claim-digest D]
                                     cosign attest's legacy layout: a DSSE envelope (in-toto
                                     Statement v0.1) layer of REPO:sha256-<hex>.att
  verify-att URL REPO DIGEST PUB [--type URI]
                                     every DSSE layer of the .att tag: signature over PAE,
                                     statement validated by the in-toto-attestation package
                                     (v1), about DIGEST; one JSON per layer, exit 0 when one is ok
"""
import argparse
import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

SIMPLE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGANN = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def b64(b):
    return base64.b64encode(b).decode()


def seal(plain, password):
    import nacl.secret
    import nacl.utils
    salt = os.urandom(32)
    key = hashlib.scrypt(password, salt=salt, n=32768, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    nonce = nacl.utils.random(24)
    box = nacl.secret.SecretBox(key)
    ct = box.encrypt(plain, nonce).ciphertext  # tag + ciphertext, as NaCl secretbox
    doc = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt)},
           "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)}, "ciphertext": b64(ct)}
    return json.dumps(doc).encode()


def unseal(sealed, password):
    import nacl.secret
    doc = json.loads(sealed)
    assert doc["kdf"]["name"] == "scrypt" and doc["cipher"]["name"] == "nacl/secretbox", doc
    p = doc["kdf"]["params"]
    key = hashlib.scrypt(password, salt=base64.b64decode(doc["kdf"]["salt"]), n=p["N"], r=p["r"], p=p["p"],
                         maxmem=512 * 1024 * 1024, dklen=32)
    return nacl.secret.SecretBox(key).decrypt(base64.b64decode(doc["ciphertext"]),
                                              base64.b64decode(doc["cipher"]["nonce"]))


def pem_blocks(text):
    lines = text.strip().splitlines()
    label = lines[0][len("-----BEGIN "):-5]
    body = base64.b64decode("".join(l for l in lines[1:-1]))
    return label, body


def load_private(path, password):
    text = open(path).read()
    label, body = pem_blocks(text)
    if label in ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"):
        der = unseal(body, password.encode())
        return serialization.load_der_private_key(der, None)
    return serialization.load_pem_private_key(text.encode(), None)


def sign_bytes(key, data):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def verify_bytes(pub, data, sig):
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            pub.verify(sig, data)
        return True
    except Exception:
        return False


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_manifest(url, repo, ref):
    st, _, body = http("GET", f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
    return body if st == 200 else None


def get_blob(url, repo, digest):
    st, _, body = http("GET", f"{url}/v2/{repo}/blobs/{digest}")
    assert st == 200, (st, digest)
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest, "blob digest mismatch"
    return body


def put_blob(url, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    st, h, _ = http("POST", f"{url}/v2/{repo}/blobs/uploads/")
    assert st == 202, st
    loc = h.get("Location") or h.get("location")
    if loc.startswith("/"):
        loc = url + loc
    sep = "&" if "?" in loc else "?"
    st, _, body = http("PUT", f"{loc}{sep}digest={digest}", data=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert st == 201, (st, body)
    return digest


def cmd_genkey(a):
    if a.kind in ("ec", "ec-sec1"):
        k = ec.generate_private_key(ec.SECP256R1())
    elif a.kind == "rsa":
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        k = ed25519.Ed25519PrivateKey.generate()
    der = k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if a.password is not None:
        body = base64.encodebytes(seal(der, a.password.encode())).decode().replace("\n", "")
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        label = "ENCRYPTED %s PRIVATE KEY" % a.label
        text = "-----BEGIN %s-----\n" % label + "\n".join(lines) + "\n-----END %s-----\n" % label
    elif a.kind == "ec-sec1":
        # the older OpenSSL form: SEC1 `EC PRIVATE KEY`
        text = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption()).decode()
    else:
        text = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()
    open(a.prefix + ".key", "w").write(text)
    open(a.prefix + ".pub", "wb").write(k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def cmd_pubkey(a):
    k = load_private(a.key, a.password or "")
    sys.stdout.write(k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def cmd_sign(a):
    key = load_private(a.key, a.password or "")
    claim = a.claim_digest or a.digest
    payload = json.dumps({"critical": {"identity": {"docker-reference": a.identity},
                                       "image": {"docker-manifest-digest": claim},
                                       "type": "cosign container image signature"},
                          "optional": None}, separators=(",", ":")).encode()
    sig = sign_bytes(key, payload)
    if a.tamper:
        payload = payload.replace(b"cosign container image signature", b"cosign container image signaturE")
    tag = a.digest.replace(":", "-") + ".sig"
    old = get_manifest(a.url, a.repo, tag)
    layers = json.loads(old)["layers"] if old else []
    pd = put_blob(a.url, a.repo, payload)
    layers.append({"mediaType": SIMPLE, "size": len(payload), "digest": pd, "annotations": {SIGANN: b64(sig)}})
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
    cd = put_blob(a.url, a.repo, config)
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                               "digest": cd}, "layers": layers}).encode()
    st, _, body = http("PUT", f"{a.url}/v2/{a.repo}/manifests/{tag}", data=m, headers={"Content-Type": OCI_MANIFEST})
    assert st == 201, (st, body)


def cmd_verify(a):
    pub = serialization.load_pem_public_key(open(a.pub, "rb").read())
    tag = a.digest.replace(":", "-") + ".sig"
    raw = get_manifest(a.url, a.repo, tag)
    if raw is None:
        print(json.dumps({"error": "no signature"}))
        sys.exit(1)
    m = json.loads(raw)
    ok = False
    for l in m.get("layers", []):
        if l.get("mediaType") != SIMPLE:
            continue
        payload = get_blob(a.url, a.repo, l["digest"])
        sig = base64.b64decode(l.get("annotations", {}).get(SIGANN, ""))
        res = {"layer": l["digest"], "signature": verify_bytes(pub, payload, sig)}
        if res["signature"]:
            p = json.loads(payload)
            c = p["critical"]
            res["type"] = c["type"] == "cosign container image signature"
            res["digest"] = c["image"]["docker-manifest-digest"] == a.digest
            ref = c["identity"]["docker-reference"]
            res["identity"] = ref
            repo_of = ref.split("@")[0]
            last = repo_of.rsplit("/", 1)
            if ":" in last[-1]:
                repo_of = repo_of[: repo_of.rfind(":")]
            res["identityMatches"] = a.identity_repo is None or repo_of == a.identity_repo
            res["ok"] = res["type"] and res["digest"] and res["identityMatches"]
            ok = ok or res["ok"]
        print(json.dumps(res))
    sys.exit(0 if ok else 1)


DSSE = "application/vnd.dsse.envelope.v1+json"
INTOTO = "application/vnd.in-toto+json"


def pae(payload_type, payload):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def cmd_attest(a):
    """cosign attest's legacy layout: a DSSE envelope layer of REPO:sha256-<hex>.att, the
    statement as cosign v2 writes it (in-toto Statement v0.1, subject named by repository)."""
    key = load_private(a.key, a.password or "")
    predicate = json.load(open(a.predicate))
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": a.type,
                            "subject": [{"name": a.name, "digest": {"sha256": (a.claim_digest or a.digest).split(":", 1)[1]}}],
                            "predicate": predicate}, separators=(",", ":")).encode()
    sig = sign_bytes(key, pae(INTOTO, statement))
    env = json.dumps({"payloadType": INTOTO, "payload": b64(statement),
                      "signatures": [{"keyid": "", "sig": b64(sig)}]}, separators=(",", ":")).encode()
    tag = a.digest.replace(":", "-") + ".att"
    old = get_manifest(a.url, a.repo, tag)
    layers = json.loads(old)["layers"] if old else []
    ed = put_blob(a.url, a.repo, env)
    layers.append({"mediaType": DSSE, "size": len(env), "digest": ed,
                   "annotations": {SIGANN: "", "predicateType": a.type}})
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
    cd = put_blob(a.url, a.repo, config)
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                               "digest": cd}, "layers": layers}).encode()
    st, _, body = http("PUT", f"{a.url}/v2/{a.repo}/manifests/{tag}", data=m, headers={"Content-Type": OCI_MANIFEST})
    assert st == 201, (st, body)


def cmd_verify_att(a):
    """Every DSSE layer of REPO:sha256-<hex>.att: the envelope's signature over PAE with the
    key, the statement checked by the in-toto-attestation package (v1) and about DIGEST."""
    pub = serialization.load_pem_public_key(open(a.pub, "rb").read())
    raw = get_manifest(a.url, a.repo, a.digest.replace(":", "-") + ".att")
    if raw is None:
        print(json.dumps({"error": "no attestation"}))
        sys.exit(1)
    ok = False
    for l in json.loads(raw).get("layers", []):
        if l.get("mediaType") != DSSE:
            continue
        env = json.loads(get_blob(a.url, a.repo, l["digest"]))
        payload = base64.b64decode(env["payload"])
        res = {"layer": l["digest"], "payloadType": env["payloadType"] == INTOTO,
               "signature": any(verify_bytes(pub, pae(env["payloadType"], payload), base64.b64decode(s["sig"]))
                                for s in env["signatures"])}
        if res["signature"]:
            st = json.loads(payload)
            from google.protobuf import json_format
            from in_toto_attestation.v1 import statement as intoto
            from in_toto_attestation.v1 import statement_pb2
            try:
                intoto.Statement.copy_from_pb(json_format.ParseDict(st, statement_pb2.Statement())).validate()
                res["inToto"] = True
            except Exception as e:  # noqa: BLE001
                res["inToto"] = str(e)
            res["predicateType"] = st.get("predicateType")
            res["digest"] = any(s.get("digest", {}).get("sha256") == a.digest.split(":", 1)[1]
                                for s in st.get("subject", []))
            res["annotation"] = l.get("annotations", {}).get("predicateType") == st.get("predicateType")
            res["statement"] = st
            res["ok"] = res["payloadType"] and res["inToto"] is True and res["digest"] and res["annotation"] and \
                (a.type is None or st.get("predicateType") == a.type)
            ok = ok or res["ok"]
        print(json.dumps(res))
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("genkey")
    g.add_argument("prefix")
    g.add_argument("--kind", default="ec")
    g.add_argument("--password")
    g.add_argument("--label", default="SIGSTORE", help="SIGSTORE, or COSIGN for cosign's older PEM type")
    p = sub.add_parser("pubkey")
    p.add_argument("key")
    p.add_argument("--password")
    s = sub.add_parser("sign")
    for n in ("url", "repo", "digest", "key"):
        s.add_argument(n)
    s.add_argument("--identity", required=True)
    s.add_argument("--password")
    s.add_argument("--claim-digest")
    s.add_argument("--tamper", action="store_true")
    v = sub.add_parser("verify")
    for n in ("url", "repo", "digest", "pub"):
        v.add_argument(n)
    v.add_argument("--identity-repo")
    t = sub.add_parser("attest")
    for n in ("url", "repo", "digest", "key", "predicate"):
        t.add_argument(n)
    t.add_argument("--type", required=True)
    t.add_argument("--name", required=True)
    t.add_argument("--password")
    t.add_argument("--claim-digest")
    w = sub.add_parser("verify-att")
    for n in ("url", "repo", "digest", "pub"):
        w.add_argument(n)
    w.add_argument("--type")
    a = ap.parse_args()
    {"genkey": cmd_genkey, "pubkey": cmd_pubkey, "sign": cmd_sign, "verify": cmd_verify,
     "attest": cmd_attest, "verify-att": cmd_verify_att}[a.cmd](a)


if __name__ == "__main__":
    main()
