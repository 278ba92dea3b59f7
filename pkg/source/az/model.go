package az

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// Model is the blobs under one prefix of one container, as a
// source.Source. A listing has no revision of its own: each file's ETag
// is its version, and Open reads only that version.
type Model struct {
	c                 *Client
	cc                *container.Client
	container, prefix string
	err               error // from building the container client
}

var _ source.Source = (*Model)(nil)

// Model returns the model under prefix ("" for the whole container; no
// leading or trailing slash) in container.
func (c *Client) Model(containerName, prefix string) *Model {
	m := &Model{c: c, container: containerName, prefix: strings.Trim(prefix, "/")}
	m.cc, m.err = c.newContainer(c.service + "/" + containerName)
	return m
}

// Where names the model in messages: az://ACCOUNT/CONTAINER[/PREFIX].
func (m *Model) Where() string {
	s := "az://" + m.c.account + "/" + m.container
	if m.prefix != "" {
		s += "/" + m.prefix
	}
	return s
}

func (m *Model) key(path string) string {
	if m.prefix == "" {
		return path
	}
	return m.prefix + "/" + path
}

// Open reads bytes [off, end) of f as listed: a ranged GET with If-Match
// on its ETag. The reader yields exactly end-off bytes, or fails with
// io.ErrUnexpectedEOF. A blob no longer at its listed ETag is
// source.ErrChanged; a service that ignores the range or answers another
// one is source.ErrProtocol: never bytes from the wrong offset.
func (m *Model) Open(ctx context.Context, f model.File, off, end int64) (io.ReadCloser, error) {
	where := m.Where() + "/" + f.Path
	if m.err != nil {
		return nil, fmt.Errorf("az: read %s: %w", where, m.err)
	}
	if off < 0 || end < off || end > f.Size {
		return nil, fmt.Errorf("az: read %s: range [%d, %d) of a %d-byte file", where, off, end, f.Size)
	}
	if f.ETag == "" {
		return nil, fmt.Errorf("az: read %s: the file has no ETag to read it at; list the model again", where)
	}
	if off == end {
		return io.NopCloser(strings.NewReader("")), nil
	}
	etag := azcore.ETag(`"` + f.ETag + `"`)
	resp, err := m.cc.NewBlobClient(m.key(f.Path)).DownloadStream(ctx, &blob.DownloadStreamOptions{
		Range:            blob.HTTPRange{Offset: off, Count: end - off},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}},
	})
	if err != nil {
		return nil, m.c.classify(ctx, where, "read", err)
	}
	if err := checkRead(resp.ContentRange, resp.ContentLength, resp.ETag, f, off, end); err != nil {
		resp.Body.Close()
		return nil, err.at(where)
	}
	return source.ExactReader(resp.Body, end-off), nil
}

// Check asks the service whether the credentials may read f at its listed
// ETag (Get Blob Properties, which needs the read permission a download
// needs).
func (m *Model) Check(ctx context.Context, f model.File) error {
	where := m.Where() + "/" + f.Path
	if m.err != nil {
		return fmt.Errorf("az: check %s: %w", where, m.err)
	}
	etag := azcore.ETag(`"` + f.ETag + `"`)
	_, err := m.cc.NewBlobClient(m.key(f.Path)).GetProperties(ctx, &blob.GetPropertiesOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}},
	})
	if err != nil {
		return m.c.classify(ctx, where, "read", err)
	}
	return nil
}

// readError is what checkRead found wrong, classed.
type readError struct {
	class error
	msg   string
}

func (e *readError) at(where string) error {
	return &source.Error{Class: e.class, Where: where, Op: "read", Msg: e.msg}
}

// checkRead accepts a 206 for exactly [off, end) of a blob of f.Size
// bytes at f.ETag.
func checkRead(contentRange *string, contentLength *int64, etag *azcore.ETag, f model.File, off, end int64) *readError {
	if etag != nil && strings.Trim(string(*etag), `"`) != f.ETag {
		return &readError{source.ErrChanged, fmt.Sprintf("the service sent ETag %s, listed was %q", source.Trim(string(*etag)), f.ETag)}
	}
	if contentRange == nil {
		// The service answers every ranged read with 206 and its range.
		return &readError{source.ErrProtocol, fmt.Sprintf("asked for bytes %d-%d of %d, the service sent no Content-Range (it ignored the range)", off, end-1, f.Size)}
	}
	from, to, total, ok := source.ParseContentRange(*contentRange)
	switch {
	case !ok:
		return &readError{source.ErrProtocol, fmt.Sprintf("Content-Range %q", source.Trim(*contentRange))}
	case total >= 0 && total != f.Size:
		return &readError{source.ErrChanged, fmt.Sprintf("the blob is %d bytes, listed with %d", total, f.Size)}
	case from != off || to != end-1:
		return &readError{source.ErrProtocol, fmt.Sprintf("asked for bytes %d-%d, got %d-%d", off, end-1, from, to)}
	case contentLength != nil && *contentLength != end-off:
		return &readError{source.ErrProtocol, fmt.Sprintf("a range of %d bytes with a Content-Length of %d", end-off, *contentLength)}
	}
	return nil
}

// Service is the account's blob service URL the model is read from.
func (m *Model) Service() string { return m.c.service }
