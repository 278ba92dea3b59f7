package csi_test

import (
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/csi"
)

// A gs:// volume's Secret holds a service account's JSON key, under
// serviceAccountKey or key.json (what kubectl create secret --from-file
// names it); alone it is whole credentials, and it never prints.
func TestParseSecretsServiceAccountKey(t *testing.T) {
	key := `{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nsecret-key-bytes"}`
	for _, name := range []string{"serviceAccountKey", "key.json"} {
		c, err := csi.ParseSecrets(map[string]string{name: key + "\n"})
		if err != nil || c == nil || c.ServiceAccountKey != key {
			t.Fatalf("%s: %v, %v", name, c, err)
		}
		if strings.Contains(c.String(), "secret-key-bytes") {
			t.Errorf("%s: printed as %s", name, c)
		}
	}
	if _, err := csi.ParseSecrets(map[string]string{"serviceAccountKey": key, "accessKeyID": "AKIA"}); err == nil {
		t.Error("half an S3 key pair beside a service account key was accepted")
	}
}
