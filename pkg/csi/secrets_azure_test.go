package csi_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/csi"
)

// An Azure volume's Secret: an account key or a SAS token, under our key
// names or the Azure CLI's environment names; never shown, never mixed.
func TestParseAzureSecrets(t *testing.T) {
	for in, want := range map[string]string{
		"accountKey":              "key",
		"AZURE_STORAGE_KEY":       "key",
		"sasToken":                "sas",
		"AZURE_STORAGE_SAS_TOKEN": "sas",
	} {
		c, err := csi.ParseSecrets(map[string]string{in: " c2VjcmV0LXZhbHVl \n", "unrelated": "x"})
		if err != nil || c == nil {
			t.Fatalf("%s: %v %v", in, c, err)
		}
		if got := map[bool]string{true: "key", false: "sas"}[c.AccountKey != ""]; got != want || (c.AccountKey+c.SASToken) != "c2VjcmV0LXZhbHVl" {
			t.Errorf("%s: %+v", in, c)
		}
		if s := fmt.Sprint(*c) + c.GoString(); strings.Contains(s, "c2VjcmV0") {
			t.Errorf("%s: shown: %s", in, s)
		}
	}
	for _, in := range []map[string]string{
		{"accountKey": "c2VjcmV0", "sasToken": "sig=c2VjcmV0"},
		{"accountKey": "c2VjcmV0", "accessKeyID": "AKIA", "secretAccessKey": "c2VjcmV0"},
		{"sasToken": "sig=c2VjcmV0", "token": "hf_c2VjcmV0"},
	} {
		_, err := csi.ParseSecrets(in)
		if err == nil || strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "AKIA") {
			t.Errorf("%v: %v", in, err)
		}
	}
}
