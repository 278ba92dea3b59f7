package model_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/model"
)

func TestParseAzureRef(t *testing.T) {
	r, err := model.ParseRef("az://devstoreaccount1/models/llama-3/8b/?endpoint=http://127.0.0.1:10000&include=*.json")
	if err != nil {
		t.Fatal(err)
	}
	want := model.Ref{Scheme: model.SchemeAzure, Account: "devstoreaccount1", Bucket: "models", Prefix: "llama-3/8b",
		Endpoint: "http://127.0.0.1:10000", Include: "*.json"}
	if r != want {
		t.Fatalf("%+v, want %+v", r, want)
	}
	if s := r.String(); s != "az://devstoreaccount1/models/llama-3/8b?endpoint=http%3A%2F%2F127.0.0.1%3A10000&include=*.json" {
		t.Errorf("String %q", s)
	}
	// Azurite's connection strings name the blob endpoint with the account.
	if r := mustParse(t, "az://devstoreaccount1/models/m?endpoint=http://127.0.0.1:10000/devstoreaccount1"); r.Endpoint != "http://127.0.0.1:10000" {
		t.Errorf("endpoint %q", r.Endpoint)
	}
	whole, err := model.ParseRef("az://acct/models")
	if err != nil || whole.Prefix != "" || whole.String() != "az://acct/models" {
		t.Errorf("a whole container: %+v %v", whole, err)
	}
	// Two accounts' containers of one name are two models, two scopes.
	a, b := mustParse(t, "az://alice/models/m"), mustParse(t, "az://bob/models/m")
	if a.ID() == b.ID() || a.Scope() == b.Scope() || a.Scope() == mustParse(t, "s3://models/m").Scope() {
		t.Errorf("IDs %s %s, scopes %s %s", a.ID(), b.ID(), a.Scope(), b.Scope())
	}
	if s := mustParse(t, "az://alice/models/m?source=x").Scope(); s != "az:source=x/alice/models" {
		t.Errorf("scope %s", s)
	}
	for in, msg := range map[string]string{
		"az://Acct/c/p":                           "account",
		"az://ab/c/p":                             "account",
		"az://acct/C/p":                           "container",
		"az://acct/c--x/p":                        "container",
		"az://acct/ccc/../p":                      "prefix",
		"az://acct":                               "container",
		"az://acct/c/p?region=westeurope":         "region",
		"az://acct.blob.core.windows.net/c/p":     "az://ACCOUNT/CONTAINER/PREFIX",
		"https://acct.blob.core.windows.net/c/p":  "az://acct/c/p",
		"abfss://c@acct.dfs.core.windows.net/p":   "az://ACCOUNT/CONTAINER/PREFIX",
		"azure://acct/c/p":                        "az://ACCOUNT/CONTAINER/PREFIX",
		"az://acct/c/p?endpoint=http://h/devstor": "endpoint",
	} {
		_, err := model.ParseRef(in)
		if !errors.Is(err, model.ErrInvalidRef) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want an error with %q", in, err, msg)
		}
	}
}

func mustParse(t *testing.T, s string) model.Ref {
	t.Helper()
	r, err := model.ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAzureCredentials(t *testing.T) {
	for _, c := range []model.Credentials{{AccountKey: "c2VjcmV0a2V5"}, {SASToken: "sv=1&sig=c2VjcmV0a2V5"}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%v: %v", c, err)
		}
		for _, s := range []string{c.String(), fmt.Sprintf("%#v", c), fmt.Sprint(c)} {
			if strings.Contains(s, "c2VjcmV0") {
				t.Errorf("shown: %s", s)
			}
		}
	}
	for _, c := range []model.Credentials{{AccountKey: "k", SASToken: "s"}, {AccountKey: "k", Token: "hf"}, {SASToken: "s", AccessKeyID: "a", SecretAccessKey: "b"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}
