package csi

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// Volume attributes a pod (inline volume) or a PersistentVolume (its CSI
// volumeAttributes) may set. Keys with a "/" belong to Kubernetes
// (csi.storage.k8s.io/pod.name, the provisioner's identity …) and are ignored;
// any other unknown key is refused, so a typo ("modle") fails loudly instead
// of silently mounting the wrong thing.
const (
	AttrModel    = "model"    // s3://BUCKET/PREFIX[?options], required
	AttrSource   = "source"   // named source of the agent's sources file
	AttrRevision = "revision" // pin an exact revision (16 hex digits)
	AttrEndpoint = "endpoint" // S3 endpoint override
	AttrRegion   = "region"

	podNameKey      = "csi.storage.k8s.io/pod.name"
	podNamespaceKey = "csi.storage.k8s.io/pod.namespace"
)

var knownAttrs = []string{AttrModel, AttrSource, AttrRevision, AttrEndpoint, AttrRegion}

// volumeRequest is a validated publish request.
type volumeRequest struct {
	volumeID  string
	target    string
	ref       model.Ref
	pod       string // namespace/name when kubelet passes pod info
	mountOpts []string
}

// ParseVolumeAttributes turns volume attributes (or StorageClass
// parameters, which take the same keys) into a model reference.
func ParseVolumeAttributes(vc map[string]string) (model.Ref, error) {
	raw := strings.TrimSpace(vc[AttrModel])
	if raw == "" {
		return model.Ref{}, fmt.Errorf("volume attribute %q is missing: set volumeAttributes.model to s3://BUCKET/PREFIX", AttrModel)
	}
	ref, err := model.ParseRef(raw)
	if err != nil {
		return model.Ref{}, fmt.Errorf("volume attribute %q: %w", AttrModel, err)
	}
	for k, v := range vc {
		if k == AttrModel || strings.Contains(k, "/") {
			continue
		}
		if !slices.Contains(knownAttrs, k) {
			return model.Ref{}, fmt.Errorf("unknown volume attribute %q (known: %s)", k, strings.Join(knownAttrs, ", "))
		}
		if err := ref.SetOption(k, strings.TrimSpace(v)); err != nil {
			return model.Ref{}, fmt.Errorf("volume attribute %q: %w", k, err)
		}
	}
	return ref, nil
}

// Keys of a volume's Secret (nodePublishSecretRef). The AWS environment
// variable names are accepted too, since many existing Secrets use them.
var secretKeys = map[string][]string{
	"accessKeyID":     {"accessKeyID", "AWS_ACCESS_KEY_ID"},
	"secretAccessKey": {"secretAccessKey", "AWS_SECRET_ACCESS_KEY"},
	"sessionToken":    {"sessionToken", "AWS_SESSION_TOKEN"},
	"token":           {"token", "HF_TOKEN"},
	"accountKey":      {"accountKey", "AZURE_STORAGE_KEY"},
	"sasToken":        {"sasToken", "AZURE_STORAGE_SAS_TOKEN"},
	// A kubernetes.io/dockerconfigjson Secret (the kind imagePullSecrets
	// name), or the older kubernetes.io/dockercfg: a registry login.
	"dockerConfig": {".dockerconfigjson", ".dockercfg"},
	// A Google service account's JSON key (gs:// refs).
	"serviceAccountKey": {"serviceAccountKey", "key.json"},
}

// ParseSecrets turns the Secret kubelet passes with a publish into the
// volume's credentials (S3 keys, a Hub token, a docker config, an Azure
// key or SAS, or a GCS service account key); nil when the volume has none. Other keys of the
// Secret are ignored. Errors name keys, never values.
func ParseSecrets(secrets map[string]string) (*agentapi.Credentials, error) {
	get := func(name string) string {
		for _, k := range secretKeys[name] {
			if v := strings.TrimSpace(secrets[k]); v != "" {
				return v
			}
		}
		return ""
	}
	c := agentapi.Credentials{AccessKeyID: get("accessKeyID"), SecretAccessKey: get("secretAccessKey"), SessionToken: get("sessionToken"),
		Token: get("token"), AccountKey: get("accountKey"), SASToken: get("sasToken"), DockerConfig: get("dockerConfig"),
		ServiceAccountKey: get("serviceAccountKey")}
	if c == (agentapi.Credentials{}) {
		return nil, nil
	}
	if c.AccountKey != "" || c.SASToken != "" {
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("the volume's secret (nodePublishSecretRef): %w (keys accountKey or AZURE_STORAGE_KEY, sasToken or AZURE_STORAGE_SAS_TOKEN)", err)
		}
		return &c, nil
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("the volume's secret (nodePublishSecretRef) needs both %q and %q (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) for S3 or a registry login, %q (or HF_TOKEN) for the Hub, %q (a kubernetes.io/dockerconfigjson Secret) for a registry, %q or %q for Azure, or %q (or key.json) for GCS",
			"accessKeyID", "secretAccessKey", "token", ".dockerconfigjson", "accountKey", "sasToken", "serviceAccountKey")
	}
	return &c, nil
}

// checkCapability refuses what a model volume cannot be: a raw block device,
// or a volume that several nodes write. A single-node writer mode is accepted
// because kubelet sends SINGLE_NODE_WRITER for every inline volume whatever
// the pod asks; the mount is read-only regardless, and a write gets EROFS.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("volume capability is missing")
	}
	if c.GetBlock() != nil {
		return fmt.Errorf("a model volume is a directory: use volumeMode Filesystem, not Block")
	}
	if c.GetMount() == nil {
		return fmt.Errorf("volume capability has no access type: want mount")
	}
	// fsType is ignored: provisioners fill in ext4 by default, and a bind
	// mount of the node cache has no filesystem of its own to format.
	for _, f := range c.GetMount().GetMountFlags() {
		if f == "rw" {
			return fmt.Errorf("mount flag rw asks for write access: model volumes are read-only")
		}
	}
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER:
		return fmt.Errorf("access mode %s asks for write access: model volumes are read-only (use ReadOnlyMany)",
			c.GetAccessMode().GetMode())
	case csi.VolumeCapability_AccessMode_UNKNOWN:
		return fmt.Errorf("volume capability has no access mode")
	}
	return nil
}

// holder names the pin one published volume holds. It carries the pod when
// kubelet tells us (podInfoOnMount), so `cache-agent status` shows who keeps
// a model, and a hash of the target so that one volume published at two
// targets holds two pins.
func holder(volumeID, target, pod string) string {
	h := fmt.Sprintf("%08x", uint32(xxhash.Sum64String(target)))
	if pod != "" {
		return "csi:" + pod + ":" + volumeID + "@" + h
	}
	return "csi:" + volumeID + "@" + h
}

// isCSIHolder tells our pins from the agent's other holders (workloads,
// operators) during reconciliation.
func isCSIHolder(h string) bool { return strings.HasPrefix(h, "csi:") }

func podOf(vc map[string]string) string {
	ns, name := vc[podNamespaceKey], vc[podNameKey]
	if ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}
