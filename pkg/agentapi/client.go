package agentapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Client talks to an agent over its unix socket. Errors wrap this package's
// sentinels (ErrNotFound, ErrAccessDenied, ErrUnavailable, …).
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the agent socket at path.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Ensure asks the agent to make ref available (see pkg/agent Agent.Ensure). With
// onProgress set, progress streams to it while the agent waits.
func (c *Client) Ensure(ctx context.Context, ref string, opts EnsureOptions, onProgress func(Progress)) (Progress, error) {
	req := EnsureRequest{Ref: ref, Refresh: opts.Refresh, WaitSeconds: opts.Wait.Seconds(), Watch: onProgress != nil, Access: opts.Access,
		WarmPageCache: opts.WarmPageCache}
	var p Progress
	if onProgress == nil {
		return p, c.call(ctx, http.MethodPost, "/v1/ensure", req, &p)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/ensure", req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return p, decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	got := false
	for sc.Scan() {
		var next Progress
		if err := json.Unmarshal(sc.Bytes(), &next); err != nil {
			return p, fmt.Errorf("%w: agent sent a bad progress line: %v", ErrInternal, err)
		}
		if got {
			onProgress(p)
		}
		p, got = next, true
	}
	if err := sc.Err(); err != nil {
		return p, fmt.Errorf("%w: reading progress from agent: %v", ErrUnavailable, err)
	}
	if !got {
		return p, fmt.Errorf("%w: agent closed the stream without an answer", ErrUnavailable)
	}
	if p.State == StateFailed {
		return p, &apiError{msg: p.Error, cls: classByName(p.ErrorClass).err}
	}
	return p, nil
}

// CloseIdleConnections closes the kept-alive connections to the agent (on
// shutdown, or to count what a workload leaves behind).
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Status returns the cache and download status.
func (c *Client) Status(ctx context.Context) (StatusReport, error) {
	var s StatusReport
	return s, c.call(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Pin pins ref's current revision (or the one the ref names) for holder.
func (c *Client) Pin(ctx context.Context, ref, holder string) (PinResponse, error) {
	var r PinResponse
	return r, c.call(ctx, http.MethodPost, "/v1/pin", PinRequest{Ref: ref, Holder: holder}, &r)
}

// Unpin drops holder's pins on ref; a no-op when there are none.
func (c *Client) Unpin(ctx context.Context, ref, holder string) error {
	return c.call(ctx, http.MethodPost, "/v1/unpin", PinRequest{Ref: ref, Holder: holder}, nil)
}

// Evict removes ref's unpinned revisions and returns them.
func (c *Client) Evict(ctx context.Context, ref string) ([]string, error) {
	var r EvictResponse
	return r.Evicted, c.call(ctx, http.MethodPost, "/v1/evict", EvictRequest{Ref: ref}, &r)
}

// Verify re-hashes every blob on the node.
func (c *Client) Verify(ctx context.Context) (VerifyReport, error) {
	var r VerifyReport
	return r, c.call(ctx, http.MethodPost, "/v1/verify", struct{}{}, &r)
}

// Healthy returns nil when the agent answers its health check.
func (c *Client) Healthy(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/healthz", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: agent at %s: %w", ErrUnavailable, c.socket, ctx.Err())
		}
		return nil, fmt.Errorf("%w: agent not answering on %s: %v", ErrUnavailable, c.socket, err)
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%w: bad answer from agent: %v", ErrInternal, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e ErrorResponse
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		return fmt.Errorf("%w: agent answered %s: %s", ErrInternal, resp.Status, bytes.TrimSpace(b))
	}
	return &apiError{msg: e.Error, cls: classByName(e.Class).err}
}
