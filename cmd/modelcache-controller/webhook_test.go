package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
	"github.com/modelcache/modelcache/pkg/apis/v1alpha1"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/prefetch"
	"github.com/modelcache/modelcache/pkg/webhook"
)

// The real API server calls the webhook over TLS, trusting the CA the
// controller wrote into the configuration: a pod with a modelcache volume
// is stored with a warm-node affinity, the namespace's require makes it
// required, and with the webhook down pods are still created (failure
// policy Ignore).
func TestWebhookWithAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	kube := srv.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("POD_NAMESPACE", "modelcache-system")

	done := startWebhook(ctx, t, srv)
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "ml"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "strict", Annotations: map[string]string{webhook.AnnotationSchedule: "require"}}},
	} {
		mustCreate(t, kube, ns)
		// No controller-manager here to make the default ServiceAccount.
		mustCreate(t, kube, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}})
	}
	mustCreate(t, kube, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "model-cache"}, Provisioner: "modelcache.csi.io",
		Parameters: map[string]string{"source": "minio"}})

	s, err := kube.CoreV1().Secrets("modelcache-system").Get(ctx, "modelcache-webhook-tls", metav1.GetOptions{})
	if err != nil || s.Type != corev1.SecretTypeTLS {
		t.Fatalf("the certificate Secret: %v", err)
	}

	class := "model-cache"
	pod := func(ns, name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
			Volumes: []corev1.Volume{
				{Name: "inline", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "modelcache.csi.io",
					VolumeAttributes: map[string]string{"model": "s3://models/llama?source=minio"}}}},
				{Name: "eph", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
					ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"modelcache.io/model": "hf://org/m"}},
					Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
						Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: mustQuantity("1Gi")}}}}}}},
			}}}
	}
	keys := []string{labelKey(t, "s3://models/llama?source=minio"), labelKey(t, "hf://org/m?source=minio")}

	// Wait for the informers (the class): the first pods may come too early.
	var got *corev1.Pod
	waitFor(t, "a preferred affinity", func() bool {
		p := pod("ml", "prefer-"+rand4())
		got, err = kube.CoreV1().Pods("ml").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := got.Spec.Affinity
		return a != nil && a.NodeAffinity != nil && len(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 2
	})
	for i, term := range got.Spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		if e := term.Preference.MatchExpressions; len(e) != 1 || e[0].Key != keys[i] || e[0].Values[0] != prefetch.LabelReady {
			t.Errorf("preferred term %d: %+v, want %s=ready", i, e, keys[i])
		}
	}

	got, err = kube.CoreV1().Pods("strict").Create(ctx, pod("strict", "require"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := got.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if req == nil || len(req.NodeSelectorTerms) != 1 || len(req.NodeSelectorTerms[0].MatchExpressions) != 2 {
		t.Fatalf("namespace require: %+v", got.Spec.Affinity)
	}

	// A second replica (or a restart) serves the same certificate.
	c2 := &webhook.Certs{Client: kube, Namespace: "modelcache-system", Secret: "modelcache-webhook-tls", Webhook: "modelcache",
		DNSNames: []string{"modelcache-webhook.modelcache-system.svc", "modelcache-webhook.modelcache-system.svc.cluster.local", "modelcache-webhook.modelcache-system", "modelcache-webhook"},
		IPs:      []net.IP{net.IPv4(127, 0, 0, 1)}}
	pair, err := c2.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s.Data[corev1.TLSCertKey]), "CERTIFICATE") || string(pair.Certificate[0]) == "" {
		t.Error("no certificate")
	}
	s2, _ := kube.CoreV1().Secrets("modelcache-system").Get(ctx, "modelcache-webhook-tls", metav1.GetOptions{})
	if string(s2.Data[corev1.TLSCertKey]) != string(s.Data[corev1.TLSCertKey]) {
		t.Error("a second Ensure replaced a good certificate")
	}

	// Webhook down: the pod is created, unchanged.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("webhook: %v", err)
	}
	got, err = kube.CoreV1().Pods("ml").Create(context.Background(), pod("ml", "down"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("with the webhook down: %v", err)
	}
	if got.Spec.Affinity != nil {
		t.Errorf("with the webhook down the pod got %+v", got.Spec.Affinity)
	}
}

