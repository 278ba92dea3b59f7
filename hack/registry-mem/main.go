// Command registry-mem is an OCI registry for `make e2e`: go-containerregistry's
// registry (the one internal/ocitest runs in process) on a loopback port,
// in memory, holding one model artifact pushed with oras-go from a local
// directory: one layer per file, titled with its path, as `oras push`
// writes them. It is not part of the product.
//
//	registry-mem --repo e2e/tiny-llm --tag v1 --dir ./model --endpoint-file /tmp/d/registry.endpoint
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/modelcache/modelcache/internal/testenv"
)

func main() {
	repo := flag.String("repo", "e2e/tiny-llm", "the repository to push to")
	tag := flag.String("tag", "v1", "the tag of the pushed artifact")
	dir := flag.String("dir", "", "directory whose files become the artifact's layers (required)")
	endpointFile := flag.String("endpoint-file", "", "write the registry's host:port here once the artifact is pushed")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *repo, *tag, *dir, *endpointFile); err != nil {
		fmt.Fprintln(os.Stderr, "registry-mem:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, repo, tag, dir, endpointFile string) error {
	if dir == "" {
		return errors.New("--dir is required")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	host := l.Addr().String()
	d, n, err := push(ctx, host, repo, tag, dir)
	if err != nil {
		return err
	}
	if err := testenv.WriteEndpoint(endpointFile, host); err != nil {
		return err
	}
	fmt.Printf("registry-mem: %s/%s:%s = %s, %d files\n", host, repo, tag, d, n)
	<-ctx.Done()
	return nil
}

// push packs every regular file under dir as a layer and copies the
// manifest to host/repo:tag over plain HTTP.
func push(ctx context.Context, host, repo, tag, dir string) (digest.Digest, int, error) {
	store := memory.New()
	var layers []ocispec.Descriptor
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(len(b)),
			Annotations: map[string]string{ocispec.AnnotationTitle: filepath.ToSlash(rel)}}
		// Two files with the same bytes are one blob: pushed once.
		if err := store.Push(ctx, desc, bytes.NewReader(b)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			return err
		}
		layers = append(layers, desc)
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	if len(layers) == 0 {
		return "", 0, fmt.Errorf("%s holds no files", dir)
	}
	desc, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.modelcache.e2e.v1",
		oras.PackManifestOptions{Layers: layers})
	if err != nil {
		return "", 0, err
	}
	if err := store.Tag(ctx, desc, tag); err != nil {
		return "", 0, err
	}
	target, err := remote.NewRepository(host + "/" + repo)
	if err != nil {
		return "", 0, err
	}
	target.PlainHTTP = true
	if _, err := oras.Copy(ctx, store, tag, target, tag, oras.DefaultCopyOptions); err != nil {
		return "", 0, fmt.Errorf("push %s/%s:%s: %w", host, repo, tag, err)
	}
	return desc.Digest, len(layers), nil
}
