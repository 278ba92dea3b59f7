// Package gcs reads models from Google Cloud Storage (or an emulator or
// mirror of its JSON API): every object under a prefix is one file of the
// model, listed with objects.list (paginated) and read with ranged GETs of
// alt=media pinned to the generation the listing named, so an object
// overwritten during a download fails with source.ErrChanged instead of
// mixing two versions' bytes in one file.
//
// It speaks the JSON API over net/http (as pkg/source/hf does the Hub's):
// the official SDK would more than double the packages the cache agent
// links (docs/operations.md, "sources"). Requests carry an OAuth2 access
// token from a golang.org/x/oauth2 TokenSource: Application Default
// Credentials (workload identity on GKE, through the metadata server), a
// service account's JSON key (signed locally as a self-signed JWT, so a key
// names no server the agent would talk to), or none (public buckets).
//
// Everything the server sends is treated as written by an attacker:
// listings are bounded in files, pages and bytes, object names must stay
// inside the model, sizes and ranges are checked, redirects are not
// followed (the token goes to the endpoint only), and a ranged read yields
// exactly the bytes asked for or fails.
package gcs

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/modelcache/modelcache/pkg/source"
)

// DefaultEndpoint is Google Cloud Storage's JSON API.
const DefaultEndpoint = "https://storage.googleapis.com"

// Options configure a Client. The zero value reads public buckets of
// Google Cloud Storage without a token.
type Options struct {
	// Endpoint is GCS or an emulator/mirror of its JSON API: scheme and
	// host, without a trailing slash (default DefaultEndpoint).
	Endpoint string
	// TokenSource gives the access token sent (as a Bearer token) to
	// Endpoint only; nil sends none.
	TokenSource oauth2.TokenSource
	// HTTPClient (default: a client with the timeouts below). Its
	// CheckRedirect is replaced: redirects are not followed.
	HTTPClient *http.Client
	// MaxFiles and MaxPages bound a listing (defaults 100,000 and 10,000);
	// a server that pages on forever fails with source.ErrLimit.
	MaxFiles, MaxPages int
	// PageSize is how many objects a listing asks for per page (default
	// and GCS's maximum 1,000).
	PageSize int
	// UserAgent (default "modelcache").
	UserAgent string
}

// Client talks to one endpoint with one token source; safe for
// concurrent use.
type Client struct {
	endpoint *url.URL
	ts       oauth2.TokenSource
	http     *http.Client
	maxFiles int
	maxPages int
	pageSize int
	agent    string
}

// New checks the options and returns a client.
func New(o Options) (*Client, error) {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("gcs: endpoint %q: want http(s)://HOST[:PORT] without credentials or path", source.Redact(o.Endpoint))
	}
	u.Path = ""
	c := &Client{endpoint: u, ts: o.TokenSource, maxFiles: o.MaxFiles, maxPages: o.MaxPages, pageSize: o.PageSize, agent: o.UserAgent}
	if c.maxFiles <= 0 {
		c.maxFiles = 100_000
	}
	if c.maxPages <= 0 {
		c.maxPages = 10_000
	}
	if c.pageSize <= 0 || c.pageSize > maxPageSize {
		c.pageSize = maxPageSize
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
	// The JSON API answers where it was asked; a redirect would take the
	// token (or the request) somewhere the operator did not name.
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.http = &cp
	return c, nil
}

// Endpoint is the server the client talks to.
func (c *Client) Endpoint() string { return c.endpoint.String() }

// objectURL is the JSON API's URL of an object (name "" is the bucket's
// object list), with query q.
func (c *Client) objectURL(bucket, name string, q url.Values) string {
	s := c.endpoint.String() + "/storage/v1/b/" + url.PathEscape(bucket) + "/o"
	if name != "" {
		s += "/" + url.PathEscape(name)
	}
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// do sends a GET with the token and the user agent.
func (c *Client) do(ctx context.Context, rawURL, where, op string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, source.ProtocolError(where, op, "build request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.agent)
	if c.ts != nil {
		tok, err := c.ts.Token()
		if err != nil {
			return nil, tokenError(ctx, where, op, err)
		}
		tok.SetAuthHeader(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, source.TransportError(ctx, where, op, err)
	}
	return resp, nil
}

// ValidBucket checks a bucket name enough to keep it one path segment
// (model.ParseRef applies GCS's naming rules to refs).
func ValidBucket(b string) error {
	if b == "" || len(b) > 222 || strings.ContainsAny(b, "/?#%\\\x00") || b == "." || b == ".." {
		return fmt.Errorf("gcs: bucket %q is not a bucket name", source.Trim(b))
	}
	return nil
}

func where(bucket, prefix string) string {
	s := "gs://" + bucket
	if prefix != "" {
		s += "/" + prefix
	}
	return s
}
