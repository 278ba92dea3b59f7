// Package oci reads models packed as OCI artifacts from a registry (the
// distribution spec: Docker Hub, GHCR, ECR, Harbor, Zot, distribution):
// a tag (or digest) is resolved to its manifest digest, so what is listed
// and read is immutable; every layer of the manifest that names a file
// path (org.opencontainers.image.title, as `oras push` writes it, or
// ModelPack's org.cncf.model.filepath) is one file of the model, whose
// bytes are the layer's blob, read with ranged GETs. A layer's digest is
// the file's SHA-256, which the download must match.
//
// It speaks to the registry through oras-go's registry/remote and its auth
// client (anonymous, basic, or bearer tokens from the registry's token
// service; the credentials go to the registry's own origin only, never
// where a blob is redirected). Everything the registry sends is treated as
// written by an attacker: the manifest is bounded and must hash to its
// digest, paths must stay inside the model, sizes and digests are checked,
// and a ranged read yields exactly the bytes asked for or fails.
package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/modelcache/modelcache/pkg/source"
)

// MaxManifestBytes bounds a manifest (and an index): distribution caps
// them at 4 MiB, which holds some 20,000 layers.
const MaxManifestBytes = 4 << 20

// Options configure a Client for one registry. The zero value of the
// credentials reads anonymously.
type Options struct {
	// Registry is HOST[:PORT], as in oci://REGISTRY/REPO.
	Registry string
	// PlainHTTP talks http:// instead of https:// (a registry inside the
	// cluster without TLS). Never guessed: the caller says so.
	PlainHTTP bool
	// Username and Password, for the registry's basic auth or its token
	// service (a personal access token is usually the password). Sent to
	// the registry and the token realm it names, never elsewhere.
	Username, Password string
	// IdentityToken, instead of a password: an OAuth2 refresh token for
	// the registry's token service (docker config's "identitytoken").
	IdentityToken string
	// HTTPClient (default: a client with the timeouts below). Retries are
	// the caller's.
	HTTPClient *http.Client
	// MaxFiles bounds the layers of a listing (default 100,000); more is
	// source.ErrLimit.
	MaxFiles int
	// UserAgent (default "modelcache").
	UserAgent string
}

// Client talks to one registry with one set of credentials; safe for
// concurrent use.
type Client struct {
	registry string // HOST[:PORT]
	plain    bool
	auth     *auth.Client
	withCred bool
	maxFiles int
}

// New checks the options and returns a client.
func New(o Options) (*Client, error) {
	reg := registry.Reference{Registry: o.Registry}
	if o.Registry == "" || strings.ContainsAny(o.Registry, "/@?#") || reg.ValidateRegistry() != nil {
		return nil, fmt.Errorf("oci: registry %q: want HOST[:PORT]", source.Trim(o.Registry))
	}
	if o.IdentityToken == "" && (o.Username == "") != (o.Password == "") {
		return nil, errors.New("oci: a username needs a password and the other way round")
	}
	if o.IdentityToken != "" && o.Password != "" {
		return nil, errors.New("oci: a password and an identity token; give one")
	}
	if strings.ContainsAny(o.Username+o.Password+o.IdentityToken, "\r\n") || strings.Contains(o.Username, ":") {
		return nil, errors.New("oci: the username or password contains a line break (or the username a ':')")
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	c := &Client{registry: o.Registry, plain: o.PlainHTTP, maxFiles: o.MaxFiles, withCred: o.Username != "" || o.IdentityToken != ""}
	if c.maxFiles <= 0 {
		c.maxFiles = 100_000
	}
	agent := o.UserAgent
	if agent == "" {
		agent = "modelcache"
	}
	// The credential goes to this registry's host only (docker.io is
	// served by registry-1.docker.io): auth.Client asks for it by the
	// host a request went to.
	host := reg.Host()
	cred := auth.Credential{Username: o.Username, Password: o.Password, RefreshToken: o.IdentityToken}
	c.auth = &auth.Client{
		Client: hc,
		Header: http.Header{"User-Agent": {agent}},
		Cache:  auth.NewCache(),
		Credential: func(_ context.Context, hostport string) (auth.Credential, error) {
			if hostport == host && c.withCred {
				return cred, nil
			}
			return auth.EmptyCredential, nil
		},
	}
	return c, nil
}

// Registry is the HOST[:PORT] the client talks to.
func (c *Client) Registry() string { return c.registry }

// repository is repo at the registry, through the client.
func (c *Client) repository(repo string) (*remote.Repository, error) {
	ref := registry.Reference{Registry: c.registry, Repository: repo}
	if err := ref.ValidateRepository(); err != nil || len(repo) > 255 {
		return nil, fmt.Errorf("oci: repository %q: want lowercase path components (the distribution spec's name grammar)", source.Trim(repo))
	}
	return &remote.Repository{Client: c.auth, Reference: ref, PlainHTTP: c.plain,
		ManifestMediaTypes: acceptManifests, MaxMetadataBytes: MaxManifestBytes}, nil
}

func (c *Client) where(repo, at string) string {
	s := "oci://" + c.registry + "/" + repo
	switch {
	case strings.HasPrefix(at, "sha256:"):
		s += "@" + at
	case at != "":
		s += ":" + at
	}
	return s
}
