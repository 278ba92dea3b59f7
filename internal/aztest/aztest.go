// Package aztest runs a real Azure Blob Storage server for integration
// tests: Azurite's blob service (the npm package azurite, which `make
// tools` installs into bin/azurite), in memory, on a free loopback port,
// with the well-known development account. Its helpers upload with the
// official SDK.
package aztest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/modelcache/modelcache/internal/testenv"
)

// Azurite's development account: its name and key are published (they
// are the same in every Azurite), not secrets.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Version is the azurite npm package hack/tools.sh installs.
const Version = "3.37.0"

// Server is a running Azurite blob service. Its helpers fail the test on
// error.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Service  string // Endpoint/devstoreaccount1: the account's blob service URL
	Account  string
	Key      string
	t        testing.TB
	cred     *container.SharedKeyCredential
}

// Start runs azurite-blob in memory on a free loopback port, waits until
// it answers, and stops it when the test ends. The script is
// $MODELCACHE_AZURITE or <repo>/bin/azurite/node_modules/.bin/azurite-blob;
// when it (or node) is missing the test is skipped, or fails under
// MODELCACHE_REQUIRE=1.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := testenv.Tool(t, "MODELCACHE_AZURITE", "bin/azurite/node_modules/.bin/azurite-blob",
		"Azurite: run `make tools` (installs azurite "+Version+" into ./bin/azurite with npm)")
	if _, err := exec.LookPath("node"); err != nil {
		testenv.Missing(t, "aztest: node not found; Azurite needs Node.js")
	}
	cred, err := container.NewSharedKeyCredential(Account, Key)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		work := t.TempDir()
		cmd := exec.Command(bin, "--inMemoryPersistence", "--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port),
			"--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent")
		cmd.Dir = work
		p := testenv.Start(t, cmd)
		s := &Server{Endpoint: "http://" + addr, Service: "http://" + addr + "/" + Account, Account: Account, Key: Key, t: t, cred: cred}
		if waitUp(s.Service, p, 60*time.Second) {
			return s
		}
		last = p.Out.String()
		p.Cmd.Process.Kill()
	}
	t.Fatalf("aztest: azurite did not start:\n%s", last)
	return nil
}

func waitUp(service string, p *testenv.Process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.Cmd.ProcessState != nil {
			return false
		}
		resp, err := http.Get(service + "?comp=list")
		if err == nil {
			resp.Body.Close()
			return true // any answer: it listens (anonymous listing is 403)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Container is a client of container name, with the account key.
func (s *Server) Container(name string) *container.Client {
	s.t.Helper()
	c, err := container.NewClientWithSharedKeyCredential(s.Service+"/"+name, s.cred, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// CreateContainer creates container name (private).
func (s *Server) CreateContainer(name string) {
	s.t.Helper()
	if _, err := s.Container(name).Create(context.Background(), nil); err != nil {
		s.t.Fatalf("aztest: create container %s: %v", name, err)
	}
}

// Put uploads data as blob name of container and returns its ETag
// (without quotes).
func (s *Server) Put(containerName, name string, data []byte) string {
	s.t.Helper()
	bc := s.Container(containerName).NewBlockBlobClient(name)
	resp, err := bc.UploadBuffer(context.Background(), data, &blockblob.UploadBufferOptions{Concurrency: 4})
	if err != nil {
		s.t.Fatalf("aztest: put %s/%s: %v", containerName, name, err)
	}
	return string(bytes.Trim([]byte(*resp.ETag), `"`))
}

// SAS is a container SAS token (the query string, no '?') with perms
// (e.g. "rl", "l"), valid for an hour.
func (s *Server) SAS(containerName, perms string) string {
	s.t.Helper()
	var p sas.ContainerPermissions
	for _, c := range perms {
		switch c {
		case 'r':
			p.Read = true
		case 'l':
			p.List = true
		}
	}
	q, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, StartTime: time.Now().Add(-time.Minute).UTC(),
		ExpiryTime: time.Now().Add(time.Hour).UTC(), Permissions: to.Ptr(p).String(), ContainerName: containerName}.SignWithSharedKey(s.cred)
	if err != nil {
		s.t.Fatal(err)
	}
	return q.Encode()
}
