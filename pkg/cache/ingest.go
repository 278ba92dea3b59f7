package cache

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/pkg/model"
)

// IngestKey identifies content being downloaded. Within one Scope (the
// source and bucket, model.Ref.Scope) two keys with the same non-empty ETag
// and Size name the same content (S3's promise), so a resumed download finds
// the ingest an earlier process left behind. Across scopes an ETag proves
// nothing: any server can list any ETag, so it never leads to another
// scope's bytes.
type IngestKey struct {
	Scope string `json:"scope"`
	// Origin is where the content comes from (endpoint, bucket, key). It names
	// the ingest only when ETag is empty.
	Origin string `json:"origin"`
	ETag   string `json:"etag"`
	Size   int64  `json:"size"`
}

func (k IngestKey) id() string {
	s := fmt.Sprintf("etag\x00%s\x00%s\x00%d", k.Scope, k.ETag, k.Size)
	if k.ETag == "" {
		s = fmt.Sprintf("origin\x00%s\x00%s\x00%d", k.Scope, k.Origin, k.Size)
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// Ingest is one blob being written. Lifecycle: Store.OpenIngest → WriteAt and
// MarkLeaf for every Pending leaf (from any number of goroutines) → Commit, or
// Close to keep what was written for a later resume, or Abort to discard it.
// Exactly one of Commit, Close and Abort must be called.
type Ingest struct {
	store *Store
	res   *Reservation // set when opened through a Reservation
	key   IngestKey
	dir   string // ingest/<id>, or for a one-leaf blob the data file ingest/<id>.one
	path  string // the data file
	data  *os.File
	seq   *seqHash // the SHA-256 of what is written, see seqhash.go
	// composite, if set, is a published checksum Commit checks too.
	composite *model.Composite

	mu      sync.Mutex
	journal *os.File
	leaves  []uint64
	held    []bool
	done    bool
}

const (
	ingestData    = "data"
	ingestMeta    = "meta"
	ingestJournal = "leaves"
)

// OpenIngest creates the ingest for key, or resumes the one a previous run
// left. Leaves the journal records are re-hashed from disk and kept only if
// they still match, so a crash at any moment (even a lost page cache) costs
// at most a re-download of those leaves, never a corrupt blob. Only one
// Ingest per key may be open: a second OpenIngest fails with ErrLocked.
func (s *Store) OpenIngest(key IngestKey) (*Ingest, error) {
	if key.Size < 0 || key.Size > model.MaxFileSize {
		return nil, fmt.Errorf("cache: ingest %q: size %d out of range", key.Origin, key.Size)
	}
	id := key.id()
	if err := s.lockIngest(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.forgetLocked(id) // its reservation counts it from now on
	s.mu.Unlock()
	w, err := s.openIngest(id, key)
	if err != nil {
		s.unlockIngest(id)
		return nil, err
	}
	return w, nil
}

// oneLeafSuffix names the ingest file of a blob of at most one leaf. Such a
// blob is fetched whole or again (a leaf is only ever kept complete), so
// its ingest needs no directory, no meta and no journal: one file, created
// empty every time. That is a quarter of the file system calls and one
// fsync less per file, most of the cost of a model of many small files
// (2,000 shards: 1.2 ms of system CPU per file went to the ingest's
// bookkeeping). Close removes the file, and Open removes any a crash left.
const oneLeafSuffix = ".one"

func (s *Store) openIngest(id string, key IngestKey) (*Ingest, error) {
	dir := filepath.Join(s.root, dirIngest, id)
	w := &Ingest{store: s, key: key, dir: dir, path: filepath.Join(dir, ingestData),
		leaves: make([]uint64, model.LeafCount(key.Size)),
		held:   make([]bool, model.LeafCount(key.Size))}
	if key.Size <= model.LeafSize {
		return w.openOneLeaf(dir + oneLeafSuffix)
	}
	resumed, err := w.loadMeta()
	if err != nil {
		return nil, err
	}
	if !resumed {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("cache: clear ingest %s: %w", dir, err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("cache: create ingest: %w", err)
		}
		// Not fsynced: the meta only says which key the leaves belong to,
		// and a resume trusts no leaf it has not re-hashed. A meta lost or
		// torn in a crash means a fresh start, never a wrong blob.
		meta, _ := json.Marshal(key)
		if err := os.WriteFile(filepath.Join(dir, ingestMeta), meta, 0o600); err != nil {
			return nil, fmt.Errorf("cache: create ingest: %w", classifyNoSpace(err))
		}
	}
	w.data, err = os.OpenFile(w.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache: open ingest data: %w", err)
	}
	if err := w.preallocate(); err != nil {
		w.data.Close()
		if !resumed || errors.Is(err, ErrNoSpace) {
			// A full disk: leave nothing behind that holds space.
			os.RemoveAll(dir)
		}
		return nil, err
	}
	w.seq = newSeqHash(w.data, key.Size)
	if resumed {
		if err := w.replayJournal(); err != nil {
			w.data.Close()
			return nil, err
		}
	}
	// Rewrite the journal with only the verified leaves, so a bad line never
	// survives into the next resume.
	if err := w.rewriteJournal(); err != nil {
		w.data.Close()
		return nil, err
	}
	return w, nil
}

// loadMeta reports whether dir holds an ingest of the same key to resume.
func (w *Ingest) loadMeta() (bool, error) {
	b, err := os.ReadFile(filepath.Join(w.dir, ingestMeta))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cache: read ingest meta: %w", err)
	}
	var old IngestKey
	if json.Unmarshal(b, &old) != nil || old != w.key {
		return false, nil
	}
	return true, nil
}

// preallocate reserves the blocks up front: no ENOSPC half way through a
// multi-GB download on a filesystem that supports it, and less fragmentation.
func (w *Ingest) preallocate() error {
	if w.key.Size == 0 {
		return nil
	}
	err := unix.Fallocate(int(w.data.Fd()), 0, 0, w.key.Size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = w.data.Truncate(w.key.Size)
	}
	if err != nil {
		return fmt.Errorf("cache: preallocate %d bytes for %s: %w", w.key.Size, w.key.Origin, classifyNoSpace(err))
	}
	return nil
}

func (w *Ingest) replayJournal() error {
	f, err := os.Open(filepath.Join(w.dir, ingestJournal))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cache: read ingest journal: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		idx, sum, ok := parseJournalLine(sc.Text())
		if !ok || idx >= len(w.leaves) || w.held[idx] {
			continue // a torn last line or garbage: the leaf is simply fetched again
		}
		off, n := model.LeafRange(w.key.Size, idx)
		h := xxhash.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(w.data, off, n), buf); err != nil {
			return fmt.Errorf("cache: re-hash resumed leaf: %w", err)
		}
		if h.Sum64() == sum {
			w.leaves[idx], w.held[idx] = sum, true
			// Its bytes are hashed from the file once the hash gets there.
			if err := w.seq.claim(off, n); err != nil {
				return err
			}
			w.seq.addReady(off, off+n)
		}
	}
	return nil
}

