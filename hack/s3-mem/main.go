// Command s3-mem is the S3 server of `make demo`: gofakes3 with its memory
// backend on a loopback port. It builds in seconds from modules the project
// already has, where versitygw (the tests' server, which checks signatures
// and keeps objects on disk) takes minutes of CPU to build cold, longer
// than the rest of the demo. It accepts any credentials and forgets
// everything when it exits. It is not part of the product.
//
//	s3-mem --addr 127.0.0.1:0 --endpoint-file /tmp/d/s3.endpoint
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/modelcache/modelcache/internal/testenv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	endpointFile := flag.String("endpoint-file", "", "write the server's URL here once it listens (written whole, by rename)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *endpointFile); err != nil {
		fmt.Fprintln(os.Stderr, "s3-mem:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends.
func run(ctx context.Context, addr, endpointFile string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	endpoint := "http://" + l.Addr().String()
	if err := testenv.WriteEndpoint(endpointFile, endpoint); err != nil {
		return err
	}
	fmt.Println("s3-mem listening on", endpoint)
	srv := &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func handler() http.Handler {
	return decodeChunked(gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
}