// startWebhook makes the namespace modelcache-system and the webhook
// configuration (reached by URL on a loopback port), serves the webhook
// until ctx ends, and returns once the controller has written the CA into
// the configuration (Ensure runs before serving). done gets serveWebhook's
// result.
func startWebhook(ctx context.Context, t *testing.T, ks *kubetest.Server) (done chan error) {
	t.Helper()
	kube := ks.Client(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ignore, none := admissionregistrationv1.Ignore, admissionregistrationv1.SideEffectClassNone
	url, timeout := "https://"+l.Addr().String()+webhook.PathMutatePods, int32(5)
	mustCreate(t, kube, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "modelcache-system"}})
	if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "modelcache"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "pods.modelcache.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy: &ignore, SideEffects: &none, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ks.InstallCRDs(t)
	dyn := ks.Dynamic(t)
	done = make(chan error, 1)
	go func() {
		done <- serveWebhook(ctx, l, kube, dyn, "modelcache.csi.io",
			webhookOptions{service: "modelcache-webhook", config: "modelcache", secret: "modelcache-webhook-tls", ips: []net.IP{net.IPv4(127, 0, 0, 1)}},
			slog.New(slog.DiscardHandler))
	}()
	waitFor(t, "the caBundle", func() bool {
		c, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "modelcache", metav1.GetOptions{})
		return err == nil && len(c.Webhooks[0].ClientConfig.CABundle) > 0
	})
	return done
}

func labelKey(t *testing.T, ref string) string {
	t.Helper()
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return prefetch.LabelKey(r)
}