func parseJournalLine(line string) (int, uint64, bool) {
	a, b, ok := strings.Cut(line, " ")
	if !ok {
		return 0, 0, false
	}
	idx, err1 := strconv.Atoi(a)
	sum, err2 := strconv.ParseUint(b, 16, 64)
	return idx, sum, err1 == nil && err2 == nil && idx >= 0 && len(b) == 16
}

func (w *Ingest) rewriteJournal() error {
	var sb strings.Builder
	for i, ok := range w.held {
		if ok {
			fmt.Fprintf(&sb, "%d %016x\n", i, w.leaves[i])
		}
	}
	path := filepath.Join(w.dir, ingestJournal)
	if err := os.WriteFile(path+".tmp", []byte(sb.String()), 0o600); err != nil {
		return fmt.Errorf("cache: write ingest journal: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("cache: write ingest journal: %w", err)
	}
	j, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cache: open ingest journal: %w", err)
	}
	w.journal = j
	return nil
}

// Key is what the ingest was opened for.
func (w *Ingest) Key() IngestKey { return w.key }

// Pending lists the leaves still to be written, in order.
func (w *Ingest) Pending() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var p []int
	for i, ok := range w.held {
		if !ok {
			p = append(p, i)
		}
	}
	return p
}

// HeldBytes is how many bytes earlier runs already wrote and verified.
func (w *Ingest) HeldBytes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for i, ok := range w.held {
		if ok {
			_, l := model.LeafRange(w.key.Size, i)
			n += l
		}
	}
	return n
}

