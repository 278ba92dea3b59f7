package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
)

// TestPrefetchFlags: --prefetch defaults to on exactly when an API server is
// configured, and refuses to run without a node name.
func TestPrefetchFlags(t *testing.T) {
	inCluster := func() (*rest.Config, error) { return &rest.Config{Host: "https://10.96.0.1:443"}, nil }
	outside := func() (*rest.Config, error) { return nil, errors.New("not in a cluster") }
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	t.Setenv("NODE_NAME", "")
	for _, tc := range []struct {
		name      string
		args      []string
		inCluster func() (*rest.Config, error)
		host      string // "" = controller off
		err       string
	}{
		{"outside a cluster: off", nil, outside, "", ""},
		{"in a cluster: on", []string{"--node-name", "n1"}, inCluster, "https://10.96.0.1:443", ""},
		{"kubeconfig: on", []string{"--kubeconfig", kubeconfig, "--node-name", "n1"}, outside, "https://127.0.0.1:6443", ""},
		{"explicitly off", []string{"--prefetch=false"}, inCluster, "", ""},
		{"explicitly on outside a cluster", []string{"--prefetch", "--node-name", "n1"}, outside, "", "needs an API server"},
		{"no node name", nil, inCluster, "", "--node-name"},
		{"bad kubeconfig", []string{"--kubeconfig", "/nonexistent", "--node-name", "n1"}, outside, "", "/nonexistent"},
	} {
		var o prefetchOptions
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := o.resolve(fs, tc.inCluster)
		host := ""
		if cfg != nil {
			host = cfg.Host
		}
		if host != tc.host || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: host %q err %v; want host %q err containing %q", tc.name, host, err, tc.host, tc.err)
		}
	}
}
