package imagecheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mkimage runs a function of hack/mkimage.sh (the builder behind make image
// and the e2e images) in bash and returns the tar it wrote; the argument
// "OUT" stands for the tar's path.
func mkimage(t *testing.T, fn string, args ...string) string {
	t.Helper()
	for _, tool := range []string{"bash", "jq", "tar", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			// CI installs jq (.ci/run); a developer machine may lack it.
			if os.Getenv("MODELCACHE_REQUIRE") == "1" {
				t.Fatalf("hack/mkimage.sh needs %s (MODELCACHE_REQUIRE=1)", tool)
			}
			t.Skipf("hack/mkimage.sh needs %s, which is not installed", tool)
		}
	}
	script, err := filepath.Abs("../../hack/mkimage.sh")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	for i, a := range args {
		if a == "OUT" {
			args[i] = out
		}
	}
	// $0 is not the script, so sourcing it defines the functions only.
	cmd := exec.Command("bash", append([]string{"-c", `source "$1"; shift; "$@"`, "bash", script, fn}, args...)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", fn, err, msg)
	}
	return out
}

// rootfs writes a directory with every release binary set to b.
func rootfs(t *testing.T, b []byte) string {
	t.Helper()
	d := t.TempDir()
	bin := filepath.Join(d, "usr/local/bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range releaseBinaries {
		if err := os.WriteFile(filepath.Join(bin, n), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

const (
	ref        = "localhost/imagecheck:test"
	entrypoint = `["/usr/local/bin/cache-agent"]`
)

func TestMkimageMulti(t *testing.T) {
	p := mkimage(t, "mkimage_multi", ref, entrypoint, `["serve"]`, "OUT",
		"amd64="+rootfs(t, static(t, "amd64")), "arm64="+rootfs(t, static(t, "arm64")))
	images, err := Check(p, release)
	if err != nil {
		t.Fatal(err)
	}
	// arm64 carries variant v8 in both index and config, as buildx writes it.
	if got := strings.Join(Platforms(images), " "); got != "linux/amd64 linux/arm64/v8" {
		t.Fatalf("platforms %q", got)
	}
	// Same inputs, same bytes: the digests in a release can be rebuilt.
	again := mkimage(t, "mkimage_multi", ref, entrypoint, `["serve"]`, "OUT",
		"amd64="+rootfs(t, static(t, "amd64")), "arm64="+rootfs(t, static(t, "arm64")))
	a, _ := os.ReadFile(p)
	b, _ := os.ReadFile(again)
	if string(a) != string(b) {
		t.Error("two builds from the same rootfs differ")
	}
}

// The builder labels what it is told: an amd64 rootfs given as arm64
// makes a tar the check must refuse.
func TestMkimageMultiMislabelled(t *testing.T) {
	amd := rootfs(t, static(t, "amd64"))
	p := mkimage(t, "mkimage_multi", ref, entrypoint, `["serve"]`, "OUT", "amd64="+amd, "arm64="+amd)
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrMachine}, "linux/arm64/v8: /usr/local/bin/cache-agent", "EM_X86_64, want EM_AARCH64")
}

// The one-platform form the e2e harness uses for its pause and busybox
// images: index.json lists the manifest itself, with the host's platform.
func TestMkimageSingle(t *testing.T) {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	arch := strings.TrimSpace(string(out))
	p := mkimage(t, "mkimage", ref, rootfs(t, static(t, arch)), entrypoint, "null", "OUT")
	images, err := Check(p, Want{Platforms: []string{"linux/" + arch}, Files: release.Files})
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 {
		t.Fatalf("%d images, want 1", len(images))
	}
}
