// Command csi-call is a development tool for `make demo`: it calls a CSI
// plugin over its unix socket the way kubelet does, so the demo can publish
// a model volume without a cluster. "info" asks GetPluginInfo, NodeGetInfo
// and NodeGetCapabilities (what kubelet asks when a plugin registers);
// "publish" sends one NodePublishVolume, printing the request and the time
// the call took; "unpublish" sends NodeUnpublishVolume. The connection is
// made before the clock starts, so the time is the plugin's answer, not the
// dial. It is not part of the product and is not in the image.
//
//	csi-call info --socket /tmp/d/csi.sock
//	csi-call publish --socket /tmp/d/csi.sock --volume-id V --target /tmp/d/mnt \
//	    --readonly --attr model=s3://demo/tiny-llm?source=local --attr csi.storage.k8s.io/ephemeral=true
//	csi-call unpublish --socket /tmp/d/csi.sock --volume-id V --target /tmp/d/mnt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const usage = `usage: csi-call info|publish|unpublish --socket PATH [flags]
run "csi-call COMMAND -h" for a command's flags`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	err := run(os.Args[1], os.Args[2:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2) // the flag set has printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "csi-call:", err)
		os.Exit(1)
	}
}

// call is what every command shares: the socket and a deadline per call
// (kubelet gives a CSI call 2 minutes).
type call struct {
	socket  string
	timeout time.Duration
	conn    *grpc.ClientConn
}

func (c *call) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.socket, "socket", "", "the plugin's CSI socket (a path or unix:///path)")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "deadline of each call")
}

func run(cmd string, args []string, out io.Writer) error {
	var c call
	fs := flag.NewFlagSet("csi-call "+cmd, flag.ContinueOnError)
	c.addFlags(fs)
	var (
		volumeID, target, fsType string
		readonly                 bool
		mode                     = accessMode(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
		attrs                    = attrFlag{}
	)
	switch cmd {
	case "info":
	case "publish", "unpublish":
		fs.StringVar(&volumeID, "volume-id", "", "volume_id")
		fs.StringVar(&target, "target", "", "target_path")
		if cmd == "publish" {
			fs.BoolVar(&readonly, "readonly", false, "readonly (a pod's readOnly: true)")
			fs.StringVar(&fsType, "fs-type", "", "access_type.mount.fs_type (an inline volume's fsType)")
			fs.Var(&mode, "access-mode", "access mode; kubelet sends SINGLE_NODE_WRITER for every inline volume")
			fs.Var(attrs, "attr", "a volume_context entry KEY=VALUE (repeatable)")
		}
	default:
		return errors.New(usage)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.socket == "" {
		return errors.New("--socket is required")
	}
	if cmd != "info" && (volumeID == "" || target == "") {
		return errors.New("--volume-id and --target are required")
	}
	if err := c.dial(); err != nil {
		return err
	}
	defer c.conn.Close()

	switch cmd {
	case "info":
		return c.info(out)
	case "publish":
		req := &csi.NodePublishVolumeRequest{VolumeId: volumeID, TargetPath: target, Readonly: readonly,
			VolumeCapability: &csi.VolumeCapability{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_Mode(mode)}},
			VolumeContext: attrs}
		return c.publish(req, out)
	default:
		return c.unpublish(&csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target}, out)
	}
}

// dial connects and waits until the connection is ready, so that the
// first call's time does not include setting it up.
func (c *call) dial() error {
	ep := c.socket
	if !strings.HasPrefix(ep, "unix:") {
		ep = "unix://" + ep
	}
	conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect %s: %w", c.socket, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			conn.Close()
			return fmt.Errorf("connect %s: not ready after 10s (last state %s)", c.socket, s)
		}
	}
	c.conn = conn
	return nil
}

func (c *call) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

