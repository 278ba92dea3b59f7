// Command publish-latency measures warm publish latency the way kubelet sees
// it: NodePublishVolume and NodeUnpublishVolume over the plugin's CSI socket,
// for a model already in the node cache. It prints p50/p99/max in ms.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func main() {
	sock := flag.String("csi", "", "CSI socket of the plugin")
	ref := flag.String("model", "", "model reference (s3://…)")
	label := flag.String("label", "", "name of this row in the output")
	n := flag.Int("n", 1000, "publish+unpublish iterations")
	dir := flag.String("dir", os.TempDir(), "where target directories go")
	goal := flag.Duration("goal-p99", 5*time.Millisecond, "the publish p99 the verdict line checks")
	flag.Parse()
	if err := run(*sock, *ref, *label, *n, *dir, *goal); err != nil {
		fmt.Fprintln(os.Stderr, "publish-latency:", err)
		os.Exit(1)
	}
}

func run(sock, ref, label string, n int, dir string, goal time.Duration) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	node := csi.NewNodeClient(conn)
	ctx := context.Background()
	target := filepath.Join(dir, "publish-latency", "mount")
	req := &csi.NodePublishVolumeRequest{VolumeId: "publish-latency", TargetPath: target, Readonly: true,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY}},
		VolumeContext: map[string]string{"model": ref}}
	unreq := &csi.NodeUnpublishVolumeRequest{VolumeId: "publish-latency", TargetPath: target}

	// Warm up: the first publish may find the model cold; kubelet would
	// retry on Unavailable, and so do we, until it is mounted once.
	deadline := time.Now().Add(30 * time.Minute)
	for {
		_, err := node.NodePublishVolume(ctx, req)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return fmt.Errorf("warm-up publish: %w", err)
		}
		fmt.Fprintf(os.Stderr, "    %s\n", status.Convert(err).Message())
	}
	if _, err := node.NodeUnpublishVolume(ctx, unreq); err != nil {
		return fmt.Errorf("warm-up unpublish: %w", err)
	}

	pub := make([]time.Duration, 0, n)
	unpub := make([]time.Duration, 0, n)
	pair := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		t1 := time.Now()
		if _, err := node.NodeUnpublishVolume(ctx, unreq); err != nil {
			return fmt.Errorf("unpublish: %w", err)
		}
		t2 := time.Now()
		pub, unpub, pair = append(pub, t1.Sub(t0)), append(unpub, t2.Sub(t1)), append(pair, t2.Sub(t0))
	}
	fmt.Printf("%-28s %s  %s  %s\n", label, stats(pub), stats(unpub), stats(pair))
	p99, verdict := percentile(pub, .99), "met"
	if p99 >= goal {
		verdict = "NOT met"
	}
	fmt.Printf("%-28s publish p99 %.2f ms (goal < %v: %s)\n", label, float64(p99.Microseconds())/1000, goal, verdict)
	return nil
}

// stats is "p50 p99 max" in milliseconds.
func stats(d []time.Duration) string {
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return fmt.Sprintf("%6.2f %6.2f %7.2f", ms(percentile(d, .50)), ms(percentile(d, .99)), ms(slices.Max(d)))
}

// percentile is the q quantile of d (sorted in place).
func percentile(d []time.Duration, q float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}
