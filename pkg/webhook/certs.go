package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
)

// Certificates without cert-manager: the controller keeps a self-signed
// CA and a serving certificate for the webhook's names in a Secret of its
// namespace (so every replica serves the same one), and writes the CA into
// the MutatingWebhookConfiguration's caBundle, where the API server reads
// it. A certificate within renewBefore of its end, or without a name it
// must carry, is replaced; a replica that loses the race to create or
// replace the Secret takes the winner's.

// renewBefore: a certificate with less left than this is replaced (the
// controller checks at start and every CheckInterval).
const renewBefore = 30 * 24 * time.Hour

// CheckInterval is how often a running controller looks at its
// certificate again.
const CheckInterval = 12 * time.Hour

// Certs says where the webhook's certificate lives and whom it names.
type Certs struct {
	Client    kubernetes.Interface
	Namespace string
	Secret    string // the Secret holding tls.crt, tls.key, ca.crt
	Webhook   string // the MutatingWebhookConfiguration to give the CA
	DNSNames  []string
	IPs       []net.IP
	now       func() time.Time
}

// Ensure returns the serving certificate, made or renewed if need be, and
// sets the CA in the webhook configuration (if it exists: without it the
// API server sends nothing, and that is the operator's choice).
func (c *Certs) Ensure(ctx context.Context) (*tls.Certificate, error) {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	if len(c.DNSNames) == 0 && len(c.IPs) == 0 {
		return nil, errors.New("webhook certificate: no DNS name or IP to serve")
	}
	secrets := c.Client.CoreV1().Secrets(c.Namespace)
	var pair *tls.Certificate
	var ca []byte
	for attempt := 0; pair == nil; attempt++ {
		if attempt == 3 {
			return nil, fmt.Errorf("webhook certificate: Secret %s/%s keeps changing under us", c.Namespace, c.Secret)
		}
		s, err := secrets.Get(ctx, c.Secret, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			s = nil
		case err != nil:
			return nil, fmt.Errorf("webhook certificate: read Secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		if s != nil {
			if p, err := c.usable(s, now()); err == nil {
				pair, ca = p, s.Data["ca.crt"]
				break
			}
		}
		certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKeyWithOptions(certutil.SelfSignedCertKeyOptions{
			Host: c.host(), AlternateIPs: c.IPs, AlternateDNS: c.DNSNames})
		if err != nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		// The chain is the serving certificate, then the CA that signed it.
		chain, err := certutil.ParseCertsPEM(certPEM)
		if err != nil || len(chain) != 2 {
			return nil, fmt.Errorf("webhook certificate: generated chain unreadable (%v)", err)
		}
		caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[1].Raw})
		if s != nil {
			// A renewal keeps the old CA, while it lasts, in the bundle: a
			// replica still serving the old certificate (until its next
			// check, CheckInterval) stays trusted.
			caPEM = append(caPEM, stillValid(s.Data["ca.crt"], now())...)
		}
		data := map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM, "ca.crt": caPEM}
		if s == nil {
			_, err = secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: c.Secret, Namespace: c.Namespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "modelcache-controller"}},
				Type: corev1.SecretTypeTLS, Data: data}, metav1.CreateOptions{FieldManager: "modelcache-controller"})
		} else {
			s = s.DeepCopy()
			s.Data = data
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{FieldManager: "modelcache-controller"})
		}
		if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
			continue // another replica wrote it first: use theirs
		}
		if err != nil {
			return nil, fmt.Errorf("webhook certificate: write Secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		p, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		pair, ca = &p, caPEM
	}
	if err := c.setCABundle(ctx, ca); err != nil {
		return nil, err
	}
	return pair, nil
}

// usable is the Secret's pair if it is valid for renewBefore more, names
// every name and IP it must, and comes with its CA.
func (c *Certs) usable(s *corev1.Secret, now time.Time) (*tls.Certificate, error) {
	p, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(p.Certificate[0])
	if err != nil {
		return nil, err
	}
	if now.Add(renewBefore).After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, errors.New("expires soon")
	}
	for _, n := range c.DNSNames {
		if !slices.Contains(leaf.DNSNames, n) {
			return nil, fmt.Errorf("does not name %s", n)
		}
	}
	for _, ip := range c.IPs {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return nil, fmt.Errorf("does not name %s", ip)
		}
	}
	if len(s.Data["ca.crt"]) == 0 {
		return nil, errors.New("no ca.crt")
	}
	return &p, nil
}

// stillValid is the PEM of the certificates in bundle that have not
// expired at now.
func stillValid(bundle []byte, now time.Time) []byte {
	certs, err := certutil.ParseCertsPEM(bundle)
	if err != nil {
		return nil
	}
	var out []byte
	for _, c := range certs {
		if now.Before(c.NotAfter) {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	return out
}

// setCABundle writes ca into every webhook of the configuration that does
// not have it yet.
func (c *Certs) setCABundle(ctx context.Context, ca []byte) error {
	api := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, c.Webhook, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhook configuration %s: %w", c.Webhook, err)
	}
	var ops []map[string]any
	for i, w := range cfg.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, ca) {
			// test guards the index against a concurrent edit of the list.
			ops = append(ops,
				map[string]any{"op": "test", "path": fmt.Sprintf("/webhooks/%d/name", i), "value": w.Name},
				map[string]any{"op": "add", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), "value": ca})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if _, err := api.Patch(ctx, c.Webhook, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "modelcache-controller"}); err != nil {
		return fmt.Errorf("webhook configuration %s: set caBundle: %w", c.Webhook, err)
	}
	return nil
}

// host is the certificate's common name: its first DNS name or IP.
func (c *Certs) host() string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.IPs[0].String()
}
