package s3test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// TestFaultsBreakResponses: what a plain client sees of each fault.
func TestFaultsBreakResponses(t *testing.T) {
	s := Start(t)
	s.CreateBucket(t, "bkt")
	data := RandomBytes(1, 1<<20)
	s.Put(t, "bkt", "o", data)
	p := NewCountingProxy(t, s.Endpoint)
	f, err := NewFaults(s.Endpoint, FaultConfig{Seed: 1, StallFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.Install(p)
	c := proxyClient(t, p)
	ranged := func(ctx context.Context, from, to int64) ([]byte, error) {
		opts := minio.GetObjectOptions{}
		opts.SetRange(from, to)
		o, err := c.GetObject(ctx, "bkt", "o", opts)
		if err != nil {
			return nil, err
		}
		defer o.Close()
		return io.ReadAll(o)
	}
	const from, to = 1000, 1<<20 - 1
	want := data[from : to+1]
	for _, kind := range []Fault{Fault5xx, FaultSlowDown, FaultReset, FaultTruncate, FaultStall, FaultStall,
		FaultLongLength, FaultShortLength} {
		f.Force(kind)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, err := ranged(ctx, from, to)
		cancel()
		p.WaitIdle(t, 5*time.Second)
		t.Logf("%s: %d bytes, %v", kind, len(got), err)
		short := len(got) < len(want) && bytes.Equal(got, want[:len(got)])
		var ok bool
		switch kind {
		case Fault5xx:
			code := minio.ToErrorResponse(err).StatusCode
			ok = code == http.StatusInternalServerError || code == http.StatusBadGateway
		case FaultSlowDown:
			ok = minio.ToErrorResponse(err).Code == "SlowDown"
		case FaultReset:
			ok = errors.Is(err, syscall.ECONNRESET) && short
		case FaultTruncate:
			ok = errors.Is(err, io.ErrUnexpectedEOF) && short
		case FaultStall:
			ok = errors.Is(err, context.DeadlineExceeded) && (got == nil || short)
		case FaultLongLength:
			// Every byte of the range, then a close before the promised rest.
			ok = errors.Is(err, io.ErrUnexpectedEOF) && bytes.Equal(got, want)
		case FaultShortLength:
			// A well-formed answer, only shorter than the range asked for.
			ok = err == nil && short
		}
		if !ok {
			t.Errorf("%s: got %d bytes of %d, %v", kind, len(got), len(want), err)
		}
	}

	// A replacement: the GET that triggers it gets the old bytes, the next
	// one the new.
	newer := RandomBytes(2, len(data))
	f.ReplaceNext(func(bucket, key string) bool { return key == "o" }, func(bucket, key string) error {
		_, err := s.Client.PutObject(context.Background(), bucket, key, bytes.NewReader(newer), int64(len(newer)),
			minio.PutObjectOptions{DisableMultipart: true})
		return err
	})
	if got, err := ranged(context.Background(), from, to); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("replacing GET: %d bytes, %v", len(got), err)
	}
	if got, err := ranged(context.Background(), from, to); err != nil || !bytes.Equal(got, newer[from:to+1]) {
		t.Fatalf("GET after the replacement: %d bytes, %v", len(got), err)
	}
	if err := f.ReplaceErr(); err != nil {
		t.Fatal(err)
	}
	inj := f.Injected()
	for k := Fault5xx; k < NumFaults; k++ {
		if n := map[Fault]int64{FaultStall: 2}[k]; inj[k] != max(n, 1) {
			t.Errorf("%s injected %d times", k, inj[k])
		}
	}
	if f.Gets() != 10 {
		t.Errorf("%d GETs seen, want 10", f.Gets())
	}
}
