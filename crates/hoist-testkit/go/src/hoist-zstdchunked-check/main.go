// hoist-zstdchunked-check judges zstd:chunked layers with containers/storage's own code
// (github.com/containers/storage/pkg/chunked, Debian's golang package 1.43, GOPATH mode) and
// tar-split's (github.com/vbatts/tar-split, which containers/storage rebuilds tars with).
//
//	apply BLOB ANNOTATIONS DEST  a partial pull: chunked.GetDiffer reads the TOC the layer's
//	                             annotations (a JSON object) name and checks its checksum, then
//	                             the differ's ApplyDiff fetches every file by its TOC offsets
//	                             (ranged reads of BLOB) into DEST; prints JSON {"size"}
//	tarsplit BLOB ANNOTATIONS    the tar rebuilt by tar-split's asm from the layer's tar-split
//	                             frame (io.github.containers.zstd-chunked.tarsplit-position) and
//	                             the files of the layer; prints JSON {"tarDigest"}
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"path/filepath"

	storage "github.com/containers/storage"
	_ "github.com/containers/storage/drivers/vfs"
	"github.com/containers/storage/pkg/archive"
	"github.com/containers/storage/pkg/chunked"
	"github.com/klauspost/compress/zstd"
	"github.com/vbatts/tar-split/tar/asm"
	tsstorage "github.com/vbatts/tar-split/tar/storage"
)

func fail(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "hoist-zstdchunked-check: "+f+"\n", a...)
	os.Exit(1)
}

// blobFile serves ranged reads of a local blob, as a registry serves Range requests.
type blobFile struct{ f *os.File }

func (b blobFile) GetBlobAt(chunks []chunked.ImageSourceChunk) (chan io.ReadCloser, chan error, error) {
	streams := make(chan io.ReadCloser)
	errs := make(chan error)
	go func() {
		for _, c := range chunks {
			streams <- ioutil.NopCloser(io.NewSectionReader(b.f, int64(c.Offset), int64(c.Length)))
		}
		close(streams)
		close(errs)
	}()
	return streams, errs, nil
}

func annotations(arg string) map[string]string {
	m := map[string]string{}
	if err := json.Unmarshal([]byte(arg), &m); err != nil {
		fail("annotations %q: %v", arg, err)
	}
	return m
}

func apply(blob, ann, dest string) {
	tmp, err := ioutil.TempDir("", "hoist-zstdchunked-")
	if err != nil {
		fail("%v", err)
	}
	defer os.RemoveAll(tmp)
	conf := filepath.Join(tmp, "storage.conf")
	text := fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n[storage.options]\npull_options = {enable_partial_images = \"true\", use_hard_links = \"false\", ostree_repos = \"\"}\n",
		filepath.Join(tmp, "run"), filepath.Join(tmp, "graph"))
	if err := ioutil.WriteFile(conf, []byte(text), 0o644); err != nil {
		fail("%v", err)
	}
	os.Setenv("CONTAINERS_STORAGE_CONF", conf)
	store, err := storage.GetStore(storage.StoreOptions{
		RunRoot: filepath.Join(tmp, "run"), GraphRoot: filepath.Join(tmp, "graph"), GraphDriverName: "vfs",
	})
	if err != nil {
		fail("store: %v", err)
	}
	defer store.Shutdown(true)
	f, err := os.Open(blob)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	differ, err := chunked.GetDiffer(context.Background(), store, st.Size(), annotations(ann), blobFile{f})
	if err != nil {
		fail("GetDiffer %s: %v", blob, err)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		fail("%v", err)
	}
	out, err := differ.ApplyDiff(dest, &archive.TarOptions{})
	if err != nil {
		fail("ApplyDiff %s: %v", blob, err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{"size": out.Size})
}

// files of the layer by name, read with Go's tar reader from the whole zstd stream.
type files map[string][]byte

func (m files) Get(name string) (io.ReadCloser, error) {
	b, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("no file %q in the layer", name)
	}
	return ioutil.NopCloser(bytes.NewReader(b)), nil
}

func tarsplit(blob, ann string) {
	data, err := ioutil.ReadFile(blob)
	if err != nil {
		fail("%v", err)
	}
	var off, length, ulen int64
	pos := annotations(ann)["io.github.containers.zstd-chunked.tarsplit-position"]
	if _, err := fmt.Sscanf(pos, "%d:%d:%d", &off, &length, &ulen); err != nil {
		fail("tarsplit-position %q: %v", pos, err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		fail("%v", err)
	}
	split, err := dec.DecodeAll(data[off:off+length], nil)
	if err != nil {
		fail("tar-split frame: %v", err)
	}
	if int64(len(split)) != ulen {
		fail("tar-split is %d bytes, the annotation says %d", len(split), ulen)
	}
	zr, err := zstd.NewReader(bytes.NewReader(data))
	if err != nil {
		fail("%v", err)
	}
	m := files{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("layer tar: %v", err)
		}
		b, err := ioutil.ReadAll(tr)
		if err != nil {
			fail("%v", err)
		}
		m[h.Name] = b
	}
	rebuilt := asm.NewOutputTarStream(m, tsstorage.NewJSONUnpacker(bytes.NewReader(split)))
	defer rebuilt.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rebuilt); err != nil {
		fail("tar-split reassembly: %v", err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]string{"tarDigest": fmt.Sprintf("sha256:%x", h.Sum(nil))})
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: apply BLOB ANNOTATIONS DEST | tarsplit BLOB ANNOTATIONS")
	}
	switch {
	case os.Args[1] == "apply" && len(os.Args) == 5:
		apply(os.Args[2], os.Args[3], os.Args[4])
	case os.Args[1] == "tarsplit" && len(os.Args) == 4:
		tarsplit(os.Args[2], os.Args[3])
	default:
		fail("usage: apply BLOB ANNOTATIONS DEST | tarsplit BLOB ANNOTATIONS")
	}
}
