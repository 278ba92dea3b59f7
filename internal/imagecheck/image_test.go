package imagecheck

import (
	"os"
	"testing"
)

// TestImage checks the tar `make image` wrote; `make image-check` builds it
// and runs this with MODELCACHE_IMAGE set. It skips otherwise, also in
// `make test` under MODELCACHE_REQUIRE=1: building the image for two
// platforms is the image-check step's job, not every test run's.
func TestImage(t *testing.T) {
	p := os.Getenv("MODELCACHE_IMAGE")
	if p == "" {
		t.Skip("MODELCACHE_IMAGE is not set: `make image-check` builds _output/image.tar and checks it")
	}
	images, err := Check(p, release)
	for _, img := range images {
		for _, f := range img.Files {
			t.Logf("%-18s %s %-28s %s %d bytes", img.Platform, img.Manifest[:19], f.Path, f.Machine, f.Size)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}