func (c *call) info(out io.Writer) error {
	ctx, cancel := c.ctx()
	defer cancel()
	id, err := csi.NewIdentityClient(c.conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return callErr("GetPluginInfo", err)
	}
	node := csi.NewNodeClient(c.conn)
	ni, err := node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return callErr("NodeGetInfo", err)
	}
	nc, err := node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return callErr("NodeGetCapabilities", err)
	}
	var caps []string
	for _, cp := range nc.GetCapabilities() {
		caps = append(caps, cp.GetRpc().GetType().String())
	}
	fmt.Fprintf(out, "GetPluginInfo:        name %s, version %s\n", id.GetName(), id.GetVendorVersion())
	fmt.Fprintf(out, "NodeGetInfo:          node_id %s, max_volumes_per_node %d\n", ni.GetNodeId(), ni.GetMaxVolumesPerNode())
	fmt.Fprintf(out, "NodeGetCapabilities:  %s\n", strings.Join(caps, ", "))
	return nil
}

func (c *call) publish(req *csi.NodePublishVolumeRequest, out io.Writer) error {
	fmt.Fprintf(out, "NodePublishVolume\n  volume_id:   %s\n  target_path: %s\n  readonly:    %t\n  access_mode: %s\n",
		req.GetVolumeId(), req.GetTargetPath(), req.GetReadonly(), req.GetVolumeCapability().GetAccessMode().GetMode())
	fmt.Fprintln(out, "  volume_context:")
	for _, k := range slices.Sorted(maps.Keys(req.GetVolumeContext())) {
		fmt.Fprintf(out, "    %s: %q\n", k, req.GetVolumeContext()[k])
	}
	ctx, cancel := c.ctx()
	defer cancel()
	start := time.Now()
	_, err := csi.NewNodeClient(c.conn).NodePublishVolume(ctx, req)
	if err != nil {
		return callErr("NodePublishVolume", err)
	}
	fmt.Fprintf(out, "NodePublishVolume: OK in %s\n", ms(time.Since(start)))
	return nil
}

func (c *call) unpublish(req *csi.NodeUnpublishVolumeRequest, out io.Writer) error {
	ctx, cancel := c.ctx()
	defer cancel()
	start := time.Now()
	if _, err := csi.NewNodeClient(c.conn).NodeUnpublishVolume(ctx, req); err != nil {
		return callErr("NodeUnpublishVolume", err)
	}
	fmt.Fprintf(out, "NodeUnpublishVolume: OK in %s\n", ms(time.Since(start)))
	return nil
}

// callErr names the call and the gRPC code, which is what kubelet acts on
// (Unavailable: retry; InvalidArgument: the pod's spec is wrong).
func callErr(method string, err error) error {
	s := status.Convert(err)
	return fmt.Errorf("%s: %s: %s", method, s.Code(), s.Message())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// attrFlag collects repeated --attr KEY=VALUE into a volume_context.
type attrFlag map[string]string

func (a attrFlag) String() string { return fmt.Sprint(map[string]string(a)) }

func (a attrFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	switch {
	case !ok:
		return fmt.Errorf("%q: want KEY=VALUE", s)
	case k == "":
		return fmt.Errorf("%q: empty key", s)
	}
	if _, dup := a[k]; dup {
		return fmt.Errorf("%q: key %s given twice", s, k)
	}
	a[k] = v
	return nil
}

// accessMode is a CSI access mode by its name in the spec.
type accessMode csi.VolumeCapability_AccessMode_Mode

func (m accessMode) String() string { return csi.VolumeCapability_AccessMode_Mode(m).String() }

func (m *accessMode) Set(s string) error {
	v, ok := csi.VolumeCapability_AccessMode_Mode_value[strings.ToUpper(s)]
	if !ok || v == int32(csi.VolumeCapability_AccessMode_UNKNOWN) {
		return fmt.Errorf("unknown access mode %q (e.g. SINGLE_NODE_WRITER, MULTI_NODE_READER_ONLY)", s)
	}
	*m = accessMode(v)
	return nil
}
