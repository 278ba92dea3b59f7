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

// etagIndex maps (etag, size) to the digest of content already held, so the
// fetcher never downloads what the store has, even when a crash struck before
// the model's manifest was written. It is an append-only log, not fsynced:
// a lost line only costs a re-download, and every hit is checked against
// blobs/ before use. Open compacts it.
type etagIndex struct {
	mu   sync.Mutex
	m    map[string]model.Digest
	file *os.File
}

func indexKey(etag string, size int64) string { return etag + "\x00" + strconv.FormatInt(size, 10) }

func (x *etagIndex) get(etag string, size int64) (model.Digest, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	d, ok := x.m[indexKey(etag, size)]
	return d, ok
}

func (x *etagIndex) add(k IngestKey, d model.Digest) {
	if k.ETag == "" || strings.ContainsAny(k.ETag, "\t\n") {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m[indexKey(k.ETag, k.Size)] == d {
		return
	}
	x.m[indexKey(k.ETag, k.Size)] = d
	if x.file != nil {
		fmt.Fprintf(x.file, "%s\t%d\t%s\n", k.ETag, k.Size, d)
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
			parts := strings.Split(sc.Text(), "\t")
			if len(parts) != 3 {
				continue
			}
			size, err := strconv.ParseInt(parts[1], 10, 64)
			d := model.Digest(parts[2])
			if err != nil || d.Validate() != nil {
				continue
			}
			m[indexKey(parts[0], size)] = d
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
		etag, size, _ := strings.Cut(k, "\x00")
		fmt.Fprintf(&sb, "%s\t%s\t%s\n", etag, size, d)
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
