package mounter

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("MODELCACHE_REQUIRE") == "1" {
			t.Fatal("bind mount tests need root (MODELCACHE_REQUIRE=1)")
		}
		t.Skip("bind mount tests need root")
	}
}

// mountOptions returns the per-mount options of target from mountinfo.
func mountOptions(t *testing.T, target string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	opts := ""
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 5 && fields[4] == target {
			opts = fields[5] // the last one wins: it is the top of the stack
		}
	}
	return opts
}

func TestBindReadOnly(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "weights.bin"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "pods", "vol", "mount")
	m := New()
	if err := m.BindReadOnly(src, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })

	if ok, err := m.IsMounted(target); err != nil || !ok {
		t.Fatalf("IsMounted = %v, %v; want true", ok, err)
	}
	b, err := os.ReadFile(filepath.Join(target, "weights.bin"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("read through mount: %q, %v", b, err)
	}
	err = os.WriteFile(filepath.Join(target, "new"), []byte("x"), 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Fatalf("write through mount: %v, want EROFS", err)
	}
	opts := mountOptions(t, target)
	for _, want := range []string{"ro", "nosuid", "nodev"} {
		if !strings.Contains(","+opts+",", ","+want+",") {
			t.Errorf("mount options %q lack %s", opts, want)
		}
	}

	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target still there after Unmount: %v", err)
	}
	if mountOptions(t, target) != "" {
		t.Fatal("mountinfo still lists the target")
	}
	// Idempotent: a second unmount of a gone target is fine.
	if err := m.Unmount(target); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if ok, err := m.IsMounted(target); err != nil || ok {
		t.Fatalf("IsMounted on a missing path = %v, %v", ok, err)
	}
}

func TestUnmountStacked(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	target := filepath.Join(dir, "target")
	m := New()
	for range 2 {
		if err := m.BindReadOnly(src, target); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.IsMounted(target); ok {
		t.Fatal("still mounted")
	}
}
