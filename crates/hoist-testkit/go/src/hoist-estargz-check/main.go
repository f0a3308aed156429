// hoist-estargz-check judges eStargz layers with containerd's own eStargz code
// (github.com/containerd/stargz-snapshotter/estargz, Debian's golang package, GOPATH mode).
//
//	check BLOB TOCDIGEST  open BLOB, verify the TOC JSON against TOCDIGEST (the layer's
//	                      annotation) and every chunk of every regular file against its
//	                      chunkDigest, and every file against its digest; prints JSON
//	                      {"files","chunks","diffID","uncompressedSize"}
//	mktar DIR OUT         a tar of DIR (sorted, uid/gid 0, mtime 0) written by Go's archive/tar
//	build TAR OUT [CHUNK] eStargz of TAR by estargz.Build (what nerdctl and ctr-remote run);
//	                      prints JSON {"tocDigest","diffID","tarDigest"}
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

var time0 = time.Unix(0, 0)

// counter counts the bytes read through it.
type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func fail(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "hoist-estargz-check: "+f+"\n", a...)
	os.Exit(1)
}

func section(path string) (*os.File, *io.SectionReader) {
	f, err := os.Open(path)
	if err != nil {
		fail("%v", err)
	}
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	return f, io.NewSectionReader(f, 0, st.Size())
}

func check(blob, tocDigest string) {
	f, sr := section(blob)
	defer f.Close()
	r, err := estargz.Open(sr)
	if err != nil {
		fail("open %s: %v", blob, err)
	}
	want, err := digest.Parse(tocDigest)
	if err != nil {
		fail("toc digest %q: %v", tocDigest, err)
	}
	v, err := r.VerifyTOC(want)
	if err != nil {
		fail("verify TOC of %s: %v", blob, err)
	}
	files, chunks := 0, 0
	var walk func(e *estargz.TOCEntry, dir string)
	walk = func(e *estargz.TOCEntry, dir string) {
		var names []string
		kids := map[string]*estargz.TOCEntry{}
		e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
			names = append(names, base)
			kids[base] = c
			return true
		})
		sort.Strings(names)
		for _, base := range names {
			c := kids[base]
			name := base
			if dir != "" {
				name = dir + "/" + base
			}
			if c.Type == "dir" {
				walk(c, name)
				continue
			}
			if c.Type != "reg" || c.Size == 0 {
				continue
			}
			files++
			fr, err := r.OpenFile(name)
			if err != nil {
				fail("open file %s: %v", name, err)
			}
			whole := sha256.New()
			for off := int64(0); off < c.Size; {
				ce, ok := r.ChunkEntryForOffset(name, off)
				if !ok {
					fail("%s: no chunk at offset %d", name, off)
				}
				cv, err := v.Verifier(ce)
				if err != nil {
					fail("%s: chunk at %d: %v", name, off, err)
				}
				buf := make([]byte, ce.ChunkSize)
				if _, err := fr.ReadAt(buf, ce.ChunkOffset); err != nil && err != io.EOF {
					fail("%s: read chunk at %d: %v", name, ce.ChunkOffset, err)
				}
				cv.Write(buf)
				if !cv.Verified() {
					fail("%s: chunk at %d does not match its chunkDigest", name, ce.ChunkOffset)
				}
				whole.Write(buf)
				chunks++
				off = ce.ChunkOffset + ce.ChunkSize
			}
			if got := fmt.Sprintf("sha256:%x", whole.Sum(nil)); c.Digest != "" && got != c.Digest {
				fail("%s: content %s, TOC digest %s", name, got, c.Digest)
			}
		}
	}
	root, ok := r.Lookup("")
	if !ok {
		fail("%s: no root in the TOC", blob)
	}
	walk(root, "")
	// The whole blob as any gzip reader sees it: the diff_id.
	if _, err := sr.Seek(0, io.SeekStart); err != nil {
		fail("%v", err)
	}
	zr, err := gzip.NewReader(sr)
	if err != nil {
		fail("gunzip %s: %v", blob, err)
	}
	// The entries in the order the layer holds them (prioritized files first).
	h := sha256.New()
	cr := &counter{r: io.TeeReader(zr, h)}
	tr := tar.NewReader(cr)
	var order []string
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("tar in %s: %v", blob, err)
		}
		order = append(order, strings.TrimSuffix(strings.TrimPrefix(hd.Name, "./"), "/"))
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		fail("gunzip %s: %v", blob, err)
	}
	_, landmark := r.Lookup(estargz.PrefetchLandmark)
	out, _ := json.Marshal(map[string]interface{}{
		"files": files, "chunks": chunks, "diffID": fmt.Sprintf("sha256:%x", h.Sum(nil)), "uncompressedSize": cr.n,
		"order": order, "landmark": landmark,
	})
	fmt.Println(string(out))
}

func mktar(dir, out string) {
	f, err := os.Create(out)
	if err != nil {
		fail("%v", err)
	}
	tw := tar.NewWriter(f)
	var paths []string
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		fail("%v", err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		info, err := os.Lstat(p)
		if err != nil {
			fail("%v", err)
		}
		rel, _ := filepath.Rel(dir, p)
		link := ""
		if info.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			fail("%v", err)
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.ModTime = time0
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			fail("%v", err)
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				fail("%v", err)
			}
			if _, err := io.Copy(tw, src); err != nil {
				fail("%v", err)
			}
			src.Close()
		}
	}
	if err := tw.Close(); err != nil {
		fail("%v", err)
	}
	if err := f.Close(); err != nil {
		fail("%v", err)
	}
}

func build(in, out string, chunk int) {
	f, sr := section(in)
	defer f.Close()
	th := sha256.New()
	if _, err := io.Copy(th, sr); err != nil {
		fail("%v", err)
	}
	opts := []estargz.Option{}
	if chunk > 0 {
		opts = append(opts, estargz.WithChunkSize(chunk))
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, sr.Size()), opts...)
	if err != nil {
		fail("build: %v", err)
	}
	defer blob.Close()
	o, err := os.Create(out)
	if err != nil {
		fail("%v", err)
	}
	if _, err := io.Copy(o, blob); err != nil {
		fail("%v", err)
	}
	if err := o.Close(); err != nil {
		fail("%v", err)
	}
	res, _ := json.Marshal(map[string]string{
		"tocDigest": blob.TOCDigest().String(), "diffID": blob.DiffID().String(),
		"tarDigest": fmt.Sprintf("sha256:%x", th.Sum(nil)),
	})
	fmt.Println(string(res))
}

func main() {
	a := os.Args[1:]
	switch {
	case len(a) == 3 && a[0] == "check":
		check(a[1], a[2])
	case len(a) == 3 && a[0] == "mktar":
		mktar(a[1], a[2])
	case (len(a) == 3 || len(a) == 4) && a[0] == "build":
		chunk := 0
		if len(a) == 4 {
			c, err := strconv.Atoi(a[3])
			if err != nil {
				fail("chunk size %q: %v", a[3], err)
			}
			chunk = c
		}
		build(a[1], a[2], chunk)
	default:
		fail("usage: check BLOB TOCDIGEST | mktar DIR OUT | build TAR OUT [CHUNK]")
	}
}
