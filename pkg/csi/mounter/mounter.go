// Package mounter makes and removes the read-only bind mounts that put a
// cached model tree into a pod's volume directory.
package mounter

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
	mountutils "k8s.io/mount-utils"
)

// Interface is what the CSI node service needs from the kernel.
type Interface interface {
	// BindReadOnly mounts source at target (created if missing) read-only,
	// nosuid, nodev.
	BindReadOnly(source, target string) error
	// Unmount removes the mount at target, if any, and then the target
	// directory itself. A missing target is not an error.
	Unmount(target string) error
	// IsMounted reports whether target is a mount point; false for a
	// missing path.
	IsMounted(target string) (bool, error)
}

// Mounter is the real Interface. It calls mount(2) directly rather than
// mount(8): a bind mount is two syscalls taking microseconds, while forking
// the mount binary twice costs milliseconds, which is the whole budget of a
// warm publish. k8s.io/mount-utils answers "is this a mount point", which
// for a bind mount on the same filesystem needs mountinfo, not a stat.
type Mounter struct {
	mu mountutils.Interface
}

// New returns the real mounter.
func New() *Mounter { return &Mounter{mu: mountutils.New("")} }

const roFlags = unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV

// BindReadOnly implements Interface.
func (m *Mounter) BindReadOnly(source, target string) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("create target %s: %w", target, err)
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, target, err)
	}
	// A bind mount ignores MS_RDONLY on the first call: the flags take effect
	// only on a remount of the new mount point.
	if err := unix.Mount("", target, "", roFlags, ""); err != nil {
		if uerr := unix.Unmount(target, 0); uerr != nil {
			return fmt.Errorf("remount %s read-only: %w (and undoing the bind mount failed: %v)", target, err, uerr)
		}
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// Unmount implements Interface.
func (m *Mounter) Unmount(target string) error {
	// Loop: a target mounted twice (a retry that raced a crash) needs two
	// unmounts before the directory can go. The bound stops a kernel that
	// disagrees with mountinfo from spinning us forever.
	for range 8 {
		mounted, err := m.IsMounted(target)
		if err != nil {
			return err
		}
		if !mounted {
			break
		}
		if err := unix.Unmount(target, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove target %s: %w", target, err)
	}
	return nil
}

// IsMounted implements Interface.
func (m *Mounter) IsMounted(target string) (bool, error) {
	ok, err := m.mu.IsMountPoint(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check mount point %s: %w", target, err)
	}
	return ok, nil
}
