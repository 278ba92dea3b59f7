package buildinfo

import (
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	if got := Version("v1.2.3"); got != "v1.2.3" {
		t.Errorf("Version(v1.2.3) = %q", got)
	}
	// A test binary records no VCS revision; a `go build` in a checkout does.
	if got := Version("dev"); got != "dev" && !strings.HasPrefix(got, "dev-") {
		t.Errorf("Version(dev) = %q, want dev or dev-<commit>", got)
	}
}
