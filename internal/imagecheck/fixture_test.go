package imagecheck

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The binaries the fixtures hold are real Go builds of testdata/hello (and
// testdata/hellocgo), cross-compiled like the release; built once per run.
var (
	buildMu    sync.Mutex
	buildCache = map[string][]byte{}
	buildDir   string
)

// goBuild builds ./testdata/PKG for linux/ARCH with env (e.g.
// CGO_ENABLED=0) and flags, and returns the binary.
func goBuild(t *testing.T, pkg, arch string, env []string, flags ...string) []byte {
	t.Helper()
	key := strings.Join(append(append([]string{pkg, arch}, env...), flags...), " ")
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := buildCache[key]; ok {
		return b
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "imagecheck-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, strings.NewReplacer(" ", "_", "/", "_", "=", "_").Replace(key))
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, "./testdata/"+pkg)...)
	cmd.Env = append(append(os.Environ(), "GOOS=linux", "GOARCH="+arch), env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s for %s: %v\n%s", pkg, arch, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	buildCache[key] = b
	return b
}

// static is a release-like build: CGO_ENABLED=0, -trimpath.
func static(t *testing.T, arch string) []byte {
	return goBuild(t, "hello", arch, []string{"CGO_ENABLED=0"}, "-trimpath")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// layer is one layer of a fixture image: path (no leading slash) →
// content; a nil content is a whiteout of that path.
type layer map[string][]byte

// fixtureImage is one platform's image in a fixture tar.
type fixtureImage struct {
	arch       string // index entry platform
	configArch string // config architecture; arch if empty
	layers     []layer
	gzip       bool
}

// fixture builds an image-layout tar the way an OCI tool would, with the
// mistakes a test asks for.
type fixture struct {
	blobs map[string][]byte
}

func (f *fixture) blob(mediaType string, b []byte) descriptor {
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	f.blobs[d] = b
	return descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tarOf(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		content := files[n]
		name := n
		if content == nil {
			dir, base := filepath.Split(n)
			name = dir + ".wh." + base
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (f *fixture) manifest(t *testing.T, img fixtureImage) descriptor {
	t.Helper()
	cfgArch := img.configArch
	if cfgArch == "" {
		cfgArch = img.arch
	}
	var layers []descriptor
	var diffIDs []string
	for _, l := range img.layers {
		raw := tarOf(t, l)
		sum := sha256.Sum256(raw)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
		if img.gzip {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(raw)
			zw.Close()
			layers = append(layers, f.blob(mtLayerGzip, z.Bytes()))
		} else {
			layers = append(layers, f.blob(mtLayerTar, raw))
		}
	}
	cfg := f.blob("application/vnd.oci.image.config.v1+json", mustJSON(t, map[string]any{
		"architecture": cfgArch, "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}))
	m := f.blob(mtOCIManifest, mustJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest, "config": cfg, "layers": layers,
	}))
	m.Platform = &platform{Architecture: img.arch, OS: "linux"}
	return m
}

// write writes the images under one image index and returns the tar's
// path; corrupt, if set, may change blobs before they are written.
func (f *fixture) write(t *testing.T, imgs []fixtureImage, corrupt func(blobs map[string][]byte)) string {
	t.Helper()
	var ms []descriptor
	for _, img := range imgs {
		ms = append(ms, f.manifest(t, img))
	}
	idx := f.blob(mtOCIIndex, mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": mtOCIIndex, "manifests": ms}))
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": mustJSON(t, map[string]any{"schemaVersion": 2, "manifests": []descriptor{idx}}),
	}
	if corrupt != nil {
		corrupt(f.blobs)
	}
	for d, b := range f.blobs {
		files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] = b
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(p, tarOf(t, files), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFixture(t *testing.T, imgs ...fixtureImage) string {
	t.Helper()
	return (&fixture{blobs: map[string][]byte{}}).write(t, imgs, nil)
}

// binaries is a layer with every release binary set to b.
func binaries(b []byte) layer {
	l := layer{"etc/passwd": []byte("root:x:0:0::/:/sbin/nologin\n")}
	for _, n := range releaseBinaries {
		l["usr/local/bin/"+n] = b
	}
	return l
}
