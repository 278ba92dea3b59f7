package fetch_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/internal/aztest"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// One Azurite for every case: starting node costs seconds.
func TestAzure(t *testing.T) {
	s := aztest.Start(t)
	ctx := context.Background()
	s.CreateContainer("models")
	big := make([]byte, 2*model.LeafSize+12345) // three parts
	for i := range big {
		big[i] = byte(i * 31)
	}
	files := map[string][]byte{
		"config.json":                  []byte(`{"architectures":["LlamaForCausalLM"]}`),
		"model.safetensors":            big,
		"pytorch_model.bin":            big[:1000],
		"original/consolidated.00.pth": big[:5000],
		"empty.txt":                    {},
	}
	for k, v := range files {
		s.Put("models", "llama/"+k, v)
	}
	s.Put("models", "llama-2/other", []byte("not of the model"))
	newStore := func(t *testing.T) *cache.Store {
		store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		return store
	}
	f, err := fetch.New(map[string]fetch.Source{
		"blobs": {Type: fetch.SourceAzure, Endpoint: s.Endpoint, Account: s.Account, AccountKey: s.Key},
		"hub":   {Type: fetch.SourceHub},
		// The blob endpoint as an Azurite connection string writes it.
		"conn": {Type: fetch.SourceAzure, Endpoint: s.Service, Account: s.Account, SASToken: s.SAS("models", "rl")},
	}, fetch.WithPartSize(model.LeafSize), fetch.WithAllowedEndpoints([]string{s.Endpoint}), fetch.WithMaxAttempts(2))
	if err != nil {
		t.Fatal(err)
	}
	keep := func(paths ...string) map[string][]byte {
		out := map[string][]byte{}
		for _, p := range paths {
			out[p] = files[p]
		}
		return out
	}

	t.Run("fetch", func(t *testing.T) {
		store := newStore(t)
		ref := mustRef(t, "az://"+s.Account+"/models/llama?source=blobs")
		m, st := listAndFetch(t, f, ref, store)
		checkTree(t, store, m, files)
		if want := int64(len(big) + 1000 + 5000 + len(files["config.json"])); st.BytesFetched != want {
			t.Errorf("fetched %d bytes, want %d", st.BytesFetched, want)
		}
		sel := mustRef(t, "az://"+s.Account+"/models/llama?source=blobs&include=*.safetensors,*.json&exclude=original/")
		m2, st2 := listAndFetch(t, f, sel, store)
		checkTree(t, store, m2, keep("config.json", "model.safetensors"))
		if st2.BytesFetched != 0 {
			t.Errorf("the selection fetched %d bytes; every file was held", st2.BytesFetched)
		}
		m3, _ := listAndFetch(t, f, mustRef(t, "az://"+s.Account+"/models/llama?source=conn&include=*.json"), store)
		checkTree(t, store, m3, keep("config.json"))
		if _, err := f.List(ctx, mustRef(t, "az://"+s.Account+"/models/llama?source=blobs&include=*.gguf"), nil); !errors.Is(err, fetch.ErrNotFound) {
			t.Errorf("a pattern that selects nothing: %v", err)
		}
		for _, r := range []string{"az://" + s.Account + "/nope/llama?source=blobs", "az://" + s.Account + "/models/llama-3?source=blobs"} {
			if _, err := f.List(ctx, mustRef(t, r), nil); !errors.Is(err, fetch.ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", r, err)
			}
		}
	})

	t.Run("changed between list and fetch", func(t *testing.T) {
		store := newStore(t)
		s.Put("models", "moving/w.bin", big[:3*model.LeafSize/2])
		ref := mustRef(t, "az://"+s.Account+"/models/moving?source=blobs")
		m, err := f.List(ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Put("models", "moving/w.bin", big[1:3*model.LeafSize/2+1])
		if _, _, err := f.Fetch(ctx, ref, nil, m, store, nil); !errors.Is(err, fetch.ErrChanged) {
			t.Fatalf("an overwritten blob: %v, want ErrChanged", err)
		}
		m2, _ := listAndFetch(t, f, ref, store)
		checkTree(t, store, m2, map[string][]byte{"w.bin": big[1 : 3*model.LeafSize/2+1]})
	})

	t.Run("volume credentials", func(t *testing.T) {
		ref := mustRef(t, "az://"+s.Account+"/models/llama?endpoint="+s.Endpoint)
		for name, tc := range map[string]struct {
			creds       *model.Credentials
			list, check error
		}{
			"no credentials":  {nil, fetch.ErrAccessDenied, fetch.ErrAccessDenied},
			"key":             {&model.Credentials{AccountKey: s.Key}, nil, nil},
			"wrong key":       {&model.Credentials{AccountKey: "AAAA" + s.Key[4:]}, fetch.ErrAccessDenied, fetch.ErrAccessDenied},
			"SAS list only":   {&model.Credentials{SASToken: s.SAS("models", "l")}, nil, fetch.ErrAccessDenied},
			"SAS read+list":   {&model.Credentials{SASToken: s.SAS("models", "rl")}, nil, nil},
			"SAS other":       {&model.Credentials{SASToken: s.SAS("other", "rl")}, fetch.ErrAccessDenied, fetch.ErrAccessDenied},
			"S3 keys":         {&model.Credentials{AccessKeyID: "a", SecretAccessKey: "b"}, model.ErrInvalidRef, model.ErrInvalidRef},
			"key and a token": {&model.Credentials{AccountKey: s.Key, Token: "hf_x"}, model.ErrInvalidRef, model.ErrInvalidRef},
		} {
			_, err := f.List(ctx, ref, tc.creds)
			if (tc.list == nil) != (err == nil) || (tc.list != nil && !errors.Is(err, tc.list)) {
				t.Errorf("%s: list: %v, want %v", name, err, tc.list)
			}
			err = f.CheckAccess(ctx, ref, tc.creds)
			if (tc.check == nil) != (err == nil) || (tc.check != nil && !errors.Is(err, tc.check)) {
				t.Errorf("%s: check: %v, want %v", name, err, tc.check)
			}
			if err != nil && strings.Contains(err.Error(), s.Key[:20]) {
				t.Errorf("%s: the error shows the key: %v", name, err)
			}
		}
		// The volume's key fetches through a named source's endpoint too.
		store := newStore(t)
		named := mustRef(t, "az://"+s.Account+"/models/llama?source=blobs&include=config.json")
		m, err := f.List(ctx, named, &model.Credentials{SASToken: s.SAS("models", "rl")})
		if err != nil {
			t.Fatal(err)
		}
		full, _, err := f.Fetch(ctx, named, &model.Credentials{SASToken: s.SAS("models", "rl")}, m, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, store, full, keep("config.json"))
	})

	t.Run("rules", func(t *testing.T) {
		for r, class := range map[string]error{
			"az://" + s.Account + "/models/llama?source=nope":                               fetch.ErrUnknownSource,
			"az://" + s.Account + "/models/llama?source=hub":                                model.ErrInvalidRef,
			"az://otheraccount/models/llama?source=blobs":                                   model.ErrInvalidRef, // the key goes to its account only
			"az://" + s.Account + "/models/llama?source=blobs&endpoint=http://127.0.0.1:9":  model.ErrInvalidRef,
			"az://" + s.Account + "/models/llama?endpoint=http://not-allowed.example:10000": fetch.ErrAccessDenied,
			"s3://bucket/llama?source=blobs":                                                model.ErrInvalidRef,
			"hf://org/llama?source=blobs":                                                   model.ErrInvalidRef,
		} {
			if _, err := f.List(ctx, mustRef(t, r), nil); !errors.Is(err, class) {
				t.Errorf("%s: %v, want %v", r, err, class)
			}
		}
	})
}

// An Azure source in the sources file: its key from a file, never shown.
func TestAzureSourcesFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("c2VjcmV0LWtleS12YWx1ZQ==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(body string) string {
		p := filepath.Join(dir, "sources.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srcs, err := fetch.LoadSources(write(`sources:
  blobs:
    type: azure
    account: mystorage
    accountKeyFile: key
  sas:
    type: azure
    account: other
    sasToken: "sv=2024&sig=c2VjcmV0LXNpZw"
  public:
    type: azure
    anonymous: true
  wi:
    type: azure
    endpoint: https://blob.core.chinacloudapi.cn
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := srcs["blobs"].AccountKeyFile; got != filepath.Join(dir, "key") {
		t.Errorf("accountKeyFile %q", got)
	}
	for name, s := range srcs {
		for _, shown := range []string{s.String(), fmt.Sprintf("%#v", s), fmt.Sprintf("%v", s)} {
			if strings.Contains(shown, "c2VjcmV0") {
				t.Errorf("%s: a secret is shown: %s", name, shown)
			}
		}
	}
	for body, want := range map[string]string{
		"sources:\n  x:\n    type: azure\n    accountKey: a2V5\n":                                       "set account",
		"sources:\n  x:\n    type: azure\n    account: a1b2c\n    accountKey: k\n    anonymous: true\n": "give one of",
		"sources:\n  x:\n    type: azure\n    account: A_B\n":                                           "account",
		"sources:\n  x:\n    type: azure\n    region: eu\n":                                             "type: azure takes",
		"sources:\n  x:\n    account: abc\n":                                                            "for sources of type: azure",
		"sources:\n  x:\n    type: azure\n    account: abc\n    accountKeyFile: missing\n":              "accountKeyFile",
	} {
		if _, err := fetch.LoadSources(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", body, err, want)
		}
	}
}
