package agent

import (
	"reflect"
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
		"azure key":     {AccountKey: "a2V5"},
		"other key":     {AccountKey: "b3RoZXI="},
		"azure SAS":     {SASToken: "sv=1&sig=a"},
		"other SAS":     {SASToken: "sv=1&sig=b"},
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

// Each field alone, and values that would run together without the
// length prefix, make distinct keys; a field that is not a string would
// hash as its type name, so every field must be one.
func TestAccessKeyEveryField(t *testing.T) {
	ref, _ := model.ParseRef("s3://b/m")
	typ := reflect.TypeFor[model.Credentials]()
	seen := map[[32]byte]string{accessKey(ref, model.Credentials{}): "empty"}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Type.Kind() != reflect.String {
			t.Fatalf("model.Credentials.%s is a %s: accessKey hashes strings only", f.Name, f.Type)
		}
		for _, val := range []string{"x", "x\x00"} {
			var c model.Credentials
			reflect.ValueOf(&c).Elem().Field(i).SetString(val)
			k := accessKey(ref, c)
			if other, ok := seen[k]; ok {
				t.Errorf("%s=%q and %s share an access cache key", f.Name, val, other)
			}
			seen[k] = f.Name + "=" + val
		}
	}
	a := accessKey(ref, model.Credentials{AccessKeyID: "ab", SecretAccessKey: "c"})
	if a == accessKey(ref, model.Credentials{AccessKeyID: "a", SecretAccessKey: "bc"}) {
		t.Error("values that run together share a key")
	}
}
