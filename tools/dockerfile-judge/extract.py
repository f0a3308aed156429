#!/usr/bin/env python3
"""Assemble a Dockerfile corpus from BuildKit's frontend integration tests.

Reads frontend/dockerfile/dockerfile*_test.go of a BuildKit checkout (not vendored here:
pass its path) and writes one directory per test case that can run offline from one local
busybox base: the test's first Linux Dockerfile and the context files it creates with
fstest.CreateFile / CreateDir / Symlink. Cases naming other images, fetching from the
network, or building their context from Go variables are left out and counted.

    extract.py BUILDKIT_DIR OUT_DIR
"""
import json
import os
import re
import sys

FUNC = re.compile(r"^func (test\w+)\(t \*testing\.T, sb integration\.Sandbox\) \{$", re.M)
OK_IMAGES = {"busybox", "busybox:latest", "scratch"}


def go_string(s, i):
    """Parse a Go string literal at s[i]; returns (value, end) or None."""
    if s[i] == "`":
        j = s.index("`", i + 1)
        return s[i + 1:j], j + 1
    if s[i] != '"':
        return None
    out, j = [], i + 1
    esc = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "r": "\r", "'": "'", "0": "\0"}
    while s[j] != '"':
        if s[j] == "\\":
            c = s[j + 1]
            if c in esc:
                out.append(esc[c])
                j += 2
                continue
            if c == "x":
                out.append(chr(int(s[j + 2:j + 4], 16)))
                j += 4
                continue
            return None
        out.append(s[j])
        j += 1
    return "".join(out), j + 1


def call_args(s, i):
    """s[i] is '(' : the text up to its matching ')'."""
    depth, j, n = 0, i, len(s)
    while j < n:
        c = s[j]
        if c in "`\"":
            r = go_string(s, j)
            if r is None:
                return None
            j = r[1]
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[i + 1:j]
        j += 1
    return None


def split_top(args):
    parts, depth, cur, j = [], 0, "", 0
    while j < len(args):
        c = args[j]
        if c in "`\"":
            r = go_string(args, j)
            if r is None:
                return None
            cur += args[j:r[1]]
            j = r[1]
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
        j += 1
    if cur.strip():
        parts.append(cur.strip())
    return parts


def literal(expr, dockerfile):
    expr = expr.strip()
    if expr == "dockerfile":
        return dockerfile
    m = re.fullmatch(r"\[\]byte\((.*)\)", expr, re.S)
    if m:
        expr = m.group(1).strip()
    if expr and expr[0] in "`\"":
        r = go_string(expr, 0)
        if r and r[1] == len(expr):
            return r[0]
    return None


def case(body):
    m = re.search(r"dockerfile :?= \[\]byte\(", body)
    if not m:
        return None, "no dockerfile literal"
    rest = body[m.end():].lstrip()
    if rest.startswith("integration.UnixOrWindows("):
        rest = rest[len("integration.UnixOrWindows("):].lstrip()
    if not rest or rest[0] not in "`\"":
        return None, "dockerfile built from Go code"
    df, _ = go_string(rest, 0)
    # integration.Tmpdir(t, ...) today; tmpdir(...) in older releases
    m2 = re.search(r"(integration\.Tmpdir|\btmpdir)\(", body)
    if not m2:
        return None, "no Tmpdir context"
    args = call_args(body, m2.end() - 1)
    parts = split_top(args or "") if args is not None else None
    if parts is None:
        return None, "unparsed context"
    files = []
    for p in parts:
        if p == "t":
            continue
        fm = re.fullmatch(r"fstest\.(CreateFile|CreateDir|Symlink)\((.*)\)", p, re.S)
        if not fm:
            return None, "context from Go code"
        a = split_top(fm.group(2))
        if fm.group(1) == "CreateFile":
            name, data = literal(a[0], df), literal(a[1], df)
            if name is None or data is None:
                return None, "context from Go code"
            files.append({"kind": "file", "name": name, "data": data, "mode": int(a[2], 8)})
        elif fm.group(1) == "CreateDir":
            name = literal(a[0], df)
            if name is None:
                return None, "context from Go code"
            files.append({"kind": "dir", "name": name, "mode": int(a[1], 8)})
        else:
            old, new = literal(a[0], df), literal(a[1], df)
            if old is None or new is None:
                return None, "context from Go code"
            files.append({"kind": "symlink", "name": new, "target": old})
    if not any(f["name"] == "Dockerfile" for f in files):
        return None, "no Dockerfile in context"
    if "%s" in df or "%d" in df or "%v" in df:
        return None, "dockerfile templated"
    stages = set()
    for line in df.splitlines():
        w = line.split()
        if w and w[0].upper() == "FROM":
            w = [x for x in w[1:] if not x.startswith("--")]
            if not w:
                return None, "bad FROM"
            img = w[0].lower()
            if img not in OK_IMAGES and img not in stages and not img.startswith("$"):
                return None, f"image {img}"
            if len(w) >= 3 and w[1].lower() == "as":
                stages.add(w[2].lower())
        if w and w[0].upper() in ("ADD",) and re.search(r"https?://|git@|\.git\b", line):
            return None, "network ADD"
    if re.search(r"# *syntax=", df):
        return None, "syntax directive (other frontend)"
    return {"dockerfile": df, "files": files}, None


def main():
    src, out = sys.argv[1], sys.argv[2]
    d = os.path.join(src, "frontend/dockerfile")
    os.makedirs(out, exist_ok=True)
    skipped, n = {}, 0
    for fn in sorted(os.listdir(d)):
        if not (fn.startswith("dockerfile") and fn.endswith("_test.go")):
            continue
        text = open(os.path.join(d, fn)).read()
        starts = [m for m in FUNC.finditer(text)]
        for k, m in enumerate(starts):
            end = starts[k + 1].start() if k + 1 < len(starts) else len(text)
            c, why = case(text[m.end():end])
            if c is None:
                skipped[why] = skipped.get(why, 0) + 1
                continue
            cd = os.path.join(out, f"{fn[:-8]}.{m.group(1)}")
            os.makedirs(cd, exist_ok=True)
            with open(os.path.join(cd, "case.json"), "w") as f:
                json.dump(c, f, indent=1)
            n += 1
    json.dump({"cases": n, "skipped": skipped}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
