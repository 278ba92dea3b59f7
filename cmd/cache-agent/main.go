// Command cache-agent is modelcache's node agent and its CLI. `serve` runs the
// agent (one per node, a DaemonSet); the other subcommands talk to it over
// its unix socket, so `kubectl exec ds/modelcache -c cache-agent --
// cache-agent status` works on any node.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/internal/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const defaultSocket = "/run/modelcache/agent.sock"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var socket string
	var verbose bool
	root := &cobra.Command{
		Use:   "cache-agent",
		Short: "Node agent of modelcache: prefetches model weights from S3 onto local disk",
		Long: `cache-agent keeps model weights from S3-compatible object storage on this node's
local disk, deduplicated by content, so inference pods mount them read-only in
milliseconds instead of downloading them at start.

Run "cache-agent serve" once per node (the DaemonSet does). The other commands
talk to the running agent over its unix socket (--socket).`,
		Version:       buildinfo.Version(version),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.PersistentFlags().StringVar(&socket, "socket", envOr("MODELCACHE_SOCKET", defaultSocket),
		"unix socket of the agent API (env MODELCACHE_SOCKET)")
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log at debug level")
	root.AddCommand(newServeCmd(&socket), newPrefetchCmd(&socket), newStatusCmd(&socket),
		newEvictCmd(&socket), newVerifyCmd(&socket))
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
