package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// NodePublishVolume implements csi.NodeServer: ensure the model on this node
// (waiting at most PublishWait), pin the revision for this volume, and
// bind-mount its tree read-only at the target.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	start := time.Now()
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is missing")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ref, err := ParseVolumeAttributes(req.GetVolumeContext())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	creds, err := ParseSecrets(req.GetSecrets())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// Checked by the agent before it looks at the cache: a model held on
	// this node is served only to a pod that could read it from the bucket.
	access := &agentapi.Access{Namespace: req.GetVolumeContext()[podNamespaceKey], Credentials: creds}
	vol, target := req.GetVolumeId(), req.GetTargetPath()
	if !d.lock(vol) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is in progress", vol)
	}
	defer d.unlock(vol)

	rec, had, err := d.recs.get(vol, target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mounted, err := d.opts.Mounter.IsMounted(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted {
		switch {
		case !had:
			return nil, status.Errorf(codes.AlreadyExists, "target %s is already a mount point this plugin did not make", target)
		case !sameModel(rec.Ref, ref.String()):
			return nil, status.Errorf(codes.AlreadyExists, "volume %s is already published at %s with model %s", vol, target, rec.Ref)
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}

	// Leave kubelet's deadline a second to receive our answer.
	wait := d.opts.PublishWait
	if dl, ok := ctx.Deadline(); ok && time.Until(dl)-time.Second < wait {
		wait = max(time.Until(dl)-time.Second, 0)
	}
	tEnsure := time.Now()
	p, err := d.opts.Agent.Ensure(ctx, ref.String(), agentapi.EnsureOptions{Wait: wait, Access: access}, nil)
	if err != nil {
		d.metrics.publishErrors.WithLabelValues(codeOf(err)).Inc()
		return nil, agentStatus("model "+ref.String(), err)
	}
	if p.State != agentapi.StateReady {
		// kubelet retries with backoff and shows this in the pod's events.
		return nil, status.Error(codes.Unavailable, p.Message())
	}

	pinRef := ref
	pinRef.Revision = p.Revision
	pod := podOf(req.GetVolumeContext())
	rec = record{VolumeID: vol, Target: target, Ref: pinRef.String(), Revision: p.Revision,
		Holder: holder(vol, target, pod), Source: p.Path, SizeBytes: p.TotalBytes, Files: p.Files,
		Pod: pod, Published: time.Now().UTC()}
	if err := d.recs.put(rec); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	tPin := time.Now()
	pin, err := d.opts.Agent.Pin(ctx, rec.Ref, rec.Holder)
	if err != nil {
		d.recs.remove(vol, target)
		if errors.Is(err, agentapi.ErrNotFound) {
			// Evicted between ensure and pin: rare, and a retry fetches it.
			return nil, status.Errorf(codes.Unavailable, "model %s was evicted before it could be pinned; retrying", ref)
		}
		return nil, agentStatus("pin "+rec.Ref, err)
	}
	tMount := time.Now()
	tree, err := modelTree(d.opts.CacheDir, pin.Path)
	if err != nil {
		d.undoPublish(rec)
		d.log.Error("refused to mount a path the agent returned", "volume", vol, "model", rec.Ref, "path", pin.Path, "err", err)
		return nil, status.Errorf(codes.Internal, "model %s: refusing to mount %q: %v", ref, pin.Path, err)
	}
	if err := d.opts.Mounter.BindReadOnly(tree, target); err != nil {
		d.undoPublish(rec)
		return nil, status.Errorf(codes.Internal, "mount model %s: %v", ref, err)
	}
	cache := "miss"
	if p.Hit {
		cache = "hit"
	}
	d.metrics.publish.WithLabelValues(cache).Observe(time.Since(start).Seconds())
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
	end := time.Now()
	d.log.Info("published model", "volume", vol, "target", target, "model", rec.Ref, "pod", pod, "cache", cache,
		"ms", ms(start, end), "ensureMs", ms(tEnsure, tPin), "pinMs", ms(tPin, tMount), "mountMs", ms(tMount, end))
	return &csi.NodePublishVolumeResponse{}, nil
}

// modelTree resolves the path the agent answered for a pin and returns it if
// it is a directory strictly under <cacheDir>/models. The plugin is
// privileged and the agent is not: a path elsewhere (a bug, or an agent
// made to answer "/etc" or a symlink under models/ to it) must never reach
// a pod. The resolved path is what gets mounted, so a symlink there now is
// not followed a second time; only a writer of models/ (the agent) could
// still swap one in between this check and mount(2).
func modelTree(cacheDir, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", errors.New("not an absolute path")
	}
	models, err := filepath.EvalSymlinks(filepath.Join(cacheDir, "models"))
	if err != nil {
		return "", fmt.Errorf("the cache's models directory: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("resolve: %w", err)
	}
	rel, err := filepath.Rel(models, resolved)
	if err != nil || rel == "." || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("it resolves to %s, which is not under %s", resolved, models)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return "", fmt.Errorf("stat: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", resolved)
	}
	return resolved, nil
}

// undoPublish drops the pin and record of a publish whose mount failed or
// was refused.
func (d *Driver) undoPublish(rec record) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.opts.Agent.Unpin(ctx, rec.Ref, rec.Holder); err != nil {
		// The record stays, so reconciliation drops the pin later.
		d.log.Warn("unpin after a failed mount", "volume", rec.VolumeID, "err", err)
		return
	}
	d.recs.remove(rec.VolumeID, rec.Target)
}

