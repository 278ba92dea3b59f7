package cache

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/modelcache/modelcache/pkg/model"
)

// etagIndex maps (scope, etag, size) to the digest of content already held,
// so the fetcher never downloads what the store has, even when a crash
// struck before the model's manifest was written. The scope (source and
// bucket, see model.Ref.Scope) is part of the key: an ETag is only what one
// server says about its own objects, so it is never trusted across scopes. It is an append-only log, not fsynced:
// a lost line only costs a re-download, and every hit is checked against
// blobs/ before use. Open compacts it.
type etagIndex struct {
	mu   sync.Mutex
	m    map[string]model.Digest
	file *os.File
}

func indexKey(scope, etag string, size int64) string {
	return scope + "\x00" + etag + "\x00" + strconv.FormatInt(size, 10)
}

func (x *etagIndex) get(scope, etag string, size int64) (model.Digest, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	d, ok := x.m[indexKey(scope, etag, size)]
	return d, ok
}

func (x *etagIndex) add(k IngestKey, d model.Digest) {
	if k.ETag == "" || k.Scope == "" || strings.ContainsAny(k.ETag+k.Scope, "\t\n\x00") {
		return
	}
	key := indexKey(k.Scope, k.ETag, k.Size)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m[key] == d {
		return
	}
	x.m[key] = d
	if x.file != nil {
		fmt.Fprintf(x.file, "%s\t%s\t%d\t%s\n", k.Scope, k.ETag, k.Size, d)
	}
}

// loadIndex reads the log, keeps the entries whose blob exists, adds the
// given entries (from manifests) and rewrites the log compacted.
func (s *Store) loadIndex(extra map[string]model.Digest) error {
	path := s.root + "/" + fileIndex
	m := map[string]model.Digest{}
	f, err := os.Open(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cache: read index: %w", err)
	}
	if f != nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// Lines of older versions (no scope, or another digest
			// algorithm) do not parse or name no blob: they are dropped,
			// and the manifests put back what the held models need.
			parts := strings.Split(sc.Text(), "\t")
			if len(parts) != 4 {
				continue
			}
			size, err := strconv.ParseInt(parts[2], 10, 64)
			d := model.Digest(parts[3])
			if err != nil || d.Validate() != nil || d.Algorithm() != model.DigestAlgorithm {
				continue
			}
			m[indexKey(parts[0], parts[1], size)] = d
		}
		f.Close()
	}
	for k, d := range extra {
		m[k] = d
	}
	var sb strings.Builder
	for k, d := range m {
		if !s.HasBlob(d) {
			delete(m, k)
			continue
		}
		fmt.Fprintf(&sb, "%s\t%s\n", strings.ReplaceAll(k, "\x00", "\t"), d)
	}
	if err := writeFileAtomic(path, []byte(sb.String())); err != nil {
		return fmt.Errorf("cache: write index: %w", err)
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cache: open index: %w", err)
	}
	s.index = &etagIndex{m: m, file: file}
	return nil
}
