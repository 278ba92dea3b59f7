package hf_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/hubtest"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/hf"
)

func client(t *testing.T, hub *hubtest.Hub, token string) *hf.Client {
	t.Helper()
	c, err := hf.New(hf.Options{Endpoint: hub.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func weights(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

var files1 = map[string]hubtest.File{
	"config.json":                      {Data: []byte(`{"model_type":"llama"}`)},
	"tokenizer.json":                   {Data: []byte(`{"version":"1.0"}`)},
	"empty.txt":                        {Data: nil},
	"model-00001-of-00002.safetensors": {Data: weights(300_000, 1), LFS: true},
	"model-00002-of-00002.safetensors": {Data: weights(200_001, 2), LFS: true},
	"original/consolidated.00.pth":     {Data: weights(50_000, 3), LFS: true},
	"sub/dir/generation_config.json":   {Data: []byte(`{}`)},
}

// readAll reads every listed file whole and checks it against want, and
// its LFS digest against its bytes.
func readAll(t *testing.T, m source.Source, l source.Listing, want map[string]hubtest.File) {
	t.Helper()
	var paths []string
	for _, f := range l.Files {
		paths = append(paths, f.Path)
		w, ok := want[f.Path]
		if !ok {
			t.Errorf("listed %q, which the commit does not hold", f.Path)
			continue
		}
		if f.Size != int64(len(w.Data)) {
			t.Errorf("%s: size %d, want %d", f.Path, f.Size, len(w.Data))
		}
		sum := sha256.Sum256(w.Data)
		if w.LFS != (f.Digest != "") || (w.LFS && f.Digest.Hex() != hex.EncodeToString(sum[:])) {
			t.Errorf("%s: digest %q for LFS=%v content sha256 %x", f.Path, f.Digest, w.LFS, sum)
		}
		r, err := m.Open(context.Background(), f, 0, f.Size)
		if err != nil {
			t.Errorf("open %s: %v", f.Path, err)
			continue
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, w.Data) {
			t.Errorf("%s: read %d bytes, %v; want the commit's %d bytes", f.Path, len(got), err, len(w.Data))
		}
	}
	if len(paths) != len(want) {
		t.Errorf("listed %v, want %d files", paths, len(want))
	}
}

func TestListAndReadACommit(t *testing.T) {
	hub := hubtest.Start(t)
	first := hub.Commit("org/llm", "main", files1)
	hub.Tag("org/llm", "v1", first)
	c := client(t, hub, "hf_reader")

	m := c.Model("org/llm", "main")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.Revision != first {
		t.Errorf("main resolved to %s, want %s", l.Revision, first)
	}
	readAll(t, m, l, files1)

	// A range in the middle of an LFS file, through the CDN.
	i := slices.IndexFunc(l.Files, func(f model.File) bool { return f.Path == "model-00001-of-00002.safetensors" })
	r, err := m.Open(context.Background(), l.Files[i], 100_000, 100_100)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, files1[l.Files[i].Path].Data[100_000:100_100]) {
		t.Error("a ranged read returned other bytes")
	}

	// The token went to the Hub and never to the CDN.
	var hubAuth, cdn int
	for _, q := range hub.Requests() {
		switch {
		case q.Server == "cdn" && q.Authorization != "":
			t.Errorf("the CDN got Authorization on %s %s", q.Method, q.Path)
		case q.Server == "cdn":
			cdn++
		case q.Authorization == "Bearer hf_reader":
			hubAuth++
		}
	}
	if cdn == 0 || hubAuth == 0 {
		t.Errorf("%d CDN requests and %d authorized Hub requests: the LFS files did not take the redirect", cdn, hubAuth)
	}

	// The branch moves on: main names the new files, the old commit and
	// the tag still the old ones.
	files2 := map[string]hubtest.File{"config.json": {Data: []byte(`{"model_type":"llama","v":2}`)},
		"model.safetensors": {Data: weights(123_456, 9), LFS: true}}
	second := hub.Commit("org/llm", "main", files2)
	l2, err := c.Model("org/llm", "main").List(context.Background())
	if err != nil || l2.Revision != second {
		t.Fatalf("main after a new commit: %s, %v; want %s", l2.Revision, err, second)
	}
	for rev, want := range map[string]map[string]hubtest.File{"": files2, "v1": files1, first: files1} {
		m := c.Model("org/llm", rev)
		l, err := m.List(context.Background())
		if err != nil {
			t.Fatalf("revision %q: %v", rev, err)
		}
		readAll(t, m, l, want)
	}
}

func TestFilesOfOneCommitWhileTheBranchMoves(t *testing.T) {
	hub := hubtest.Start(t)
	hub.Commit("org/llm", "main", files1)
	c := client(t, hub, "")
	m := c.Model("org/llm", "main")
	l, err := m.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hub.Commit("org/llm", "main", map[string]hubtest.File{"config.json": {Data: []byte("changed")}})
	// Open reads the listed commit, not what main names now.
	readAll(t, m, l, files1)
}

func TestAccessAndMissing(t *testing.T) {
	hub := hubtest.Start(t)
	hub.Commit("org/gated", "main", files1)
	hub.SetAccess("org/gated", hubtest.Gated, "hf_granted")
	hub.Commit("org/private", "main", files1)
	hub.SetAccess("org/private", hubtest.Private, "hf_owner")
	hub.Commit("org/public", "main", files1)
	ctx := context.Background()
	for _, tc := range []struct {
		repo, rev, token string
		class            error
		text             string
	}{
		{"org/gated", "main", "", source.ErrAccessDenied, "401"},
		{"org/gated", "main", "hf_other", source.ErrAccessDenied, "gated repo"},
		{"org/private", "main", "", source.ErrAccessDenied, "private"},
		{"org/private", "main", "hf_other", source.ErrNotFound, "does not exist"},
		{"org/missing", "main", "hf_owner", source.ErrNotFound, "does not exist"},
		{"org/public", "no-such-branch", "", source.ErrNotFound, "no such revision"},
	} {
		_, err := client(t, hub, tc.token).Model(tc.repo, tc.rev).List(ctx)
		if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s@%s with token %q: %v; want %v saying %q", tc.repo, tc.rev, tc.token, err, tc.class, tc.text)
		}
		if err != nil && tc.token != "" && strings.Contains(err.Error(), tc.token) {
			t.Errorf("the token is in the error: %v", err)
		}
	}
	for repo, token := range map[string]string{"org/gated": "hf_granted", "org/private": "hf_owner"} {
		m := client(t, hub, token).Model(repo, "main")
		l, err := m.List(ctx)
		if err != nil {
			t.Fatalf("%s with its token: %v", repo, err)
		}
		readAll(t, m, l, files1)
	}
}

func TestEndlessPagesStop(t *testing.T) {
	hub := hubtest.Start(t)
	hub.Commit("org/llm", "main", files1)
	hub.EndlessPages("org/llm")
	c, err := hf.New(hf.Options{Endpoint: hub.URL, MaxPages: 20})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Model("org/llm", "main").List(context.Background())
	if !errors.Is(err, source.ErrLimit) {
		t.Fatalf("endless pages: %v, want ErrLimit", err)
	}
}