// WriteAt writes downloaded bytes and hashes them; safe for concurrent use
// on disjoint ranges. Every byte may be written once: a range that overlaps
// an earlier write is refused, so the digest is always of the file's bytes.
func (w *Ingest) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.key.Size {
		return 0, fmt.Errorf("cache: write [%d,%d) outside blob of %d bytes", off, off+int64(len(p)), w.key.Size)
	}
	if err := w.seq.claim(off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := w.data.WriteAt(p, off)
	if err != nil {
		w.seq.fail()
		return n, classifyNoSpace(err)
	}
	w.seq.wrote(p, off)
	return n, nil
}

// StartWriteback asks the kernel to start writing [off, off+n) of the data
// file to disk now, without waiting (sync_file_range SYNC_FILE_RANGE_WRITE).
// It changes nothing about durability (Commit still fsyncs) but when the
// disk does the work: called for each finished part, it overlaps writeback
// with the rest of the download, so the commit's fsync finds little left to
// write and gigabytes of dirty pages never pile up. The bytes stay in the
// page cache, warm for the first reader of the model.
func (w *Ingest) StartWriteback(off, n int64) error {
	if off < 0 || n <= 0 || off+n > w.key.Size {
		return nil
	}
	err := unix.SyncFileRange(int(w.data.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	if err != nil && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("cache: start writeback: %w", classifyNoSpace(err))
	}
	return nil // a hint: filesystems without it are synced by Commit
}

// MarkLeaf records that leaf i is fully written and hashes to sum (the
// xxh64 of its bytes, computed while streaming). The journal line is not
// fsynced: a resume re-hashes every journalled leaf before trusting it.
func (w *Ingest) MarkLeaf(i int, sum uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i < 0 || i >= len(w.leaves) {
		return fmt.Errorf("cache: leaf %d out of range (blob has %d)", i, len(w.leaves))
	}
	w.leaves[i], w.held[i] = sum, true
	if w.journal == nil {
		return nil // one-leaf ingest: nothing to resume
	}
	if _, err := fmt.Fprintf(w.journal, "%d %016x\n", i, sum); err != nil {
		return fmt.Errorf("cache: append ingest journal: %w", classifyNoSpace(err))
	}
	return nil
}

// Commit makes the blob durable and immutable, in containerd's order: fsync
// data, check size and every leaf, compute the digest (and compare it with
// expected when given), rename into blobs/, fsync the directory, chmod 0444.
// If the store already holds the digest the ingest is dropped instead. The
// ingest is closed whatever the outcome; on a digest mismatch it is removed.
func (w *Ingest) Commit(expected model.Digest) (model.Digest, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return "", errors.New("cache: ingest already closed")
	}
	w.done = true
	defer w.store.unlockIngest(w.key.id())
	if w.journal != nil {
		defer w.journal.Close()
	}
	digest, err := w.verify(expected, true)
	if err != nil {
		return "", err
	}
	w.data.Close()
	// Index first: a crash right after the rename must still find the blob
	// (an entry whose blob never landed is ignored on lookup).
	w.store.index.add(w.key, digest)
	renamed, err := w.store.commitBlob(w.path, digest, w.key.Size, w.res)
	if err != nil {
		return "", err
	}
	w.dropCommitted(renamed)
	return digest, nil
}

