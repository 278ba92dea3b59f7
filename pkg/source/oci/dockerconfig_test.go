package oci

import (
	"encoding/base64"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestDockerConfigLogin(t *testing.T) {
	for _, c := range []struct {
		name, config, registry string
		want                   Login
		err                    string // "" = no error
	}{
		{"auth", `{"auths":{"ghcr.io":{"auth":"` + b64("bot:ghp_x") + `"}}}`, "ghcr.io", Login{Username: "bot", Password: "ghp_x"}, ""},
		{"url key", `{"auths":{"https://ghcr.io/v1/":{"username":"bot","password":"pw"}}}`, "ghcr.io", Login{Username: "bot", Password: "pw"}, ""},
		{"port", `{"auths":{"reg.corp:5000":{"auth":"` + b64("u:p:with:colons") + `"}}}`, "reg.corp:5000", Login{Username: "u", Password: "p:with:colons"}, ""},
		{"docker hub", `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("u:p") + `"}}}`, "docker.io", Login{Username: "u", Password: "p"}, ""},
		{"identity token", `{"auths":{"acr.example.io":{"username":"00000000-0000-0000-0000-000000000000","identitytoken":"rt"}}}`, "acr.example.io",
			Login{Username: "00000000-0000-0000-0000-000000000000", IdentityToken: "rt"}, ""},
		{"dockercfg", `{"reg.corp":{"auth":"` + b64("u:p") + `"}}`, "reg.corp", Login{Username: "u", Password: "p"}, ""},
		{"other registry", `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"}}}`, "evil.example", Login{}, "no login for this registry"},
		{"port differs", `{"auths":{"reg.corp:5000":{"auth":"` + b64("u:p") + `"}}}`, "reg.corp", Login{}, "no login"},
		{"not json", `{"auths":`, "ghcr.io", Login{}, "syntax error"},
		{"bad base64", `{"auths":{"ghcr.io":{"auth":"%%%"}}}`, "ghcr.io", Login{}, "not base64"},
		{"no colon", `{"auths":{"ghcr.io":{"auth":"` + b64("justuser") + `"}}}`, "ghcr.io", Login{}, "username:password"},
		{"disagree", `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `","password":"q"}}}`, "ghcr.io", Login{}, "disagree"},
		{"two entries", `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"},"https://ghcr.io":{"auth":"` + b64("v:q") + `"}}}`, "ghcr.io", Login{}, "two entries"},
		{"empty entry", `{"auths":{"ghcr.io":{}}}`, "ghcr.io", Login{}, "needs a username"},
		{"token and password", `{"auths":{"ghcr.io":{"username":"u","password":"p","identitytoken":"t"}}}`, "ghcr.io", Login{}, "keep one"},
		{"type", `{"auths":{"ghcr.io":{"auth":5}}}`, "ghcr.io", Login{}, "JSON number"},
	} {
		got, err := DockerConfigLogin([]byte(c.config), c.registry)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.err)
		case got != c.want:
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "ghp_x") || strings.Contains(err.Error(), b64("u:p"))) {
			t.Errorf("%s: the error shows a credential: %v", c.name, err)
		}
	}
	if _, err := DockerConfigLogin(make([]byte, MaxDockerConfigBytes+1), "r"); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("an oversized config: %v", err)
	}
}

// Whatever the config: no panic, no half login, and errors never quote
// the config.
func FuzzDockerConfigLogin(f *testing.F) {
	f.Add(`{"auths":{"ghcr.io":{"auth":"`+b64("u:p")+`"}}}`, "ghcr.io")
	f.Add(`{"auths":{"https://index.docker.io/v1/":{"username":"u","password":"p"}}}`, "docker.io")
	f.Add(`{"reg:5000":{"identitytoken":"t"}}`, "reg:5000")
	f.Fuzz(func(t *testing.T, config, registry string) {
		l, err := DockerConfigLogin([]byte(config), registry)
		if err != nil {
			if len(config) > 8 && strings.Contains(err.Error(), config) {
				t.Fatalf("the error quotes the config: %v", err)
			}
			return
		}
		if l.IdentityToken == "" && (l.Username == "" || l.Password == "") {
			t.Fatalf("a half login: %+v", l)
		}
	})
}
