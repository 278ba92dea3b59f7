//go:build e2e

package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHubModel mounts a Hugging Face Hub model in a pod: hub-mem (e2e/run.sh)
// serves the gated repo e2e-org/tiny-llm, made of the files in
// MODELCACHE_E2E_HUB_DIR, to the agent's source "hub" (which holds the
// token). The ref leaves out the repo's .bin duplicate.
func TestHubModel(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(e.deleteTestPods)
	want := dirModel(t, mustEnv(t, "MODELCACHE_E2E_HUB_DIR"))
	ref := "hf://e2e-org/tiny-llm@main?source=hub&exclude=*.bin"
	p, d := e.createAndWaitReady(t, modelPod("hub-cold", ref), 3*time.Minute)
	t.Logf("hub-cold Ready after %.3fs (%s from the Hub)", d.Seconds(), mib(want.size()))
	e.checkReader(t, p.Name, want)
	if pins := e.pinsOn(t, ref); len(pins) != 1 {
		t.Errorf("agent pins on %s with one pod mounting it: %q", ref, pins)
	}
}

// TestOCIModel mounts the same files as an OCI artifact: registry-mem
// (e2e/run.sh) pushed MODELCACHE_E2E_HUB_DIR as e2e/tiny-llm:v1, one layer
// per file, to the agent's source "ocireg" (plain HTTP). The ref selects
// the safetensors and JSON files, which leaves the .bin out.
func TestOCIModel(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(e.deleteTestPods)
	want := dirModel(t, mustEnv(t, "MODELCACHE_E2E_HUB_DIR"))
	ref := "oci://" + mustEnv(t, "MODELCACHE_E2E_REGISTRY") + "/e2e/tiny-llm:v1?source=ocireg&include=*.safetensors,*.json"
	p, d := e.createAndWaitReady(t, modelPod("oci-cold", ref), 3*time.Minute)
	t.Logf("oci-cold Ready after %.3fs (%s from the registry)", d.Seconds(), mib(want.size()))
	e.checkReader(t, p.Name, want)
}

// dirModel is the files under dir, but the .bin ones, as the pods must see them.
func dirModel(t *testing.T, dir string) *testModel {
	t.Helper()
	m := &testModel{files: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".bin") {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		m.files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil || len(m.files) == 0 {
		t.Fatalf("read the model's files in %s: %v (%d files)", dir, err, len(m.files))
	}
	return m
}
