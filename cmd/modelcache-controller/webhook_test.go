package main

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcache/modelcache/internal/kubetest"
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

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ignore, none := admissionregistrationv1.Ignore, admissionregistrationv1.SideEffectClassNone
	url, timeout := "https://"+l.Addr().String()+webhook.PathMutatePods, int32(5)
	mustCreate(t, kube, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "modelcache-system"}})
	_, err = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "modelcache"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "pods.modelcache.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy: &ignore, SideEffects: &none, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
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

	done := make(chan error, 1)
	go func() {
		done <- serveWebhook(ctx, l, kube, "modelcache.csi.io",
			webhookOptions{service: "modelcache-webhook", config: "modelcache", secret: "modelcache-webhook-tls", ips: []net.IP{net.IPv4(127, 0, 0, 1)}},
			slog.New(slog.DiscardHandler))
	}()
	// Ready once the caBundle is in (Ensure runs before serving).
	waitFor(t, "the caBundle", func() bool {
		c, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "modelcache", metav1.GetOptions{})
		return err == nil && len(c.Webhooks[0].ClientConfig.CABundle) > 0
	})
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
