package agent_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/modelcache/modelcache/internal/aztest"
	"github.com/modelcache/modelcache/pkg/agent"
	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/cache"
	"github.com/modelcache/modelcache/pkg/fetch"
	"github.com/modelcache/modelcache/pkg/model"
)

// An Azure model the agent holds is served to a volume only if the
// volume's own key or SAS could read it from the account: on a hit as on a
// miss, and whatever another volume's credentials were granted.
func TestAzureHitChecksVolumeCredentials(t *testing.T) {
	s := aztest.Start(t)
	s.CreateContainer("models")
	s.CreateContainer("other")
	w := bytes.Repeat([]byte("weights!"), 1000)
	s.Put("models", "m/w.bin", w)
	s.Put("models", "m/config.json", []byte(`{}`))
	store, err := cache.Open(t.TempDir(), cache.Options{Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fetch.New(map[string]fetch.Source{"blobs": {Type: fetch.SourceAzure, Endpoint: s.Endpoint, Account: s.Account, AccountKey: s.Key}},
		fetch.WithAllowedEndpoints([]string{s.Endpoint}))
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(store, f, nil, nil)
	t.Cleanup(func() { a.Close(); store.Close() })
	ensure := func(ref string, c *model.Credentials) (agentapi.Progress, error) {
		t.Helper()
		r, err := model.ParseRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		var acc *agentapi.Access
		if c != nil {
			acc = &agentapi.Access{Namespace: "x", Credentials: c}
		}
		return a.Ensure(context.Background(), r, agentapi.EnsureOptions{Wait: time.Minute, Access: acc})
	}
	ref := "az://" + s.Account + "/models/m?endpoint=" + s.Endpoint
	// The agent's own source fetches the blobs; the endpoint ref is then
	// fetched with a good SAS, so the denials below are all cache hits.
	if p, err := ensure("az://"+s.Account+"/models/m?source=blobs", nil); err != nil || p.State != agentapi.StateReady {
		t.Fatalf("source: %+v %v", p, err)
	}
	good := &model.Credentials{SASToken: s.SAS("models", "rl")}
	if p, err := ensure(ref, good); err != nil || p.State != agentapi.StateReady {
		t.Fatalf("a read+list SAS: %+v %v", p, err)
	}
	for name, c := range map[string]*model.Credentials{
		"list-only SAS":       {SASToken: s.SAS("models", "l")},
		"another container's": {SASToken: s.SAS("other", "rl")},
		"wrong key":           {AccountKey: "AAAA" + s.Key[4:]},
	} {
		// Twice: the second answer comes from the access cache.
		for range 2 {
			if _, err := ensure(ref, c); !errors.Is(err, fetch.ErrAccessDenied) {
				t.Errorf("%s, on a hit: %v, want access denied", name, err)
			}
		}
	}
	// Answers are per credential: the good SAS is still served.
	if _, err := ensure(ref, &model.Credentials{SASToken: s.SAS("models", "rl")}); err != nil {
		t.Errorf("the good SAS again: %v", err)
	}
}
