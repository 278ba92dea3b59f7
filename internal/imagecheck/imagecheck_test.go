package imagecheck

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// releaseBinaries are the commands in /usr/local/bin of the image.
var releaseBinaries = []string{"cache-agent", "csi-plugin", "modelcache-controller"}

var release = Want{
	Platforms: []string{"linux/amd64", "linux/arm64"},
	Files:     binPaths(releaseBinaries),
}

func binPaths(names []string) []string {
	var p []string
	for _, n := range names {
		p = append(p, "/usr/local/bin/"+n)
	}
	return p
}

// wantErr asserts err wraps every class in classes, and that its message
// holds each of the fragments.
func wantErr(t *testing.T, err error, classes []error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Check passed; want %v", classes)
	}
	t.Logf("refused, as it should be:\n%v", err)
	for _, c := range classes {
		if !errors.Is(err, c) {
			t.Errorf("error does not wrap %v:\n%v", c, err)
		}
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error lacks %q:\n%v", f, err)
		}
	}
}

func TestGoodImage(t *testing.T) {
	for _, gz := range []bool{false, true} {
		p := writeFixture(t,
			fixtureImage{arch: "amd64", layers: []layer{binaries(static(t, "amd64"))}, gzip: gz},
			fixtureImage{arch: "arm64", layers: []layer{binaries(static(t, "arm64"))}, gzip: gz})
		images, err := Check(p, release)
		if err != nil {
			t.Fatalf("gzip=%v: %v", gz, err)
		}
		if got := strings.Join(Platforms(images), " "); got != "linux/amd64 linux/arm64" {
			t.Fatalf("gzip=%v: platforms %q", gz, got)
		}
		for _, img := range images {
			if len(img.Files) != len(releaseBinaries) {
				t.Fatalf("%s: %d files checked, want %d", img.Platform, len(img.Files), len(releaseBinaries))
			}
			want := map[string]string{"linux/amd64": "EM_X86_64", "linux/arm64": "EM_AARCH64"}[img.Platform]
			for _, f := range img.Files {
				if f.Machine != want {
					t.Errorf("%s %s: machine %s, want %s", img.Platform, f.Path, f.Machine, want)
				}
			}
		}
	}
}

// The mistake this check exists for: an amd64 build in the arm64 image,
// with index and config both saying arm64.
func TestAMD64BinaryLabelledARM64(t *testing.T) {
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries(static(t, "amd64"))}},
		fixtureImage{arch: "arm64", layers: []layer{binaries(static(t, "amd64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrMachine, ErrBuild}, "linux/arm64: /usr/local/bin/cache-agent", "EM_X86_64, want EM_AARCH64")
	if strings.Contains(err.Error(), "linux/amd64:") {
		t.Errorf("the amd64 image is right but was blamed:\n%v", err)
	}
}

func TestConfigArchDiffersFromIndex(t *testing.T) {
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries(static(t, "amd64"))}},
		fixtureImage{arch: "arm64", configArch: "amd64", layers: []layer{binaries(static(t, "amd64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrPlatform, ErrLayout}, "the index says linux/arm64, its config says linux/amd64", "two images for linux/amd64")
}

func TestMissingPlatform(t *testing.T) {
	p := writeFixture(t, fixtureImage{arch: "amd64", layers: []layer{binaries(static(t, "amd64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrPlatform}, "no image for linux/arm64")
}

func TestMissingFile(t *testing.T) {
	for _, n := range releaseBinaries {
		l := binaries(static(t, "arm64"))
		delete(l, "usr/local/bin/"+n)
		p := writeFixture(t,
			fixtureImage{arch: "amd64", layers: []layer{binaries(static(t, "amd64"))}},
			fixtureImage{arch: "arm64", layers: []layer{l}})
		_, err := Check(p, release)
		wantErr(t, err, []error{ErrMissingFile}, "linux/arm64: /usr/local/bin/"+n)
	}
}

// Layers apply in order: an upper layer's whiteout deletes a file, an upper
// layer's file replaces a lower one.
func TestLayerOrder(t *testing.T) {
	amd, arm := static(t, "amd64"), static(t, "arm64")
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries(amd), {"usr/local/bin/csi-plugin": nil}}},
		fixtureImage{arch: "arm64", layers: []layer{binaries(arm), {"usr/local/bin/cache-agent": amd}}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrMissingFile, ErrMachine}, "linux/amd64: /usr/local/bin/csi-plugin", "linux/arm64: /usr/local/bin/cache-agent")
	if strings.Contains(err.Error(), "linux/arm64: /usr/local/bin/csi-plugin") {
		t.Errorf("the arm64 csi-plugin is right but was blamed:\n%v", err)
	}
}

// A position-independent Go build is linked without a C toolchain yet asks
// for the dynamic loader: PT_INTERP, no DT_NEEDED.
func TestPIEIsNotStatic(t *testing.T) {
	pie := goBuild(t, "hello", "amd64", []string{"CGO_ENABLED=0"}, "-trimpath", "-buildmode=pie", "-ldflags=-linkmode=internal")
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries(pie)}},
		fixtureImage{arch: "arm64", layers: []layer{binaries(static(t, "arm64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrNotStatic}, "linux/amd64: /usr/local/bin/cache-agent", "PT_INTERP asks for the loader")
}

// A cgo build links libc dynamically: PT_INTERP and DT_NEEDED libc.so.6.
func TestCgoIsNotStatic(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc: cannot build the cgo binary (TestPIEIsNotStatic still covers PT_INTERP)")
	}
	dyn := goBuild(t, "hellocgo", "amd64", []string{"CGO_ENABLED=1", "CC=gcc"}, "-trimpath")
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries(dyn)}},
		fixtureImage{arch: "arm64", layers: []layer{binaries(static(t, "arm64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrNotStatic, ErrBuild}, "DT_NEEDED", "libc.so.6", `CGO_ENABLED="1"`)
}

func TestWithoutTrimpath(t *testing.T) {
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries(goBuild(t, "hello", "amd64", []string{"CGO_ENABLED=0"}))}},
		fixtureImage{arch: "arm64", layers: []layer{binaries(static(t, "arm64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrBuild}, `-trimpath="", want "true"`)
	for _, c := range []error{ErrMachine, ErrNotStatic, ErrPlatform} {
		if errors.Is(err, c) {
			t.Errorf("only the build settings are wrong, but the error wraps %v:\n%v", c, err)
		}
	}
}

func TestNotELF(t *testing.T) {
	p := writeFixture(t,
		fixtureImage{arch: "amd64", layers: []layer{binaries([]byte("#!/bin/sh\necho hello\n"))}},
		fixtureImage{arch: "arm64", layers: []layer{binaries(static(t, "arm64"))}})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrNotELF})
}

func TestCorruptBlob(t *testing.T) {
	amd := static(t, "amd64")
	f := &fixture{blobs: map[string][]byte{}}
	p := f.write(t, []fixtureImage{
		{arch: "amd64", layers: []layer{binaries(amd)}},
		{arch: "arm64", layers: []layer{binaries(static(t, "arm64"))}},
	}, func(blobs map[string][]byte) {
		// Flip one byte in a layer, keeping its size.
		for d, b := range blobs {
			if len(b) > len(amd) {
				c := append([]byte(nil), b...)
				c[len(c)/2] ^= 0xff
				blobs[d] = c
				return
			}
		}
		t.Fatal("no layer blob found")
	})
	_, err := Check(p, release)
	wantErr(t, err, []error{ErrLayout}, "has digest sha256:")
}
