package agent

import (
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

// An answer about one volume's credentials is never another's: every
// secret a volume may bring is part of the key (a Hub token as much as S3
// keys or a registry login), or one tenant's grant would serve the next.
func TestAccessKeyCoversEveryCredential(t *testing.T) {
	ref, _ := model.ParseRef("hf://org/m")
	seen := map[[32]byte]string{}
	for name, c := range map[string]model.Credentials{
		"alice token":   {Token: "hf_alice"},
		"mallory token": {Token: "hf_mallory"},
		"keys":          {AccessKeyID: "a", SecretAccessKey: "b"},
		"other secret":  {AccessKeyID: "a", SecretAccessKey: "c"},
		"session":       {AccessKeyID: "a", SecretAccessKey: "b", SessionToken: "s"},
		"alice gcs key": {ServiceAccountKey: `{"type":"service_account","client_email":"alice"}`},
		"eve gcs key":   {ServiceAccountKey: `{"type":"service_account","client_email":"eve"}`},
	} {
		k := accessKey(ref, c)
		if other, ok := seen[k]; ok {
			t.Errorf("%s and %s share an access cache key", name, other)
		}
		seen[k] = name
	}
}
