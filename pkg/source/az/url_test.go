package az_test

import (
	"strings"
	"testing"

	"github.com/modelcache/modelcache/pkg/source/az"
)

func TestServiceURL(t *testing.T) {
	for endpoint, want := range map[string]string{
		"": "https://acct.blob.core.windows.net",
		"https://acct.blob.core.chinacloudapi.cn":   "https://acct.blob.core.chinacloudapi.cn",
		"https://blob.core.usgovcloudapi.net":       "https://acct.blob.core.usgovcloudapi.net",
		"http://127.0.0.1:10000":                    "http://127.0.0.1:10000/acct",
		"http://azurite.dev:10000/":                 "http://azurite.dev:10000/acct",
		"https://ACCT.privatelink.blob.example:443": "https://ACCT.privatelink.blob.example:443",
	} {
		got, err := az.ServiceURL("acct", endpoint)
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", endpoint, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://h", "http://u:p@h", "http://h/path", "http://h?x=1", "h:10000"} {
		if _, err := az.ServiceURL("acct", bad); err == nil || strings.Contains(err.Error(), "u:p") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for name, o := range map[string]az.Options{
		"bad account":     {Account: "A-b"},
		"key and SAS":     {Account: "acct", AccountKey: "a2V5", SASToken: "sig=x"},
		"key not base64":  {Account: "acct", AccountKey: "not base64!"},
		"SAS without sig": {Account: "acct", SASToken: "sv=2024"},
	} {
		if _, err := az.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
