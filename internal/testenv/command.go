package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// Process is a command a test started, its output collected in Out.
type Process struct {
	Cmd    *exec.Cmd
	Out    Buffer
	exited chan error
}

// Start starts cmd with its standard output and error in Out; the test's
// cleanup kills it if it still runs.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &p.Out, &p.Out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return p
}

// Stop sends SIGTERM and fails t unless the process exits 0 within 15 s.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", p.Out.String())
	}
}

// OutsideCluster is the test's environment without the variables that make
// client-go's in-cluster config find an API server.
func OutsideCluster() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBERNETES_SERVICE_") {
			env = append(env, kv)
		}
	}
	return env
}
