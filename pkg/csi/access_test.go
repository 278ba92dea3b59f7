package csi_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/internal/s3test"
	"github.com/modelcache/modelcache/pkg/csi/mounter"
	"github.com/modelcache/modelcache/pkg/fetch"
)

// Three accounts on one versitygw: root (the agent's source "test"), reader
// (owns the bucket) and stranger (no access). A volume that carries the
// stranger's keys is refused even when the model is on the node already.
func TestPublishChecksVolumeCredentials(t *testing.T) {
	needRoot(t)
	srv := s3test.StartWithIAM(t)
	e := newEnvOn(t, srv, 30*time.Second, map[string]fetch.Source{
		"team-a": {Region: srv.Region, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, Namespaces: []string{"team-a"}}})
	srv.CreateUser(t, "reader", "reader-secret-1")
	srv.CreateUser(t, "stranger", "stranger-secret-1")
	srv.ChangeBucketOwner(t, "models", "reader")
	weights := s3test.RandomBytes(9, 3<<20)
	srv.Put(t, "models", "m/w.bin", weights)
	plain := "s3://models/m?endpoint=" + e.proxy.URL()
	reader := map[string]string{"accessKeyID": "reader", "secretAccessKey": "reader-secret-1"}
	stranger := map[string]string{"AWS_ACCESS_KEY_ID": "stranger", "AWS_SECRET_ACCESS_KEY": "stranger-secret-1"}

	publish := func(vol, ref string, secrets map[string]string) error {
		req := e.publishReq(vol, ref)
		req.Secrets = secrets
		_, err := e.node.NodePublishVolume(context.Background(), req)
		return err
	}
	refused := func(vol string, err error, code codes.Code) {
		t.Helper()
		if status.Code(err) != code {
			t.Fatalf("publish %s: %v, want %s", vol, err, code)
		}
		if m, _ := mounter.New().IsMounted(e.target(vol)); m {
			t.Fatalf("publish %s was refused but its target is mounted", vol)
		}
	}

	// Cold, with keys that cannot read the bucket: refused before any download.
	e.proxy.Reset()
	refused("cold-stranger", publish("cold-stranger", plain, stranger), codes.PermissionDenied)
	if n := e.proxy.BytesSent(); n != 0 {
		t.Fatalf("a refused volume fetched %d bytes of the model", n)
	}
	// The owner's keys fetch the model (the download uses them).
	if err := publish("owner", plain, reader); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(e.target("owner"), "w.bin")); err != nil || len(got) != len(weights) {
		t.Fatalf("owner's volume reads %d bytes (%v)", len(got), err)
	}
	// Now a hit: the stranger is still refused, and told why.
	err := publish("hit-stranger", plain, stranger)
	refused("hit-stranger", err, codes.PermissionDenied)
	t.Logf("refused on a hit: %v", err)
	// The same keys again within a minute: answered from the agent's cache.
	before := e.proxy.Requests()
	if err := publish("owner-2", plain, reader); err != nil {
		t.Fatal(err)
	}
	if n := e.proxy.Requests() - before; n != 0 {
		t.Errorf("a repeated check of the same keys sent %d requests to S3, want 0 (cached)", n)
	}
	// Half a key pair is the user's mistake, said as such.
	refused("half", publish("half", plain, map[string]string{"accessKeyID": "reader"}), codes.InvalidArgument)

	// A source restricted to namespaces: only pods of team-a may use it.
	teamRef := "s3://models/m?source=team-a"
	req := e.publishReq("team-b", teamRef)
	req.VolumeContext["csi.storage.k8s.io/pod.namespace"] = "team-b"
	_, err = e.node.NodePublishVolume(context.Background(), req)
	refused("team-b", err, codes.PermissionDenied)
	req = e.publishReq("no-ns", teamRef)
	delete(req.VolumeContext, "csi.storage.k8s.io/pod.namespace")
	_, err = e.node.NodePublishVolume(context.Background(), req)
	refused("no-ns", err, codes.PermissionDenied)
	req = e.publishReq("team-a", teamRef)
	req.VolumeContext["csi.storage.k8s.io/pod.namespace"] = "team-a"
	if _, err := e.node.NodePublishVolume(context.Background(), req); err != nil {
		t.Fatalf("team-a's pod: %v", err)
	}

	for _, v := range []string{"owner", "owner-2", "team-a"} {
		if err := e.unpublish(v); err != nil {
			t.Fatal(err)
		}
	}
	if p := e.pins(); len(p) != 0 {
		t.Fatalf("pins left: %q", p)
	}
	// Neither the plugin nor the agent wrote a secret anywhere in its logs.
	logs := e.logs.String()
	for _, secret := range []string{"reader-secret-1", "stranger-secret-1", srv.SecretKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%s…) is in the logs", secret[:3])
		}
	}
	if !strings.Contains(logs, "access refused") || !strings.Contains(logs, "***stripped***") {
		t.Errorf("the logs do not show the refused publishes with their secrets stripped:\n%s", logs)
	}
}
