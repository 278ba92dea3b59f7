package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// decodeChunked gives gofakes3 plain bodies. Over plain HTTP, minio-go (and
// so s3-seed) sends parts in the aws-chunked encoding of SigV4 streaming
// ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"): gofakes3 decodes it for PutObject
// but stores UploadPart bodies as sent, chunk headers and all, so every
// multipart object came back corrupt. Decoding here, for every request,
// makes the server right for any client. Signatures are not checked (the
// demo's server accepts any credentials).
func decodeChunked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
			size, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
			if err != nil || size < 0 {
				http.Error(w, "aws-chunked body without a valid X-Amz-Decoded-Content-Length", http.StatusBadRequest)
				return
			}
			r.Body = struct {
				io.Reader
				io.Closer
			}{&chunkedReader{r: bufio.NewReader(r.Body)}, r.Body}
			r.ContentLength = size
			r.Header.Set("Content-Length", strconv.FormatInt(size, 10))
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			r.Header.Del("X-Amz-Decoded-Content-Length")
		}
		next.ServeHTTP(w, r)
	})
}

// chunkedReader reads the payload of an aws-chunked body:
// "<hex size>[;chunk-signature=…]\r\n<bytes>\r\n" repeated, ending with a
// chunk of size 0 (trailers after it are ignored).
type chunkedReader struct {
	r    *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
}

// maxChunk bounds one chunk's declared size: SigV4 streaming uses 64 KiB
// chunks, and a bogus header must not make the server expect terabytes.
const maxChunk = 64 << 20

func (c *chunkedReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left == 0 && err == nil {
		err = c.crlf()
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// next reads a chunk header.
func (c *chunkedReader) next() error {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("aws-chunked header: %w", errors.Join(err, io.ErrUnexpectedEOF))
	}
	hex, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
	size, err := strconv.ParseInt(hex, 16, 64)
	if err != nil || size < 0 || size > maxChunk {
		return fmt.Errorf("aws-chunked header %q: bad size", line)
	}
	c.left, c.done = size, size == 0
	return nil
}

func (c *chunkedReader) crlf() error {
	var b [2]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil || b != [2]byte{'\r', '\n'} {
		return errors.New("aws-chunked: chunk not followed by CRLF")
	}
	return nil
}