func mustCreate[T interface {
	*corev1.Namespace | *corev1.ServiceAccount | *storagev1.StorageClass
}](t *testing.T, kube kubernetes.Interface, obj T) {
	t.Helper()
	var err error
	ctx := context.Background()
	switch o := any(obj).(type) {
	case *corev1.Namespace:
		_, err = kube.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		_, err = kube.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *storagev1.StorageClass:
		_, err = kube.StorageV1().StorageClasses().Create(ctx, o, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func rand4() string { return strings.ToLower(rand.Text()[:4]) }

// With the real scheduler and two nodes: a pod with a modelcache volume and
// no affinity of its own lands on the node that holds its model although
// the other has far more room; with require, a pod whose model no node
// holds stays Pending until a node has it.
func TestWebhookSchedulesOntoWarmNodes(t *testing.T) {
	srv := kubetest.Start(t)
	kube := srv.Client(t)
	srv.StartScheduler(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("POD_NAMESPACE", "modelcache-system")
	startWebhook(ctx, t, srv)
	mustCreate(t, kube, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}})
	mustCreate(t, kube, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "ml"}})

	llama := "s3://models/llama?source=minio"
	node := func(name, cpu, mem string, labels map[string]string) {
		t.Helper()
		res := corev1.ResourceList{corev1.ResourceCPU: mustQuantity(cpu), corev1.ResourceMemory: mustQuantity(mem), corev1.ResourcePods: mustQuantity("110")}
		n, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status = corev1.NodeStatus{Capacity: res, Allocatable: res,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}}
		if n, err = kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The API server's TaintNodesByCondition admission taints a new
		// node not-ready; the node lifecycle controller that would lift it
		// does not run here.
		n.Spec.Taints = nil
		if _, err := kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	node("warm-small", "4", "8Gi", map[string]string{labelKey(t, llama): prefetch.LabelReady})
	node("cold-big", "64", "256Gi", nil)

	pod := func(name, ref string, annotations map[string]string, more ...string) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml", Annotations: annotations}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "vllm", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity("1"), corev1.ResourceMemory: mustQuantity("1Gi")}}}}}}
		for i, r := range append([]string{ref}, more...) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: fmt.Sprintf("model-%d", i), VolumeSource: corev1.VolumeSource{
				CSI: &corev1.CSIVolumeSource{Driver: "modelcache.csi.io", VolumeAttributes: map[string]string{"model": r}}}})
		}
		got, err := kube.CoreV1().Pods("ml").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	nodeOf := func(name string) string {
		p, err := kube.CoreV1().Pods("ml").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p.Spec.NodeName
	}

	// The webhook's informers may not have synced when the first pod comes:
	// retry with new pods until one is admitted with the affinity.
	var name string
	waitFor(t, "a pod admitted with a warm-node affinity", func() bool {
		name = "prefer-" + rand4()
		p := pod(name, llama, nil)
		return p.Spec.Affinity != nil
	})
	waitFor(t, "the pod to be scheduled", func() bool { return nodeOf(name) != "" })
	if n := nodeOf(name); n != "warm-small" {
		t.Fatalf("the pod went to %s; want warm-small, the node holding its model", n)
	}
	// Without the webhook's affinity the scheduler prefers the big node,
	// which shows the affinity is what decided.
	off := pod("off", llama, map[string]string{webhook.AnnotationSchedule: "off"})
	if off.Spec.Affinity != nil {
		t.Fatalf("schedule=off: %+v", off.Spec.Affinity)
	}
	waitFor(t, "the off pod to be scheduled", func() bool { return nodeOf("off") != "" })
	if n := nodeOf("off"); n != "cold-big" {
		t.Errorf("schedule=off went to %s; the scheduler alone prefers cold-big", n)
	}

	// require: no node holds this model yet, so the pod waits.
	qwen := "hf://Qwen/Qwen3-8B"
	pod("require", qwen, map[string]string{webhook.AnnotationSchedule: "require"})
	time.Sleep(3 * time.Second)
	if n := nodeOf("require"); n != "" {
		t.Fatalf("a required warm node that does not exist: scheduled to %s", n)
	}
	// The model arrives on the big node (the agent labels it).
	n, err := kube.CoreV1().Nodes().Get(ctx, "cold-big", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels = map[string]string{labelKey(t, qwen): prefetch.LabelReady}
	if _, err := kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the required pod to be scheduled once a node is warm", func() bool { return nodeOf("require") != "" })
	if n := nodeOf("require"); n != "cold-big" {
		t.Errorf("the required pod went to %s, want cold-big", n)
	}

	// Weighed by size: a pod of both models, llama (15 GiB, on warm-small)
	// and qwen (60 MiB, on cold-big, as the nodes' reports say), goes where
	// the big one is, though the scheduler alone prefers cold-big.
	report(t, srv, "warm-small", llama, 15<<30)
	report(t, srv, "cold-big", qwen, 60<<20)
	waitFor(t, "a pod of both models admitted with weights by size", func() bool {
		name = "sized-" + rand4()
		p := pod(name, llama, nil, qwen)
		var weights []int32
		if p.Spec.Affinity != nil {
			for _, term := range p.Spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				weights = append(weights, term.Weight)
			}
		}
		return slices.Contains(weights, 100) && slices.Contains(weights, 1)
	})
	waitFor(t, "the two-model pod to be scheduled", func() bool { return nodeOf(name) != "" })
	if n := nodeOf(name); n != "warm-small" {
		t.Errorf("the pod of a 15 GiB and a 60 MiB model went to %s; want warm-small, which holds the big one", n)
	}
}

// report writes node's ModelCacheNode as its agent would: ref ready, size bytes.
func report(t *testing.T, ks *kubetest.Server, node, ref string, size int64) {
	t.Helper()
	r, err := model.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.Group + "/" + v1alpha1.Version, "kind": v1alpha1.KindModelCacheNode,
		"metadata": map[string]any{"name": node},
		"status": map[string]any{"models": []any{map[string]any{"ref": r.Location().String(), "revision": "0123456789abcdef",
			"current": true, "state": v1alpha1.StateReady, "bytes": size}}},
	}}
	if _, err := ks.Dynamic(t).Resource(v1alpha1.ModelCacheNodes).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
