// Command hub-mem is the Hugging Face Hub of `make demo`: internal/hubtest's
// fixture Hub and CDN (the same one the tests and the official JS client
// check) on two loopback ports, holding one model repo made from a local
// directory. Files of 1 MiB or more are LFS files, served through the CDN
// with the SHA-256 the Hub publishes. It is not part of the product.
//
//	hub-mem --repo demo-org/tiny-llm --dir ./model --token hf_demo --endpoint-file /tmp/d/hub.endpoint
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/modelcache/modelcache/internal/hubtest"
	"github.com/modelcache/modelcache/internal/testenv"
)

func main() {
	repo := flag.String("repo", "demo-org/tiny-llm", "the repo to serve, ORG/NAME")
	dir := flag.String("dir", "", "directory whose files make the repo's commit on main (required)")
	token := flag.String("token", "", `if set, the repo is gated and only this token ("hf_…") may read it`)
	endpointFile := flag.String("endpoint-file", "", "write the Hub's URL here once it listens (written whole, by rename)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *repo, *dir, *token, *endpointFile); err != nil {
		fmt.Fprintln(os.Stderr, "hub-mem:", err)
		os.Exit(1)
	}
}

// lfsAt is the size from which a file is an LFS file, as weights are.
const lfsAt = 1 << 20

func run(ctx context.Context, repo, dir, token, endpointFile string) (err error) {
	if dir == "" {
		return errors.New("--dir is required")
	}
	files, err := readDir(dir)
	if err != nil {
		return err
	}
	hub, stop := hubtest.NewServer()
	defer stop()
	// Misuse (a bad repo name) panics in the fixture: report it as an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	commit := hub.Commit(repo, "main", files)
	if token != "" {
		hub.SetAccess(repo, hubtest.Gated, token)
	}
	if err := testenv.WriteEndpoint(endpointFile, hub.URL); err != nil {
		return err
	}
	fmt.Printf("hub-mem: %s@main = commit %s, %d files, at %s (CDN %s)\n", repo, commit, len(files), hub.URL, hub.CDN)
	<-ctx.Done()
	return nil
}

// readDir reads every regular file under dir, by slash-separated path.
func readDir(dir string) (map[string]hubtest.File, error) {
	files := map[string]hubtest.File{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
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
		files[filepath.ToSlash(rel)] = hubtest.File{Data: b, LFS: len(b) >= lfsAt}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("%s holds no files", dir)
	}
	return files, err
}
