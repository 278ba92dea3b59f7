package csi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/csi"
	"github.com/modelcache/modelcache/pkg/model"
)

// Volume attributes are what any pod author writes. Whatever they are, the
// parser answers without panicking; what it accepts is a ref that parses
// back to itself and whose prefix stays a clean relative path.
func FuzzParseVolumeAttributes(f *testing.F) {
	f.Add("s3://models/llama", "minio", "", "", "")
	f.Add("s3://models/llama?source=a", "b", "0123456789abcdef", "http://127.0.0.1:9000", "eu-west-1")
	f.Add("s3://models/../etc", "", "", "", "")
	f.Add(" s3://b/p ", "../x", "zz", "file:///etc/passwd", "US EAST")
	f.Add("", "", "", "", "")
	f.Fuzz(func(t *testing.T, ref, source, revision, endpoint, region string) {
		vc := map[string]string{"model": ref, "csi.storage.k8s.io/pod.name": "p"}
		for k, v := range map[string]string{"source": source, "revision": revision, "endpoint": endpoint, "region": region} {
			if v != "" {
				vc[k] = v
			}
		}
		r, err := csi.ParseVolumeAttributes(vc)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		again, err := model.ParseRef(r.String())
		if err != nil || again != r {
			t.Fatalf("attributes %v gave %+v, which does not round-trip (%v)", vc, r, err)
		}
		if strings.Contains("/"+r.Prefix+"/", "/../") {
			t.Fatalf("attributes %v gave prefix %q", vc, r.Prefix)
		}
	})
}

// A volume's Secret: keys are half given, duplicated under both spellings,
// or blank. Accepted credentials are whole; errors never hold a value.
func FuzzParseSecrets(f *testing.F) {
	f.Add("AKIA123", "s3cr3t-value", "", "", "")
	f.Add("", "s3cr3t-value", "", "", "")
	f.Add("AKIA123", "", "tok", "AKIA456", "other-secret")
	f.Fuzz(func(t *testing.T, id, secret, token, awsID, awsSecret string) {
		in := map[string]string{}
		for k, v := range map[string]string{"accessKeyID": id, "secretAccessKey": secret, "sessionToken": token,
			"AWS_ACCESS_KEY_ID": awsID, "AWS_SECRET_ACCESS_KEY": awsSecret} {
			if v != "" {
				in[k] = v
			}
		}
		c, err := csi.ParseSecrets(in)
		if err != nil {
			// The error says which keys are missing and nothing of the
			// values: other values under the same keys give the same text.
			other := map[string]string{}
			for k, v := range in {
				if other[k] = v; strings.TrimSpace(v) != "" {
					other[k] = "z" + strings.TrimSpace(v)
				}
			}
			if _, err2 := csi.ParseSecrets(other); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("the error depends on the secret values: %q, with other values %v", err, err2)
			}
			return
		}
		if c != nil && (c.AccessKeyID == "" || c.SecretAccessKey == "") {
			t.Fatalf("accepted half a key pair: %v", c)
		}
		// Nothing of the secret or the token reaches the printed form: it is
		// the same with other values. (A search for the secret in it would
		// trip on the format's own words: a secret "secr" is in "secret".)
		if c != nil {
			other := *c
			other.SecretAccessKey, other.SessionToken = "x"+c.SecretAccessKey, "y"+c.SessionToken
			if c.String() != other.String() || c.GoString() != other.GoString() || fmt.Sprint(*c) != fmt.Sprint(other) {
				t.Fatalf("the printed credentials depend on the secret: %v", c)
			}
		}
	})
}
