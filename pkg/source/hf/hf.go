// Package hf reads models from the Hugging Face Hub (or a mirror of its
// API): a revision (branch, tag or commit) is resolved to its commit, so
// what is listed and read is immutable; the commit's files are listed with
// the tree API; bytes come from /{repo}/resolve/{commit}/{path} with Range,
// following the Hub's redirects to its CDN. LFS files carry the SHA-256 the
// Hub publishes (lfs.oid), which the download must match.
//
// Everything the server sends is treated as written by an attacker: page
// links may not leave the endpoint, listings are bounded in files, pages
// and bytes, paths must stay inside the model, and the token goes only to
// the endpoint's own host, never to where it redirects.
package hf

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/modelcache/modelcache/pkg/source"
)

// DefaultEndpoint is the public Hub.
const DefaultEndpoint = "https://huggingface.co"

// Options configure a Client. The zero value reads the public Hub without
// a token.
type Options struct {
	// Endpoint is the Hub or a mirror (HF_ENDPOINT): scheme and host,
	// without a trailing slash (default DefaultEndpoint).
	Endpoint string
	// Token is an access token (HF_TOKEN) for private and gated repos,
	// sent as a Bearer token to Endpoint only.
	Token string
	// HTTPClient (default: a client with the timeouts below). Its
	// CheckRedirect is replaced: the token must not follow redirects.
	HTTPClient *http.Client
	// MaxFiles and MaxPages bound a listing (defaults 100,000 and 10,000);
	// a server that pages on forever fails with source.ErrLimit.
	MaxFiles, MaxPages int
	// UserAgent (default "modelcache").
	UserAgent string
}

// Client talks to one Hub endpoint with one token; safe for concurrent use.
type Client struct {
	endpoint *url.URL
	token    string
	http     *http.Client
	maxFiles int
	maxPages int
	agent    string
}

// maxRedirects bounds a resolve's redirect chain (the Hub uses one).
const maxRedirects = 5

// New checks the options and returns a client.
func New(o Options) (*Client, error) {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("hf: endpoint %q: want http(s)://HOST[:PORT] without credentials or path", source.Redact(o.Endpoint))
	}
	u.Path = ""
	if strings.ContainsAny(o.Token, "\r\n \t") {
		return nil, errors.New("hf: the token contains whitespace or a line break")
	}
	c := &Client{endpoint: u, token: o.Token, maxFiles: o.MaxFiles, maxPages: o.MaxPages, agent: o.UserAgent}
	if c.maxFiles <= 0 {
		c.maxFiles = 100_000
	}
	if c.maxPages <= 0 {
		c.maxPages = 10_000
	}
	if c.agent == "" {
		c.agent = "modelcache"
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
	cp := *hc
	cp.CheckRedirect = c.checkRedirect
	c.http = &cp
	return c, nil
}

// checkRedirect keeps the token on the endpoint's own host and port: the
// Hub redirects LFS files to a CDN, which must never see it. (net/http
// keeps Authorization for the same host on another port, and for
// subdomains.)
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if !c.sameOrigin(req.URL) {
		req.Header.Del("Authorization")
	}
	return nil
}

func (c *Client) sameOrigin(u *url.URL) bool {
	return u.Scheme == c.endpoint.Scheme && u.Host == c.endpoint.Host
}

// Endpoint is the Hub the client talks to.
func (c *Client) Endpoint() string { return c.endpoint.String() }

var (
	repoRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
	commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	gitOIDRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// ValidRepo checks a repo id: "ORG/NAME" of the Hub's characters, which
// keeps it one path segment each, with nothing to escape.
func ValidRepo(repo string) error {
	if !repoRE.MatchString(repo) || strings.Contains(repo, "..") {
		return fmt.Errorf("hf: repo %q: want ORG/NAME (letters, digits, '.', '_', '-')", repo)
	}
	return nil
}

// Resolve returns the commit a revision (branch, tag or commit; "" is
// main) names now.
func (c *Client) Resolve(ctx context.Context, repo, revision string) (string, error) {
	where := where(repo, revision)
	if err := ValidRepo(repo); err != nil {
		return "", err
	}
	if revision == "" {
		revision = "main"
	}
	u := c.url("/api/models/" + repo + "/revision/" + url.PathEscape(revision))
	var info struct {
		SHA string `json:"sha"`
	}
	if err := c.getJSON(ctx, u, where, "resolve", 1<<20, &info); err != nil {
		return "", err
	}
	if !commitRE.MatchString(info.SHA) {
		return "", source.ProtocolError(where, "resolve", "the Hub answered commit %q, not 40 hex digits", source.Trim(info.SHA))
	}
	if commitRE.MatchString(revision) && info.SHA != revision {
		return "", source.ProtocolError(where, "resolve", "asked for commit %s, the Hub answered %s", revision, info.SHA)
	}
	return info.SHA, nil
}

func (c *Client) url(escapedPath string) *url.URL {
	u := *c.endpoint
	u.RawPath = escapedPath
	p, err := url.PathUnescape(escapedPath)
	if err != nil {
		p = escapedPath // never: callers escape what they build
	}
	u.Path = p
	return &u
}

// do sends a request to the endpoint with the token and the user agent.
func (c *Client) do(ctx context.Context, method string, u *url.URL, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.agent)
	if c.token != "" && c.sameOrigin(u) {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.http.Do(req)
}

// getJSON GETs u and decodes at most limit bytes of JSON into v.
func (c *Client) getJSON(ctx context.Context, u *url.URL, where, op string, limit int64, v any) error {
	resp, err := c.do(ctx, http.MethodGet, u, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return source.TransportError(ctx, where, op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(where, op, resp)
	}
	return source.DecodeJSON(resp.Body, limit, where, op, v)
}

func where(repo, revision string) string {
	s := "hf://" + repo
	if revision != "" {
		s += "@" + revision
	}
	return s
}
