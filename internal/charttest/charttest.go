// Package charttest renders the Helm chart charts/modelcache and the
// kustomize trees of deploy/ with the real tools, and decodes what they print
// into API objects, for tests that compare the two renders and send them to a
// real API server. The tools are <repo>/bin/helm and <repo>/bin/k8s/kubectl
// (`make tools` installs both), or $MODELCACHE_HELM and $MODELCACHE_KUBECTL.
// When one is missing the test is skipped, or fails if MODELCACHE_REQUIRE=1.
package charttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/modelcache/modelcache/internal/testenv"
)

// Release is the release name every render uses: with it the chart's
// objects carry the names deploy/ gives them.
const Release = "modelcache"

// Tools are the binaries a render runs.
type Tools struct {
	Helm, Kubectl string
	Root          string // the repository
}

// Find locates helm and kubectl, skipping the test (or failing it under
// MODELCACHE_REQUIRE=1) when either is missing.
func Find(t testing.TB) Tools {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatalf("charttest: %v", err)
	}
	tools := Tools{Root: root,
		Helm:    toolPath("MODELCACHE_HELM", filepath.Join(root, "bin", "helm")),
		Kubectl: toolPath("MODELCACHE_KUBECTL", filepath.Join(root, "bin", "k8s", "kubectl"))}
	var missing []string
	for _, p := range []string{tools.Helm, tools.Kubectl} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		msg := "charttest: missing " + strings.Join(missing, " and ") +
			"; run `make tools` (hack/tools.sh installs helm and builds kubectl) or set MODELCACHE_HELM / MODELCACHE_KUBECTL"
		testenv.Missing(t, msg)
	}
	return tools
}

func toolPath(env, def string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	return def
}

// Chart is the chart's directory.
func (tl Tools) Chart() string { return filepath.Join(tl.Root, "charts", "modelcache") }

// Path joins a slash-separated path under the repository.
func (tl Tools) Path(rel string) string { return filepath.Join(tl.Root, filepath.FromSlash(rel)) }

// Template runs `helm template --include-crds` on the chart for Release in namespace with
// the extra arguments (--set, -f, …) and decodes the objects.
func (tl Tools) Template(namespace string, args ...string) ([]*unstructured.Unstructured, error) {
	out, err := tl.helm(append([]string{"template", Release, tl.Chart(), "--namespace", namespace, "--include-crds"}, args...)...)
	if err != nil {
		return nil, err
	}
	return Decode(out)
}

// Lint runs `helm lint --strict` on the chart with the extra arguments and
// returns its output.
func (tl Tools) Lint(args ...string) (string, error) {
	out, err := tl.helm(append([]string{"lint", "--strict", tl.Chart()}, args...)...)
	return string(out), err
}

// Kustomize runs `kubectl kustomize` on each directory (relative to the
// repository) and decodes the objects of all of them.
func (tl Tools) Kustomize(dirs ...string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, d := range dirs {
		out, err := runTool(tl.Kubectl, nil, "kustomize", tl.Path(d))
		if err != nil {
			return nil, err
		}
		o, err := Decode(out)
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %w", d, err)
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

func (tl Tools) helm(args ...string) ([]byte, error) {
	// A throwaway home: helm writes its config and cache there, and a
	// developer's repositories and plugins play no part.
	home, err := os.MkdirTemp("", "charttest-helm-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(home)
	env := []string{"HELM_CONFIG_HOME=" + filepath.Join(home, "config"),
		"HELM_CACHE_HOME=" + filepath.Join(home, "cache"), "HELM_DATA_HOME=" + filepath.Join(home, "data")}
	return runTool(tl.Helm, env, args...)
}

func runTool(bin string, env []string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Run(); err != nil {
		// Not the arguments: they may name a file of credentials, never hold them,
		// but stdout may hold a rendered Secret; stderr says what went wrong.
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Decode splits a multi-document YAML stream into objects, skipping empty
// documents (a template that rendered nothing).
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("split documents: %w", err)
		}
		var m map[string]any
		if err := utilyaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("decode %q: %w", firstLine(doc), err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// Key names an object: kind, namespace and name.
func Key(o *unstructured.Unstructured) string {
	return o.GetAPIVersion() + " " + o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// Index maps Key to object and fails on a duplicate key.
func Index(objs []*unstructured.Unstructured) (map[string]*unstructured.Unstructured, error) {
	m := make(map[string]*unstructured.Unstructured, len(objs))
	for _, o := range objs {
		k := Key(o)
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%s rendered twice", k)
		}
		m[k] = o
	}
	return m, nil
}

// Keys lists the keys of an index, sorted.
func Keys(m map[string]*unstructured.Unstructured) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// HelmLabels are the metadata labels the chart adds to every object on top
// of deploy/'s: who manages it and which release and chart made it.
var HelmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// WithoutHelmLabels returns a copy of o without HelmLabels in its
// metadata.labels (and without the map if nothing else is left). Pod
// templates are left alone: the chart adds nothing there.
func WithoutHelmLabels(o *unstructured.Unstructured) *unstructured.Unstructured {
	c := o.DeepCopy()
	labels := c.GetLabels()
	for _, l := range HelmLabels {
		delete(labels, l)
	}
	if len(labels) == 0 {
		unstructured.RemoveNestedField(c.Object, "metadata", "labels")
	} else {
		c.SetLabels(labels)
	}
	return c
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