// NodeUnpublishVolume implements csi.NodeServer: unmount, then unpin. It
// succeeds once the mount is gone even if the agent is down: the record
// stays and reconciliation drops the pin when the agent is back, so a pod
// never waits on the agent to terminate.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "target_path is missing")
	}
	vol, target := req.GetVolumeId(), req.GetTargetPath()
	if !d.lock(vol) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is in progress", vol)
	}
	defer d.unlock(vol)

	start := time.Now()
	if err := d.opts.Mounter.Unmount(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	tUnpin := time.Now()
	rec, had, err := d.recs.get(vol, target)
	if err != nil {
		d.log.Warn("unpublish: unreadable volume record; reconciliation will drop its pin", "volume", vol, "err", err)
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if !had {
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err := d.opts.Agent.Unpin(ctx, rec.Ref, rec.Holder); err != nil {
		d.log.Warn("unpublish: unpin failed; reconciliation will retry", "volume", vol, "model", rec.Ref, "err", err)
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err := d.recs.remove(vol, target); err != nil {
		d.log.Warn("unpublish", "volume", vol, "err", err)
	}
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
	d.log.Info("unpublished model", "volume", vol, "target", target, "model", rec.Ref,
		"ms", ms(start, time.Now()), "unmountMs", ms(start, tUnpin), "unpinMs", ms(tUnpin, time.Now()))
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats implements csi.NodeServer: the size of the model.
func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if req.GetVolumePath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_path is missing")
	}
	rec, had, err := d.recs.get(req.GetVolumeId(), req.GetVolumePath())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mounted, err := d.opts.Mounter.IsMounted(req.GetVolumePath())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if !had || !mounted {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), req.GetVolumePath())
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: rec.SizeBytes, Used: rec.SizeBytes},
			{Unit: csi.VolumeUsage_INODES, Total: int64(rec.Files), Used: int64(rec.Files)},
		},
	}, nil
}

// NodeGetInfo implements csi.NodeServer. No topology: any node can fetch any
// model, so volumes are not bound to nodes.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.opts.NodeID}, nil
}

// NodeGetCapabilities implements csi.NodeServer.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	rpc := func(t csi.NodeServiceCapability_RPC_Type) *csi.NodeServiceCapability {
		return &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}}
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{
		rpc(csi.NodeServiceCapability_RPC_GET_VOLUME_STATS),
	}}, nil
}

// sameModel compares two refs ignoring the revision the first was pinned at.
func sameModel(pinned, asked string) bool {
	p, err1 := model.ParseRef(pinned)
	a, err2 := model.ParseRef(asked)
	if err1 != nil || err2 != nil {
		return false
	}
	if a.Revision == "" {
		p.Revision = ""
	}
	return p.String() == a.String()
}
