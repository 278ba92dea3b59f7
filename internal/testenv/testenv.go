// Package testenv is what the real-part fixtures (internal/s3test,
// internal/kubetest, internal/charttest) share: where the repository is, so
// they find the tools `make tools` installs into its bin/, and what a test
// does when one of them is missing. The tests of cmd/ build their command
// with it, and collect its output.
package testenv

import (
	"errors"
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
