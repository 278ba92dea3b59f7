package csi

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestInterceptorStripsSecrets(t *testing.T) {
	var buf bytes.Buffer
	d, err := New(Options{Controller: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	req := &csi.NodePublishVolumeRequest{VolumeId: "vol-x", TargetPath: "/t",
		Secrets: map[string]string{"secretAccessKey": "hunter2-very-secret"}}
	handler := func(context.Context, any) (any, error) { return nil, status.Error(codes.Unavailable, "fetching") }
	_, err = d.intercept(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodePublishVolume"}, handler)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("interceptor changed the answer: %v", err)
	}
	out := buf.String()
	if strings.Contains(out, "hunter2") {
		t.Fatalf("secret in the log: %s", out)
	}
	if !strings.Contains(out, "NodePublishVolume") || !strings.Contains(out, "vol-x") || !strings.Contains(out, "Unavailable") {
		t.Fatalf("log lacks method, request or code: %s", out)
	}
}
