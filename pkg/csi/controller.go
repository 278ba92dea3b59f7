package csi

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The controller service provisions nothing: a model-cache volume is a name
// for a model, and every node fetches it into its own cache. CreateVolume
// only validates the model and records it in the volume context, which
// kubelet hands back to NodePublishVolume. It lets any CSI provisioner (the
// standard external-provisioner sidecar, or ours) serve the model-cache
// StorageClass.

var volumeIDRE = regexp.MustCompile(`^modelcache-[0-9a-f]{16}$`)

// VolumeID is stable for (name, model) so a retried CreateVolume returns the
// same volume.
func VolumeID(name, ref string) string {
	return fmt.Sprintf("modelcache-%016x", xxhash.Sum64String(name+"\x00"+ref))
}

// CreateVolume implements csi.ControllerServer. The parameters (from the
// StorageClass, or the claim through the provisioner) take the same keys as
// volume attributes. Capacity is reported as 0, unknown: a model volume is
// as large as its model, not as the claim asks.
func (d *Driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are missing")
	}
	for _, c := range req.GetVolumeCapabilities() {
		if err := checkCapability(c); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "a model volume cannot be created from a snapshot or another volume")
	}
	id, volCtx, err := NewVolume(req.GetName(), req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, VolumeContext: volCtx}}, nil
}

// NewVolume is the one provisioning path, of CreateVolume and of
// pkg/provisioner: it validates a model volume's parameters (volume
// attributes; keys under csi.storage.k8s.io/, such as secret references,
// are not attributes and are left out) and returns the volume's stable ID
// and the volume context that NodePublishVolume gets back.
func NewVolume(name string, params map[string]string) (id string, volCtx map[string]string, err error) {
	attrs := make(map[string]string, len(params))
	for k, v := range params {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			attrs[k] = v
		}
	}
	ref, err := ParseVolumeAttributes(attrs)
	if err != nil {
		return "", nil, err
	}
	return VolumeID(name, ref.String()), map[string]string{AttrModel: ref.String()}, nil
}

// DeleteVolume implements csi.ControllerServer: nothing to delete, the
// node caches evict models on their own.
func (d *Driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities implements csi.ControllerServer. A volume
// "exists" when its ID is one CreateVolume makes: the controller keeps no
// state to know more.
func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are missing")
	}
	if !volumeIDRE.MatchString(req.GetVolumeId()) {
		return nil, status.Errorf(codes.NotFound, "volume %s was not made by this driver", req.GetVolumeId())
	}
	for _, c := range req.GetVolumeCapabilities() {
		if err := checkCapability(c); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters(),
	}}, nil
}

// ControllerGetCapabilities implements csi.ControllerServer.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{
			Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}
