package agent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"reflect"
	"time"

	k8scache "k8s.io/apimachinery/pkg/util/cache"

	"github.com/modelcache/modelcache/pkg/agentapi"
	"github.com/modelcache/modelcache/pkg/model"
)

// How long an answer of S3 about a volume's credentials is trusted. A grant
// lasts a minute so that kubelet's retries and a Deployment's many pods cost
// one request; a denial only a few seconds, so a fixed bucket policy takes
// effect at the next retry.
const (
	accessGrantTTL = time.Minute
	accessDenyTTL  = 5 * time.Second
)

// accessCacheSize bounds the answers kept (one per model and key pair):
// past it the least recently used go first, so a flood of new keys cannot
// grow the agent's memory, nor flush the answers pods are using.
const accessCacheSize = 10_000

// accessResult is S3's answer about one model and key pair. The cache is
// keyed by a hash of (model, credentials): the keys are never stored.
type accessResult struct{ err error }

func newAccessCache() *k8scache.LRUExpireCache { return k8scache.NewLRUExpireCache(accessCacheSize) }

// Every field of the credentials goes into the key (by reflection, so a
// field a new scheme adds can never be left out of it; all are strings,
// which TestAccessKeyEveryField checks), each prefixed with its
// length so no two values run together: two volumes share an answer only
// if they bring the same everything.
func accessKey(ref model.Ref, c model.Credentials) [sha256.Size]byte {
	h := sha256.New()
	put := func(s string) {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(s))))
		h.Write([]byte(s))
	}
	put(ref.Location().String())
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		put(v.Field(i).String())
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// authorize refuses an ensure whose access (see agentapi.Access) may not
// read ref. It runs before the cache is looked at, so a hit is no way
// around it.
func (a *Agent) authorize(ctx context.Context, ref model.Ref, acc *agentapi.Access) error {
	if acc == nil {
		return nil
	}
	ac := a.fetcher
	if err := ac.AllowedIn(ref.Location(), acc.Namespace); err != nil {
		return err
	}
	creds := acc.Credentials
	if creds == nil {
		return nil
	}
	key := accessKey(ref, *creds)
	if e, ok := a.access.Get(key); ok {
		a.metrics.accessChecks.WithLabelValues(ref.SchemeName(), "cached").Inc()
		return e.(accessResult).err
	}

	err := ac.CheckAccess(ctx, ref.Location(), creds)
	result, ttl := "granted", accessGrantTTL
	switch c := Classify(err); {
	case err == nil:
	case c == agentapi.ClassAccessDenied || c == agentapi.ClassNotFound || c == agentapi.ClassInvalid:
		result, ttl = "denied", accessDenyTTL
	default: // unreachable, cancelled: no answer about the credentials
		a.metrics.accessChecks.WithLabelValues(ref.SchemeName(), "error").Inc()
		return err
	}
	a.metrics.accessChecks.WithLabelValues(ref.SchemeName(), result).Inc()
	a.access.Add(key, accessResult{err}, ttl)
	return err
}

// AllowedIn says whether a caller acting for namespace (the prefetch
// controller, for a workload) may use the source ref names.
func (a *Agent) AllowedIn(ref model.Ref, namespace string) error {
	return a.fetcher.AllowedIn(ref.Location(), namespace)
}
