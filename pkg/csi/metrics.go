package csi

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/modelcache/modelcache/pkg/agentapi"
)

type metrics struct {
	publish       *prometheus.HistogramVec
	publishErrors *prometheus.CounterVec
	calls         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "modelcache_csi_publish_duration_seconds",
			Help: "Time of successful NodePublishVolume calls; cache=hit when the model was already on the node.",
			// From a warm bind mount (sub-millisecond) to a cold fetch
			// that filled the whole publish wait.
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"cache"}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_csi_publish_errors_total",
			Help: "NodePublishVolume calls the agent refused, by error class.",
		}, []string{"class"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modelcache_csi_calls_total",
			Help: "CSI calls by method and gRPC code.",
		}, []string{"method", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.publish, m.publishErrors, m.calls)
	}
	return m
}

func codeOf(err error) string {
	for _, c := range []struct {
		name string
		err  error
	}{
		{agentapi.ClassInvalid, agentapi.ErrInvalid}, {agentapi.ClassNotFound, agentapi.ErrNotFound},
		{agentapi.ClassAccessDenied, agentapi.ErrAccessDenied}, {agentapi.ClassUnreachable, agentapi.ErrUnreachable},
		{agentapi.ClassNoSpace, agentapi.ErrNoSpace}, {agentapi.ClassChanged, agentapi.ErrChanged},
		{agentapi.ClassUnavailable, agentapi.ErrUnavailable},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return agentapi.ClassInternal
}

// intercept logs every call with secrets stripped from the request (a
// volume's nodePublishSecretRef lands in req.Secrets) and counts it.
// Probes and capability queries come every few seconds: debug level.
func (d *Driver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	code := status.Code(err)
	d.metrics.calls.WithLabelValues(method, code.String()).Inc()
	level := slogLevel(method, err)
	if d.log.Enabled(ctx, level) {
		args := []any{"method", method, "request", protosanitizer.StripSecrets(req).String(),
			"code", code.String(), "ms", float64(time.Since(start).Microseconds()) / 1000}
		if err != nil {
			args = append(args, "err", status.Convert(err).Message())
		}
		d.log.Log(ctx, level, "csi call", args...)
	}
	return resp, err
}
