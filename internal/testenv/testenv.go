// Package testenv is what the real-part fixtures (internal/s3test,
// internal/kubetest, internal/charttest) share: where the repository is, so
// they find the tools `make tools` installs into its bin/, and what a test
// does when one of them is missing. The tests of cmd/ build their command
// with it, and collect its output.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot walks up from the working directory (the package under test) to
// the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Missing skips t, saying msg; under MODELCACHE_REQUIRE=1 (CI, `make test`)
// it fails t instead, so a run that lacks a real part never passes by
// skipping the tests that need it.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("MODELCACHE_REQUIRE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Tool is the path of a program a test runs: $env if set, else
// <repo>/rel (e.g. bin/versitygw, which `make tools` installs). A missing
// program is Missing, with a message naming it, hint (how to get it) and
// env.
func Tool(t testing.TB, env, rel, hint string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(root, filepath.FromSlash(rel))
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, fmt.Sprintf("%s not found; %s, or set %s", bin, hint, env))
	}
	return bin
}
