package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Command is the binary of the main package under test (the working
// directory), built at most once per test process: linking client-go or
// gRPC takes tens of seconds on two shared cores. Declare it as a package
// variable and call Remove from TestMain after m.Run.
type Command struct {
	Name    string // the binary's file name
	LDFlags string // go build -ldflags, such as "-X main.version=v9.9.9-test"

	once sync.Once
	path string
	err  error
}

// Build builds the command the first time and returns its path; a failed
// build fails t, and every later caller.
func (c *Command) Build(t testing.TB) string {
	t.Helper()
	c.once.Do(func() {
		dir, err := os.MkdirTemp("", c.Name+"-bin-")
		if err != nil {
			c.err = err
			return
		}
		c.path = filepath.Join(dir, c.Name)
		args := []string{"build", "-o", c.path}
		if c.LDFlags != "" {
			args = append(args, "-ldflags", c.LDFlags)
		}
		if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
			c.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.path
}

// Remove deletes the binary, if it was built.
func (c *Command) Remove() {
	if c.path != "" {
		os.RemoveAll(filepath.Dir(c.path))
	}
}

// Buffer collects a process's output and may be read while it runs.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
