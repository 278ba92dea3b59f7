package oci

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/modelcache/modelcache/pkg/source"
)

// MaxDockerConfigBytes bounds a docker config (a Secret's
// .dockerconfigjson): Kubernetes caps a Secret at 1 MiB.
const MaxDockerConfigBytes = 1 << 20

// Login is what a docker config holds for one registry: a username and
// password (or a personal access token as the password), or an identity
// token (an OAuth2 refresh token for the registry's token service, as
// `docker login` stores for Azure ACR).
type Login struct {
	Username, Password string
	IdentityToken      string
}

// dockerConfig is the part of ~/.docker/config.json (and of a
// kubernetes.io/dockerconfigjson Secret) that holds logins. The older
// .dockercfg form is the auths map alone.
type dockerConfig struct {
	Auths map[string]dockerAuth `json:"auths"`
}

type dockerAuth struct {
	Auth          string `json:"auth"` // base64 of "username:password"
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// ErrNoLogin: the docker config holds no login for the registry.
var ErrNoLogin = errors.New("no login for this registry in the docker config")

// DockerConfigLogin picks registry's login out of a docker config (the
// JSON of a kubernetes.io/dockerconfigjson Secret, or of a .dockercfg
// one). An entry matches by host: "https://ghcr.io", "ghcr.io/v1/" and
// "ghcr.io" all name ghcr.io, and Docker Hub's historical
// "https://index.docker.io/v1/" names docker.io. Messages name
// registries, never credentials.
func DockerConfigLogin(config []byte, registry string) (Login, error) {
	if len(config) > MaxDockerConfigBytes {
		return Login{}, fmt.Errorf("docker config: %d bytes, over the %d a Secret can hold", len(config), MaxDockerConfigBytes)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(config, &cfg); err != nil {
		return Login{}, fmt.Errorf("docker config: not JSON of the .dockerconfigjson form: %s", jsonProblem(err))
	}
	if cfg.Auths == nil {
		var auths map[string]dockerAuth // .dockercfg: the map alone
		if json.Unmarshal(config, &auths) == nil {
			cfg.Auths = auths
		}
	}
	want := configHost(registry)
	var found *dockerAuth
	for k, a := range cfg.Auths {
		if configHost(k) != want {
			continue
		}
		if found != nil {
			return Login{}, fmt.Errorf("docker config: two entries name registry %s; keep one", registry)
		}
		found = &a
	}
	if found == nil {
		return Login{}, fmt.Errorf("docker config: %w %s (it has: %s)", ErrNoLogin, registry, configHosts(cfg.Auths))
	}
	l := Login{Username: found.Username, Password: found.Password, IdentityToken: found.IdentityToken}
	if found.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(found.Auth)
		if err != nil {
			return Login{}, fmt.Errorf("docker config: registry %s: \"auth\" is not base64", registry)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return Login{}, fmt.Errorf("docker config: registry %s: \"auth\" is not base64 of username:password", registry)
		}
		if (l.Username != "" && l.Username != user) || (l.Password != "" && l.Password != pass) {
			return Login{}, fmt.Errorf("docker config: registry %s: \"auth\" and \"username\"/\"password\" disagree", registry)
		}
		l.Username, l.Password = user, pass
	}
	switch {
	case l.IdentityToken != "" && l.Password != "":
		// docker keeps the username beside an identity token; a password
		// as well is two logins in one entry.
		return Login{}, fmt.Errorf("docker config: registry %s has both a password and an identitytoken; keep one", registry)
	case l.IdentityToken == "" && (l.Username == "" || l.Password == ""):
		return Login{}, fmt.Errorf("docker config: registry %s: the entry needs a username and password (or \"auth\"), or an identitytoken", registry)
	}
	return l, nil
}

// configHost is the registry host a docker config key names.
func configHost(key string) string {
	h := strings.ToLower(strings.TrimSpace(key))
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// configHosts lists the registries a config names, for an error message.
func configHosts(auths map[string]dockerAuth) string {
	if len(auths) == 0 {
		return "no entries"
	}
	hosts := make([]string, 0, len(auths))
	for k := range auths {
		if len(hosts) == 10 {
			hosts = append(hosts, "…")
			break
		}
		hosts = append(hosts, source.Trim(configHost(k)))
	}
	slices.Sort(hosts)
	return strings.Join(hosts, ", ")
}

// jsonProblem says where the JSON is wrong without quoting it (it may
// hold secrets).
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s is a JSON %s", te.Field, te.Value)
	}
	return "unreadable"
}
