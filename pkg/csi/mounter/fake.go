package mounter

import (
	"fmt"
	"sync"
)

// Fake records calls and keeps mounts in memory, for unit tests of callers
// that must not need root. Integration tests use the real Mounter.
type Fake struct {
	mu     sync.Mutex
	mounts map[string]string // target → source
	Calls  []string
	// Err, when set, fails every BindReadOnly.
	Err error
}

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{mounts: map[string]string{}} }

// BindReadOnly implements Interface.
func (f *Fake) BindReadOnly(source, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, fmt.Sprintf("bind %s %s", source, target))
	if f.Err != nil {
		return f.Err
	}
	f.mounts[target] = source
	return nil
}

// Unmount implements Interface.
func (f *Fake) Unmount(target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls = append(f.Calls, "unmount "+target)
	delete(f.mounts, target)
	return nil
}

// IsMounted implements Interface.
func (f *Fake) IsMounted(target string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.mounts[target]
	return ok, nil
}

// Source returns what is mounted at target, or "".
func (f *Fake) Source(target string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounts[target]
}
