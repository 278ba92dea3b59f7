package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcache/modelcache/internal/kubetest"
)

// A certificate near its end is replaced, and the configuration's bundle
// then trusts both the new certificate and the old one, which replicas
// that have not looked again still serve.
func TestRenewalKeepsTheOldCA(t *testing.T) {
	kube := kubetest.Start(t).Client(t)
	ctx := context.Background()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mc"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	url := "https://127.0.0.1:1/x"
	if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "renew"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "pods.modelcache.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			SideEffects: ptr(admissionregistrationv1.SideEffectClassNone), AdmissionReviewVersions: []string{"v1"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &Certs{Client: kube, Namespace: "mc", Secret: "tls", Webhook: "renew", DNSNames: []string{"wh.mc.svc"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	old, err := c.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(old.Certificate[0])
	c.now = func() time.Time { return leaf.NotAfter.Add(-renewBefore / 2) }
	renewed, err := c.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(renewed.Certificate[0]) == string(old.Certificate[0]) {
		t.Fatal("a certificate within renewBefore of its end was kept")
	}
	cfg, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "renew", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle) {
		t.Fatal("no CA in the bundle")
	}
	for name, pair := range map[string]*tls.Certificate{"old": old, "renewed": renewed} {
		l, _ := x509.ParseCertificate(pair.Certificate[0])
		if _, err := l.Verify(x509.VerifyOptions{Roots: pool, DNSName: "wh.mc.svc", CurrentTime: c.now()}); err != nil {
			t.Errorf("the %s certificate is not trusted by the bundle: %v", name, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
