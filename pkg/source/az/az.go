// Package az reads models from Azure Blob Storage (and what speaks its
// API: Azurite, Azure Stack, sovereign clouds): every blob under a prefix
// of a container is one file of the model, at its name relative to the
// prefix, listed with its size and ETag; a file is read with ranged GETs
// conditioned on that ETag (If-Match), so a blob overwritten during a
// download fails with source.ErrChanged instead of mixing two versions.
//
// It speaks through the official SDK's container and blob clients
// (azure-sdk-for-go/sdk/storage/azblob), with the SDK's retries off (the
// fetcher retries per part) and its HTTP transport ours. Credentials are a
// shared key, a SAS token, an Entra ID token credential (workload
// identity), or none (a public container); they go to the account's blob
// service URL only. Everything the service sends is treated as written by
// an attacker: a listing page and an error body are bounded in bytes, a
// listing in pages and files, blob names must stay inside the model, and a
// ranged read yields exactly the bytes asked for or fails.
package az

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/modelcache/modelcache/pkg/source"
)

// Defaults of Options.
const (
	DefaultMaxFiles     = 100_000
	DefaultMaxPages     = 10_000
	DefaultPageSize     = 5000     // the service's own maximum
	DefaultMaxPageBytes = 32 << 20 // a page of 5,000 blobs with metadata is a few MB
	// maxErrorBytes bounds an error answer's body: the SDK reads it whole.
	maxErrorBytes = 64 << 10
)

// Options configure a Client for one storage account. At most one of
// AccountKey, SASToken and Credential is set; none reads anonymously (a
// container with public access).
type Options struct {
	// Account is the storage account's name.
	Account string
	// Endpoint is "" (https://ACCOUNT.blob.core.windows.net) or
	// http(s)://HOST[:PORT]: the account's own host (its first label is
	// the account), a cloud's blob host to put the account in front of
	// (https://blob.core.chinacloudapi.cn), or else a server that takes
	// the account as the first segment of the path (Azurite:
	// http://127.0.0.1:10000 serves http://127.0.0.1:10000/ACCOUNT).
	Endpoint string
	// AccountKey is the account's shared key (base64).
	AccountKey string
	// SASToken is a shared access signature: the query string of a SAS
	// URL, with or without its leading '?'.
	SASToken string
	// Credential is an Entra ID token credential (workload identity,
	// managed identity); sent over HTTPS only.
	Credential azcore.TokenCredential
	// HTTPClient (default: a client with the timeouts below). Retries are
	// the caller's.
	HTTPClient *http.Client
	// MaxFiles and MaxPages bound a listing; past them is source.ErrLimit.
	MaxFiles, MaxPages int
	// PageSize is how many blobs a listing page asks for (default 5000).
	PageSize int32
	// MaxPageBytes bounds the body of one listing page (default 32 MiB).
	MaxPageBytes int64
}

// Client talks to one storage account with one credential; safe for
// concurrent use.
type Client struct {
	account, service string // service: the account's blob service URL
	creds            string // how it authenticates, for messages
	o                Options
	newContainer     func(url string) (*container.Client, error)
}

