package az_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/modelcache/modelcache/internal/aztest"
	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
	"github.com/modelcache/modelcache/pkg/source/az"
)

func client(t *testing.T, s *aztest.Server, o az.Options) *az.Client {
	t.Helper()
	o.Account, o.Endpoint = s.Account, s.Endpoint
	c, err := az.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func read(t *testing.T, m *az.Model, f model.File, off, end int64) ([]byte, error) {
	t.Helper()
	r, err := m.Open(context.Background(), f, off, end)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// One Azurite for the whole test: starting node costs seconds.
func TestAzurite(t *testing.T) {
	s := aztest.Start(t)
	ctx := context.Background()
	s.CreateContainer("models")
	big := bytes.Repeat([]byte("0123456789abcdef"), 20_000)
	files := map[string][]byte{
		"llama/config.json":             []byte(`{"a":1}`),
		"llama/model.safetensors":       big,
		"llama/original/consolidated.p": []byte("pt"),
		"llama/empty":                   {},
		"llama-other/x":                 []byte("not ours"),
	}
	etags := map[string]string{}
	for k, v := range files {
		etags[k] = s.Put("models", k, v)
	}
	key := client(t, s, az.Options{AccountKey: s.Key})

	t.Run("list and ranged reads", func(t *testing.T) {
		m := key.Model("models", "llama")
		l, err := m.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Revision != "" || len(l.Files) != 4 {
			t.Fatalf("listing %+v", l)
		}
		for _, f := range l.Files {
			want := files["llama/"+f.Path]
			if f.Size != int64(len(want)) || f.ETag != etags["llama/"+f.Path] {
				t.Fatalf("%s: listed %+v, put %d bytes ETag %s", f.Path, f, len(want), etags["llama/"+f.Path])
			}
			got, err := read(t, m, f, 0, f.Size)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: %v, %d bytes", f.Path, err, len(got))
			}
			if f.Path == "model.safetensors" {
				got, err := read(t, m, f, 1000, 70_001)
				if err != nil || !bytes.Equal(got, want[1000:70_001]) {
					t.Fatalf("range: %v, %d bytes", err, len(got))
				}
			}
		}
	})

	t.Run("pagination", func(t *testing.T) {
		s.CreateContainer("many")
		for i := range 23 {
			s.Put("many", fmt.Sprintf("m/f%02d", i), []byte{byte(i)})
		}
		c := client(t, s, az.Options{AccountKey: s.Key, PageSize: 5})
		l, err := c.Model("many", "m").List(ctx)
		if err != nil || len(l.Files) != 23 {
			t.Fatalf("%v, %d files", err, len(l.Files))
		}
		c = client(t, s, az.Options{AccountKey: s.Key, PageSize: 5, MaxPages: 3})
		if _, err := c.Model("many", "m").List(ctx); !errors.Is(err, source.ErrLimit) {
			t.Fatalf("past max pages: %v", err)
		}
		c = client(t, s, az.Options{AccountKey: s.Key, PageSize: 5, MaxFiles: 10})
		if _, err := c.Model("many", "m").List(ctx); !errors.Is(err, source.ErrLimit) {
			t.Fatalf("past max files: %v", err)
		}
	})

	t.Run("overwritten between list and read", func(t *testing.T) {
		s.Put("models", "moving/w", []byte("version one"))
		m := key.Model("models", "moving")
		l, err := m.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Put("models", "moving/w", []byte("version two"))
		_, err = read(t, m, l.Files[0], 0, 4)
		if !errors.Is(err, source.ErrChanged) || source.Temporary(err) {
			t.Fatalf("read of an overwritten blob: %v", err)
		}
		if err := m.Check(ctx, l.Files[0]); !errors.Is(err, source.ErrChanged) {
			t.Fatalf("check of an overwritten blob: %v", err)
		}
	})

	t.Run("classes", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			m     *az.Model
			class error
		}{
			{"missing container", key.Model("nope", "x"), source.ErrNotFound},
			{"empty prefix", key.Model("models", "nothing-here"), source.ErrNotFound},
			{"wrong key", client(t, s, az.Options{AccountKey: "AAAA" + s.Key[4:]}).Model("models", "llama"), source.ErrAccessDenied},
			{"anonymous, private container", client(t, s, az.Options{}).Model("models", "llama"), source.ErrAccessDenied},
			{"SAS without list", client(t, s, az.Options{SASToken: s.SAS("models", "r")}).Model("models", "llama"), source.ErrAccessDenied},
		} {
			_, err := tc.m.List(ctx)
			if !errors.Is(err, tc.class) || source.Temporary(err) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.class)
			}
		}
		// A SAS that may list but not read: the listing works, the read is denied.
		m := client(t, s, az.Options{SASToken: "?" + s.SAS("models", "l")}).Model("models", "llama")
		l, err := m.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := read(t, m, l.Files[0], 0, 1); !errors.Is(err, source.ErrAccessDenied) {
			t.Errorf("read with a list-only SAS: %v", err)
		}
		if err := m.Check(ctx, l.Files[0]); !errors.Is(err, source.ErrAccessDenied) {
			t.Errorf("check with a list-only SAS: %v", err)
		}
		// A full SAS reads.
		m = client(t, s, az.Options{SASToken: s.SAS("models", "rl")}).Model("models", "llama")
		if l, err = m.List(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := read(t, m, l.Files[0], 0, 1); err != nil {
			t.Errorf("read with a read+list SAS: %v", err)
		}
		// A blob deleted after the listing.
		s.Put("models", "gone/a", []byte("a"))
		m = key.Model("models", "gone")
		if l, err = m.List(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Container("models").NewBlobClient("gone/a").Delete(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := read(t, m, l.Files[0], 0, 1); !errors.Is(err, source.ErrNotFound) && !errors.Is(err, source.ErrChanged) {
			t.Errorf("read of a deleted blob: %v", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		c, err := az.New(az.Options{Account: s.Account, Endpoint: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Model("models", "llama").List(ctx); !errors.Is(err, source.ErrUnreachable) || !source.Temporary(err) {
			t.Fatalf("%v", err)
		}
	})
}