// dropCommitted removes what is left of a committed ingest: a one-leaf
// ingest is a file, gone with the rename unless the store held the blob
// already (one unlink then, none otherwise); a journaled one is a
// directory that still holds its journal.
func (w *Ingest) dropCommitted(renamed bool) {
	if w.journal == nil && renamed {
		return
	}
	remove := os.RemoveAll
	if w.journal == nil {
		remove = os.Remove
	}
	if err := remove(w.dir); err != nil {
		w.store.log.Warn("remove committed ingest", "dir", w.dir, "err", err)
	}
}

// ExpectComposite makes Commit also check the file against a composite
// SHA-256 (a multipart upload's published checksum, model.Composite). Call
// it before any WriteAt.
func (w *Ingest) ExpectComposite(c *model.Composite) error {
	if err := c.Check(w.key.Size); err != nil {
		return fmt.Errorf("cache: %s: %w", w.key.Origin, err)
	}
	w.composite = c
	w.seq.setParts(c.Parts)
	return nil
}

// Close releases the ingest and keeps its bytes for a later resume.
func (w *Ingest) Close() error { return w.release(false) }

// Abort releases the ingest and deletes its bytes.
func (w *Ingest) Abort() error { return w.release(true) }

// release closes the files and, with remove, deletes the ingest before the
// lock is dropped, so no other writer can open it half-deleted.
func (w *Ingest) release(remove bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	defer w.store.unlockIngest(w.key.id())
	if w.journal == nil { // one-leaf ingest: nothing worth keeping
		return errors.Join(w.data.Close(), os.Remove(w.dir))
	}
	err := errors.Join(w.journal.Close(), w.data.Close())
	if remove {
		return os.RemoveAll(w.dir)
	}
	w.store.mu.Lock()
	w.store.keepLocked(w.key.id(), w.dir)
	w.store.mu.Unlock()
	return err
}

// openOneLeaf opens the single data file of a one-leaf ingest at path,
// empty (see oneLeafSuffix).
func (w *Ingest) openOneLeaf(path string) (*Ingest, error) {
	w.dir, w.path = path, path
	var err error
	w.data, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache: open ingest data: %w", classifyNoSpace(err))
	}
	// Not preallocated: at most one leaf (8 MiB) is written right away, so
	// delayed allocation places it as well as fallocate would, a full disk
	// shows at the write (ENOSPC, classified by WriteAt), and the syscall
	// and the unwritten-extent conversion at writeback are saved.
	w.seq = newSeqHash(w.data, w.key.Size)
	return w, nil
}

// OneLeaf reports whether the ingest holds at most one leaf: it keeps no
// journal (a resume fetches it whole again), so the caller need not compute
// leaf sums for MarkLeaf, and it may be committed with CommitBatch.
func (w *Ingest) OneLeaf() bool { return w.journal == nil && w.key.Size <= model.LeafSize }