// New checks the options and returns a client.
func New(o Options) (*Client, error) {
	if !accountRE(o.Account) {
		return nil, fmt.Errorf("az: account %q: want 3-24 lowercase letters and digits", source.Trim(o.Account))
	}
	service, err := ServiceURL(o.Account, o.Endpoint)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, set := range []bool{o.AccountKey != "", o.SASToken != "", o.Credential != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("az: give one of an account key, a SAS token and a token credential")
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxPages <= 0 {
		o.MaxPages = DefaultMaxPages
	}
	if o.PageSize <= 0 || o.PageSize > DefaultPageSize {
		o.PageSize = DefaultPageSize
	}
	if o.MaxPageBytes <= 0 {
		o.MaxPageBytes = DefaultMaxPageBytes
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
	copts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: boundedTransport{hc: hc, maxList: o.MaxPageBytes},
		// Retries are the fetcher's: per part, from the last byte written,
		// never for answers a retry cannot change.
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Telemetry: policy.TelemetryOptions{ApplicationID: "modelcache"},
	}}
	c := &Client{account: o.Account, service: service, o: o}
	switch {
	case o.AccountKey != "":
		cred, err := container.NewSharedKeyCredential(o.Account, o.AccountKey)
		if err != nil {
			// The SDK's message does not hold the key, but say it ourselves.
			return nil, errors.New("az: the account key is not valid base64")
		}
		c.creds = "a shared key"
		c.newContainer = func(u string) (*container.Client, error) {
			return container.NewClientWithSharedKeyCredential(u, cred, copts)
		}
	case o.SASToken != "":
		sas := strings.TrimPrefix(strings.TrimSpace(o.SASToken), "?")
		q, err := url.ParseQuery(sas)
		if err != nil || q.Get("sig") == "" || strings.ContainsAny(sas, "\r\n #") {
			return nil, errors.New("az: the SAS token is not a query string with a signature (sig=)")
		}
		c.creds = "a SAS token"
		c.newContainer = func(u string) (*container.Client, error) {
			return container.NewClientWithNoCredential(u+"?"+sas, copts)
		}
	case o.Credential != nil:
		if !strings.HasPrefix(service, "https://") {
			return nil, fmt.Errorf("az: %s: an Entra ID token is sent over HTTPS only", service)
		}
		c.creds = "an Entra ID token"
		cred := o.Credential
		c.newContainer = func(u string) (*container.Client, error) {
			return container.NewClient(u, tokenCredential{cred}, copts)
		}
	default:
		c.creds = "no credentials"
		c.newContainer = func(u string) (*container.Client, error) {
			return container.NewClientWithNoCredential(u, copts)
		}
	}
	return c, nil
}

// ServiceURL is the blob service URL of account at endpoint (see
// Options.Endpoint).
func ServiceURL(account, endpoint string) (string, error) {
	if endpoint == "" {
		return "https://" + account + ".blob.core.windows.net", nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		shown := source.Trim(endpoint)
		if err != nil || u.User != nil {
			shown = "(not shown)"
		}
		return "", fmt.Errorf("az: endpoint %s: want http(s)://HOST[:PORT] without credentials or path", shown)
	}
	base := u.Scheme + "://" + u.Host
	host := strings.ToLower(u.Hostname())
	first, _, _ := strings.Cut(host, ".")
	switch {
	case first == account && strings.Contains(host, "."):
		return base, nil
	case first == "blob" && strings.Contains(host, "."):
		return u.Scheme + "://" + account + "." + u.Host, nil
	}
	return base + "/" + account, nil
}

// Account is the storage account's name; Service its blob service URL.
func (c *Client) Account() string { return c.account }
func (c *Client) Service() string { return c.service }

// tokenCredential marks a token credential's failures, so they read as
// access denied and are not retried.
type tokenCredential struct{ c azcore.TokenCredential }

func (t tokenCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := t.c.GetToken(ctx, o)
	if err != nil {
		return tok, &credentialError{err}
	}
	return tok, nil
}

type credentialError struct{ err error }

func (e *credentialError) Error() string { return "get an Entra ID token: " + e.err.Error() }
func (e *credentialError) Unwrap() error { return e.err }

// boundedTransport caps what the SDK reads into memory: a listing page's
// body at maxList bytes, an error's at maxErrorBytes. A ranged read's body
// is the caller's to bound (source.ExactReader).
type boundedTransport struct {
	hc      *http.Client
	maxList int64
}

// errTooLarge: an answer passed its bound.
var errTooLarge = errors.New("az: the server's answer is larger than allowed")

func (t boundedTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.hc.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode >= 300:
		resp.Body = &capReader{r: resp.Body, left: maxErrorBytes, truncate: true}
	case req.URL.Query().Get("comp") == "list":
		resp.Body = &capReader{r: resp.Body, left: t.maxList}
	}
	return resp, nil
}

// capReader fails (or, for an error body, ends) after left bytes.
type capReader struct {
	r        io.ReadCloser
	left     int64
	truncate bool
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		if c.truncate {
			return 0, io.EOF
		}
		// One more byte tells a body of exactly the bound from a longer one.
		var b [1]byte
		if n, _ := io.ReadFull(c.r, b[:]); n == 0 {
			return 0, io.EOF
		}
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *capReader) Close() error { return c.r.Close() }

func accountRE(s string) bool {
	if len(s) < 3 || len(s) > 24 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}
