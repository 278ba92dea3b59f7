package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
)

// TestServePrefetch runs `cache-agent serve --kubeconfig K --node-name N`
// against a real API server: a Deployment at 0 replicas with the prefetch
// annotation gets its model downloaded, pinned and labelled on the node,
// and with --prefetch-warm-page-cache read into the page cache.
func TestServePrefetch(t *testing.T) {
	ks := kubetest.Start(t)
	ks.InstallCRDs(t)
	kube := ks.Client(t)
	srv := s3test.Start(t)
	srv.CreateBucket(t, "models")
	srv.Put(t, "models", "llm/weights.bin", s3test.RandomBytes(7, 3<<20))
	ctx := context.Background()

	kubeconfig := ks.Kubeconfig(t)
	nodeName := fmt.Sprintf("cli-node-%d", time.Now().UnixNano()%100000)
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName,
		Labels: map[string]string{"kubernetes.io/hostname": nodeName}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kube.CoreV1().Nodes().Delete(context.Background(), nodeName, metav1.DeleteOptions{}) })
	ns := "cli-" + nodeName
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ref := "s3://models/llm?source=test"
	zero := int32(0)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "llm", Annotations: map[string]string{prefetch.AnnotationPrefetch: ref}},
		Spec: appsv1.DeploymentSpec{Replicas: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "llm"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "llm"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "s", Image: "example.com/s:1"}}}}},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A ModelCache of the same model, for this node only: the agent pins
	// it for the ModelCache too and says so in its ModelCacheNode.
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.Group + "/" + v1alpha1.Version, "kind": v1alpha1.KindModelCache,
		"metadata": map[string]any{"name": "llm-cache", "namespace": ns},
		"spec":     map[string]any{"model": ref, "nodeSelector": map[string]any{"kubernetes.io/hostname": nodeName}},
	}}
	dyn := ks.Dynamic(t)
	if _, err := dyn.Resource(v1alpha1.ModelCaches).Namespace(ns).Create(ctx, mc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	n := newNode(t, buildAgent(t), srv.Endpoint, srv)
	// NODE_NAME is what the DaemonSet sets; the flag is checked too.
	t.Setenv("NODE_NAME", "not-this-one")
	n.start("--kubeconfig", kubeconfig, "--node-name", nodeName, "--prefetch-warm-page-cache")

	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	label := prefetch.LabelKey(r)
	deadline := time.Now().Add(30 * time.Second)
	for {
		node, err := kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Labels[label] == prefetch.LabelReady {
			var models map[string]string
			if err := json.Unmarshal([]byte(node.Annotations[prefetch.AnnotationModels]), &models); err != nil || models[ref] != label {
				t.Fatalf("annotation %s = %q (%v)", prefetch.AnnotationModels, node.Annotations[prefetch.AnnotationModels], err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no label %s on the node after 30s; labels %v\nagent log:\n%s", label, node.Labels, n.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for !strings.Contains(n.log.String(), "page cache warm-up") {
		if time.Now().After(deadline) {
			t.Fatalf("no page-cache warm-up after the prefetch; agent log:\n%s", n.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out string
	for _, holder := range []string{"workload:deployment/" + ns + "/llm", "workload:modelcache/" + ns + "/llm-cache"} {
		for {
			if out, err = n.run("status"); err != nil {
				t.Fatalf("status: %v\n%s", err, out)
			}
			if strings.Contains(out, holder) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("status does not show the pin %s:\n%s", holder, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The node's report names the model, ready.
	for {
		rep, err := dyn.Resource(v1alpha1.ModelCacheNodes).Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil {
			models, _, _ := unstructured.NestedSlice(rep.Object, "status", "models")
			if len(models) == 1 && models[0].(map[string]any)["state"] == v1alpha1.StateReady && models[0].(map[string]any)["ref"] == ref {
				break
			}
			err = fmt.Errorf("report %v", rep.Object["status"])
		}
		if time.Now().After(deadline) {
			t.Fatalf("ModelCacheNode %s: %v", nodeName, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The cluster view, from the API server alone, names the node and
	// lists the ModelCache (no status controller runs here: no READY yet).
	out, err = n.run("status", "--cluster", "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(out, ref) || !strings.Contains(out, nodeName) || !strings.Contains(out, "MODEL") ||
		!strings.Contains(out, "ModelCaches:") || !strings.Contains(out, "llm-cache") {
		t.Errorf("status --cluster: %v\n%s", err, out)
	}
	out, err = n.run("status", "--cluster", "--kubeconfig", kubeconfig, "-o", "json")
	var v prefetch.ClusterView
	if err != nil || json.Unmarshal([]byte(out), &v) != nil ||
		!slices.ContainsFunc(v.Models, func(m prefetch.ModelNodes) bool { return m.Ref == ref && slices.Contains(m.Ready, nodeName) }) {
		t.Errorf("status --cluster -o json: %v\n%s", err, out)
	}
	if out, err = n.run("status", "--kubeconfig", kubeconfig); err == nil || !strings.Contains(out, "--cluster") {
		t.Errorf("--kubeconfig without --cluster: %v\n%s", err, out)
	}
}