// CommitBatch commits several fully written one-leaf ingests (OneLeaf) at
// once, with the same promises as Commit but one journal commit for the
// batch instead of two or three per file. The order, for every crash point:
//
//  1. each ingest is checked (every leaf written, size) and its SHA-256
//     computed and compared with expected[i]; a mismatch removes it;
//  2. every file of the batch is fsynced, all at once: the file system
//     joins them into one journal commit, and each fsync reports that
//     file's own writeback errors as Commit's would (not syncfs(2), which
//     would also flush every other writer's dirty data on a shared disk);
//  3. only then is each file renamed into blobs/ (chmod 0444 first), and
//  4. blobs/ is fsynced once for the batch, before any digest is returned.
//
// Until step 3 the files are ingest/<id>.one, which no tree links and
// which the next Open removes: a crash before the sync leaves no blob, and a
// file in blobs/ is always complete, durable and verified. The caller writes
// a manifest only after every digest of the model was returned (step 4).
// The ingests are closed whatever the outcome; errs[i] is ingest i's.
func (s *Store) CommitBatch(ws []*Ingest, expected []model.Digest) (digests []model.Digest, errs []error) {
	digests, errs = make([]model.Digest, len(ws)), make([]error, len(ws))
	var sealed []int
	for i, w := range ws {
		w.mu.Lock()
		d, err := w.seal(expected[i])
		if err != nil {
			errs[i] = err
			w.store.unlockIngest(w.key.id())
			w.mu.Unlock()
			continue
		}
		digests[i] = d
		sealed = append(sealed, i)
	}
	defer func() {
		for _, i := range sealed {
			ws[i].store.unlockIngest(ws[i].key.id())
			ws[i].mu.Unlock()
		}
	}()
	if len(sealed) == 0 {
		return digests, errs
	}
	// The fsyncs run at once: the file system joins them into one journal
	// commit (a syncfs would also flush every other writer's dirty data on
	// a shared node disk).
	syncErr := make([]error, len(ws))
	var wg sync.WaitGroup
	for _, i := range sealed {
		wg.Go(func() {
			syncErr[i] = ws[i].data.Sync()
			ws[i].data.Close()
		})
	}
	wg.Wait()
	dirs := map[string]model.Digest{} // algorithm → a digest renamed into its directory
	for _, i := range sealed {
		w := ws[i]
		if err := syncErr[i]; err != nil {
			errs[i] = fmt.Errorf("cache: fsync ingest: %w", err)
			continue
		}
		w.store.index.add(w.key, digests[i])
		moved, err := s.renameBlob(w.path, digests[i], w.key.Size, w.res)
		if err != nil {
			errs[i] = err
			continue
		}
		w.dropCommitted(moved)
		dirs[digests[i].Algorithm()] = digests[i]
	}
	// One fsync per blobs/ directory the batch renamed into.
	for _, d := range dirs {
		s.syncBlobDir(d)
	}
	return digests, errs
}

// seal checks a one-leaf ingest whose bytes are all written and computes
// its digest, the first step of CommitBatch; with w.mu held. On failure
// the ingest is closed (and removed if its bytes are wrong).
func (w *Ingest) seal(expected model.Digest) (model.Digest, error) {
	if w.done {
		return "", errors.New("cache: ingest already closed")
	}
	w.done = true
	if !w.OneLeaf() {
		w.data.Close()
		return "", fmt.Errorf("cache: commit %s: batch commit of an ingest of more than one leaf", w.key.Origin)
	}
	return w.verify(expected, false)
}

// verify checks that every leaf was written and that the file has the
// key's size, then computes the digest and compares it with expected (and a
// composite object's part sums); with w.mu held. With sync it fsyncs the
// data first (Commit; CommitBatch syncs a whole batch after). On failure the
// data file is closed, and removed when its bytes are wrong; on success it
// stays open.
func (w *Ingest) verify(expected model.Digest, sync bool) (model.Digest, error) {
	for i, ok := range w.held {
		if !ok {
			w.data.Close()
			return "", fmt.Errorf("cache: commit %s: leaf %d of %d not written", w.key.Origin, i, len(w.held))
		}
	}
	if sync {
		if err := w.data.Sync(); err != nil {
			w.data.Close()
			return "", fmt.Errorf("cache: fsync ingest: %w", err)
		}
	}
	corrupt := func(err error) (model.Digest, error) {
		w.data.Close()
		os.RemoveAll(w.dir)
		return "", err
	}
	st, err := w.data.Stat()
	if err != nil {
		w.data.Close()
		return "", fmt.Errorf("cache: stat ingest: %w", err)
	}
	if st.Size() != w.key.Size {
		return corrupt(fmt.Errorf("%w: %s is %d bytes, want %d", ErrCorrupt, w.key.Origin, st.Size(), w.key.Size))
	}
	// The hash reads what it has not reached yet (resumed leaves at the
	// end, bytes noted while another writer hashed) from the file: before
	// it is closed.
	digest, err := w.seq.finish()
	if err != nil {
		w.data.Close()
		return "", err
	}
	if expected != "" && digest != expected {
		return corrupt(fmt.Errorf("%w: %s has digest %s, want %s", ErrCorrupt, w.key.Origin, digest, expected))
	}
	if c := w.composite; c != nil && w.seq.composite() != c.Sum {
		return corrupt(fmt.Errorf("%w: %s does not match its composite SHA-256 of %d parts", ErrCorrupt, w.key.Origin, len(c.Parts)))
	}
	return digest, nil
}
