package hubtest

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/testenv"
)

// The oracle test: the official JS client, @huggingface/hub, downloads
// snapshots from the fixture, and what it writes must be what the fixture
// holds. Were the fixture to stray from the Hub's protocol (a relative Link,
// a probe without Content-Range, an ETag missing after the CDN redirect,
// paths-info answering more than one entry), the client would fail or
// quietly download less, and this test would say so.

const hfjsVersion = "2.17.5"

// oracle returns the node binary and the npm prefix holding the client:
// $MODELCACHE_HFJS or <repo>/bin/hfjs, which `make tools` fills.
func oracle(t *testing.T) (node, prefix string) {
	t.Helper()
	prefix = os.Getenv("MODELCACHE_HFJS")
	if prefix == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			t.Fatalf("hubtest: %v", err)
		}
		prefix = filepath.Join(root, "bin", "hfjs")
	}
	manifest := filepath.Join(prefix, "node_modules", "@huggingface", "hub", "package.json")
	raw, err := os.ReadFile(manifest)
	var pkg struct{ Version string }
	if err == nil {
		err = json.Unmarshal(raw, &pkg)
	}
	if err != nil || pkg.Version != hfjsVersion {
		testenv.Missing(t, fmt.Sprintf("hubtest: @huggingface/hub %s not in %s (%v, version %q); run `make tools` or set MODELCACHE_HFJS to an npm prefix holding it",
			hfjsVersion, prefix, err, pkg.Version))
	}
	node, err = exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "hubtest: node not found; install Node.js 20 or later for the oracle test")
	}
	return node, prefix
}

type snapshot struct {
	Version string
	Commit  string
	Ref     *string // refs/<revision>; nil when the client wrote none
	Files   []snapFile
	Error   *struct {
		Name, Message, URL string
		StatusCode         int
	}
}

type snapFile struct {
	Path   string
	Size   int64
	SHA256 string
	Blob   string // the name of the blob the file links to in the cache
}

