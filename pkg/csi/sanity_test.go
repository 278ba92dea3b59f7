package csi_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/modelcache/modelcache/internal/s3test"
)

// TestSanity runs csi-sanity v5.6.0 against the real plugin (node and
// controller services), the real agent and versitygw. Every volume the
// suite creates names a real model, so each publish fetches, pins and
// bind-mounts it.
//
// Tests the suite skips, and why:
//   - snapshots, cloning, expansion, ListVolumes, GetCapacity,
//     ControllerPublish, volume health, modify: not offered; a model volume
//     is a read-only name for a model, nothing is provisioned or attached.
//   - NodeStage/Unstage: not offered; a bind mount needs no staging.
//   - NodeExpandVolume: not offered; a model's size is fixed.
//   - NodeGetVolumeHealth, NodeGetStorageHealth: not offered (the CSI spec
//     Go bindings this build uses no longer carry volume conditions).
//   - "single node multi writer": not offered; volumes are read-only.
//   - "already existing name and different capacity": the volume's capacity
//     is unknown (0), it is the model's size whatever the claim asks.
//   - "node max attach limit": not enabled; nothing is attached.
func TestSanity(t *testing.T) {
	e := newEnv(t, 30*time.Second)
	e.srv.Put(t, "models", "sanity/model.safetensors", s3test.RandomBytes(11, 2<<20))
	e.srv.Put(t, "models", "sanity/config.json", []byte(`{}`))

	if err := os.MkdirAll(filepath.Join(e.dir, "sanity"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := sanity.NewTestConfig()
	cfg.Address = e.csiSk
	cfg.TargetPath = filepath.Join(e.dir, "sanity", "target")
	cfg.StagingPath = filepath.Join(e.dir, "sanity", "staging")
	cfg.TestVolumeParameters = map[string]string{"model": e.ref("sanity")}
	cfg.IdempotentCount = 3
	sanity.Test(t, cfg)
}
