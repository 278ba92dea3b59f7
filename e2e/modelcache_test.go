//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcache/modelcache/pkg/prefetch"
)

// TestModelCache: a ModelCache, with no Deployment anywhere, brings its
// model to the node and pins it; modelcache-controller adds up the node's
// report, so `kubectl get modelcaches` shows READY 1/1 and the revision.
// Deleting it drops the pin.
func TestModelCache(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m := newModel(bucket, "modelcache", 16<<20, 7)
	m.upload(t, e.s3)
	ref := "s3://" + bucket + "/modelcache?source=local"
	manifest := filepath.Join(t.TempDir(), "modelcache.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: modelcache.io/v1alpha1
kind: ModelCache
metadata:
  name: tiny
  namespace: %s
spec:
  model: %q
`, e.ns, ref)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.kubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	holder := prefetch.HolderPrefix + "modelcache/" + e.ns + "/tiny"
	t.Cleanup(func() { _, _ = e.kubectl(context.Background(), "delete", "-f", manifest, "--ignore-not-found") })

	start := time.Now()
	row := regexp.MustCompile(`(?m)^tiny\s+\S+\s+1/1\s+[0-9a-f]{16}\s+[0-9.]+ [KMG]?i?B\s`)
	var table string
	e.waitFor(t, 2*time.Minute, "kubectl get modelcaches: tiny 1/1 with a revision", func() error {
		out, err := e.kubectl(ctx, "get", "modelcaches")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !row.MatchString(out) {
			return fmt.Errorf("%s", out)
		}
		table = out
		return nil
	})
	t.Logf("%.3fs after kubectl apply:\n$ kubectl get modelcaches -n %s\n%s", time.Since(start).Seconds(), e.ns, table)
	if pins := e.pinsOn(t, ref); !slices.Contains(pins, holder) {
		t.Errorf("agent pins %q; want %s", pins, holder)
	}
	if out, err := e.kubectl(ctx, "get", "modelcachenodes", e.nodeName(t)); err != nil {
		t.Errorf("kubectl get modelcachenodes: %v\n%s", err, out)
	}
	out, err := e.kubectl(ctx, "get", "modelcache", "tiny", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
	if err != nil || strings.TrimSpace(out) != "True" {
		t.Errorf("Ready condition %q (%v)", out, err)
	}

	if out, err := e.kubectl(ctx, "delete", "-f", manifest); err != nil {
		t.Fatalf("kubectl delete: %v\n%s", err, out)
	}
	e.waitFor(t, time.Minute, "the ModelCache's pin dropped", func() error {
		if pins := e.pinsOn(t, ref); slices.Contains(pins, holder) {
			return fmt.Errorf("pins %q", pins)
		}
		return nil
	})
}