// snapshotDownload runs the JS client's snapshotDownload into a fresh
// cache; failed reports whether it exited non-zero.
func snapshotDownload(t *testing.T, h *Hub, repo, rev, token string) (s snapshot, failed bool) {
	t.Helper()
	node, prefix := oracle(t)
	script, err := filepath.Abs(filepath.Join("testdata", "snapshot.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{script, h.URL, repo, rev, t.TempDir()}
	if token != "" {
		args = append(args, token)
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(), "HFJS="+prefix)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) || ctx.Err() != nil {
		t.Fatalf("node %s: %v (%v)\n%s", strings.Join(args, " "), runErr, ctx.Err(), stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("snapshot.mjs printed no result (%v): %v\nstdout:\n%s\nstderr:\n%s", runErr, err, stdout.Bytes(), stderr.Bytes())
	}
	if s.Version != hfjsVersion {
		t.Fatalf("snapshot.mjs ran @huggingface/hub %q, want %s", s.Version, hfjsVersion)
	}
	if (runErr != nil) != (s.Error != nil) {
		t.Fatalf("exit %v but error %+v\nstderr:\n%s", runErr, s.Error, stderr.Bytes())
	}
	return s, runErr != nil
}

// want is what a snapshot of files must hold, computed here without the
// fixture's code: blobs are named by sha256 for LFS files and by git blob
// sha1 for the others (the JS client names them after paths-info).
func want(files map[string]File) []snapFile {
	var out []snapFile
	for _, p := range slices.Sorted(maps.Keys(files)) {
		f := files[p]
		sum := sha256.Sum256(f.Data)
		blob := hex.EncodeToString(sum[:])
		if !f.LFS {
			h := sha1.New()
			fmt.Fprintf(h, "blob %d\x00", len(f.Data))
			h.Write(f.Data)
			blob = hex.EncodeToString(h.Sum(nil))
		}
		out = append(out, snapFile{Path: p, Size: int64(len(f.Data)), SHA256: hex.EncodeToString(sum[:]), Blob: blob})
	}
	return out
}

func checkSnapshot(t *testing.T, s snapshot, failed bool, commit, ref string, files map[string]File) {
	t.Helper()
	if failed {
		t.Fatalf("snapshotDownload failed: %+v", *s.Error)
	}
	if s.Commit != commit {
		t.Errorf("commit %s, want %s", s.Commit, commit)
	}
	switch {
	case ref == "" && s.Ref != nil:
		t.Errorf("ref written (%s), want none", *s.Ref)
	case ref != "" && (s.Ref == nil || *s.Ref != ref):
		t.Errorf("ref %v, want %s", s.Ref, ref)
	}
	if w := want(files); !slices.Equal(s.Files, w) {
		t.Errorf("files:\n got %+v\nwant %+v", s.Files, w)
	}
}

func checkFailure(t *testing.T, s snapshot, failed bool, status int) {
	t.Helper()
	if !failed {
		t.Fatalf("snapshotDownload succeeded (commit %s), want HTTP %d", s.Commit, status)
	}
	if s.Error.StatusCode != status {
		t.Errorf("error %+v, want HTTP %d", *s.Error, status)
	}
}

// pseudoRandom returns n bytes that depend only on seed.
func pseudoRandom(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func TestOracleSnapshot(t *testing.T) {
	oracle(t) // skip before building anything when the client is missing
	h := Start(t)
	v1 := map[string]File{
		".gitattributes":                           {Data: []byte("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")},
		"README.md":                                {Data: []byte("# model\n")},
		"config.json":                              {Data: []byte(`{"hidden_size": 64}`)},
		"empty.txt":                                {Data: nil},
		"tokenizer/tokenizer.json":                 {Data: []byte(`{"version": "1.0"}`)},
		"tokenizer/special/added_tokens.json":      {Data: []byte(`{"<pad>": 0}`)},
		"dir with space/a+b.txt":                   {Data: []byte("odd names survive")},
		"weights/model-00001-of-00002.safetensors": {Data: pseudoRandom(1, 256<<10), LFS: true},
		"weights/model-00002-of-00002.safetensors": {Data: pseudoRandom(2, 100<<10+3), LFS: true},
		"weights/empty.safetensors":                {Data: []byte{}, LFS: true},
	}
	c1 := h.Commit("org/model", "main", v1)
	h.Tag("org/model", "v1.0", c1)

	t.Run("branch", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/model", "main", "")
		checkSnapshot(t, s, failed, c1, c1, v1)
		// 10 files and 4 directories, 2 a page: the client followed Link.
		var pages int
		for _, r := range h.Requests() {
			if strings.HasPrefix(r.Path, "/api/models/org/model/tree/") {
				pages++
			}
		}
		if pages != 7 {
			t.Errorf("%d tree pages fetched, want 7", pages)
		}
	})

	v2 := maps.Clone(v1)
	v2["config.json"] = File{Data: []byte(`{"hidden_size": 128}`)}
	v2["generation_config.json"] = File{Data: []byte(`{}`)}
	v2["weights/model-00002-of-00002.safetensors"] = File{Data: pseudoRandom(3, 5000), LFS: true}
	delete(v2, "tokenizer/special/added_tokens.json")
	c2 := h.Commit("org/model", "main", v2)

	t.Run("branch moved", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/model", "main", "")
		checkSnapshot(t, s, failed, c2, c2, v2)
	})
	t.Run("tag", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/model", "v1.0", "")
		checkSnapshot(t, s, failed, c1, c1, v1)
	})
	t.Run("commit", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/model", c1, "")
		checkSnapshot(t, s, failed, c1, "", v1)
	})
	t.Run("missing revision", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/model", "nope", "")
		checkFailure(t, s, failed, 404)
	})
	t.Run("missing repo", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/nothing", "main", "")
		checkFailure(t, s, failed, 401)
	})
}

func TestOracleAccess(t *testing.T) {
	oracle(t)
	h := Start(t)
	files := map[string]File{
		"config.json":       {Data: []byte(`{"gated": true}`)},
		"model.safetensors": {Data: pseudoRandom(4, 70000), LFS: true},
	}
	gated := h.Commit("org/gated", "main", files)
	h.SetAccess("org/gated", Gated, "hf_allowed")
	private := h.Commit("org/private", "main", files)
	h.SetAccess("org/private", Private, "hf_allowed")

	t.Run("gated without token", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/gated", "main", "")
		checkFailure(t, s, failed, 401)
	})
	t.Run("gated with another token", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/gated", "main", "hf_other")
		checkFailure(t, s, failed, 403)
	})
	t.Run("gated with token", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/gated", "main", "hf_allowed")
		checkSnapshot(t, s, failed, gated, gated, files)
	})
	t.Run("private without token", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/private", "main", "")
		checkFailure(t, s, failed, 401)
	})
	t.Run("private with another token", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/private", "main", "hf_other")
		checkFailure(t, s, failed, 404)
	})
	t.Run("private with token", func(t *testing.T) {
		s, failed := snapshotDownload(t, h, "org/private", "main", "hf_allowed")
		checkSnapshot(t, s, failed, private, private, files)
	})

	// The token went to the hub with every request of the runs that had it,
	// and never to the CDN, which is another origin.
	var hubAuth, cdn int
	for _, r := range h.Requests() {
		switch {
		case r.Server == "cdn" && r.Authorization != "":
			t.Errorf("Authorization %q reached the CDN: %+v", r.Authorization, r)
		case r.Server == "cdn":
			cdn++
		case r.Authorization == "Bearer hf_allowed":
			hubAuth++
		}
	}
	if cdn == 0 || hubAuth == 0 {
		t.Errorf("%d CDN requests, %d hub requests with the token: want some of each", cdn, hubAuth)
	}
}
