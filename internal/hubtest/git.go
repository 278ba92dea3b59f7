package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The object ids the fixture serves are real git object ids of the commit
// it describes, so a client can check a regular file's ETag (the git blob
// sha1) as it would against the Hub, and directories have the git tree id
// the Hub lists as their oid. Nothing else about git is modelled: there is
// no repository on disk and no history beyond each commit's parent.

// emptyBlobOid is the git blob id of an empty file.
const emptyBlobOid = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"

// commitEpoch is the date of a repository's first commit; each later
// commit is a minute after its parent, so dates are deterministic too.
var commitEpoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// entry is a file or directory of a commit, with everything a listing or a
// download needs precomputed.
type entry struct {
	path   string
	dir    bool
	oid    string // git blob id (of the LFS pointer, for LFS files) or tree id
	size   int64  // content size; 0 for directories
	lfs    bool
	sha256 string // hex sha256 of data; empty for directories
	// pointerSize is the size of the LFS pointer file git stores.
	pointerSize int
	data        []byte
}

// commit is immutable once made, so handlers use it without the lock.
type commit struct {
	sha, parent, title string
	date               time.Time
	depth              int // 1 for a first commit
	entries            map[string]*entry
	sorted             []*entry // files and directories, by path
}

// gitObject returns the hex git id of an object of kind with body.
func gitObject(kind string, body []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "%s %d\x00", kind, len(body))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// lfsPointer is the file git stores for an LFS file (the git-lfs spec v1).
func lfsPointer(sha256hex string, size int64) []byte {
	return fmt.Appendf(nil, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", sha256hex, size)
}

func fileEntry(path string, f File) *entry {
	sum := sha256.Sum256(f.Data)
	e := &entry{path: path, size: int64(len(f.Data)), lfs: f.LFS, sha256: hex.EncodeToString(sum[:]), data: f.Data}
	if f.LFS {
		ptr := lfsPointer(e.sha256, e.size)
		e.pointerSize = len(ptr)
		e.oid = gitObject("blob", ptr)
	} else {
		e.oid = gitObject("blob", f.Data)
	}
	return e
}

// parentDir is the directory holding path: "" for the root.
func parentDir(path string) string {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return ""
	}
	return path[:i]
}

// buildCommit makes the commit of files on top of parent (nil for a first
// commit). Paths are kept verbatim, so a test may commit names no git
// server would accept ("../x", "/abs", "a//b") to see that a client
// refuses them; the only error is a path that is both a file and a
// directory, which no listing could describe.
func buildCommit(repo string, parent *commit, files map[string]File) (*commit, error) {
	c := &commit{entries: map[string]*entry{}, depth: 1}
	if parent != nil {
		c.parent = parent.sha
		c.depth = parent.depth + 1
	}
	for p, f := range files {
		if p == "" {
			return nil, fmt.Errorf("hubtest: empty file path in a commit of %s", repo)
		}
		c.entries[p] = fileEntry(p, f)
	}
	for p := range files {
		for d := parentDir(p); d != ""; d = parentDir(d) {
			if e := c.entries[d]; e != nil {
				if !e.dir {
					return nil, fmt.Errorf("hubtest: %q is both a file and the directory of %q in %s", d, p, repo)
				}
				break // its parents are in already
			}
			c.entries[d] = &entry{path: d, dir: true}
		}
	}
	for _, e := range c.entries {
		c.sorted = append(c.sorted, e)
	}
	slices.SortFunc(c.sorted, func(a, b *entry) int { return strings.Compare(a.path, b.path) })

	root := treeOids(c.sorted)
	c.date = commitEpoch.Add(time.Duration(c.depth-1) * time.Minute)
	c.title = fmt.Sprintf("hubtest commit %d of %s", c.depth, repo)
	var body strings.Builder
	fmt.Fprintf(&body, "tree %s\n", root)
	if c.parent != "" {
		fmt.Fprintf(&body, "parent %s\n", c.parent)
	}
	who := fmt.Sprintf("hubtest <hubtest@modelcache.invalid> %d +0000", c.date.Unix())
	fmt.Fprintf(&body, "author %s\ncommitter %s\n\n%s\n", who, who, c.title)
	c.sha = gitObject("commit", []byte(body.String()))
	return c, nil
}

// treeOids sets the oid of every directory in sorted (sorted by path, so a
// directory's contents follow it at greater indexes) and returns the root
// tree's id.
func treeOids(sorted []*entry) string {
	children := map[string][]*entry{}
	for _, e := range sorted {
		d := parentDir(e.path)
		children[d] = append(children[d], e)
	}
	var tree func(dir string) string
	tree = func(dir string) string {
		kids := children[dir]
		// git orders a tree's entries by name, a directory's name taken as
		// ending in "/".
		key := func(e *entry) string {
			name := baseName(e.path)
			if e.dir {
				return name + "/"
			}
			return name
		}
		slices.SortFunc(kids, func(a, b *entry) int { return strings.Compare(key(a), key(b)) })
		var body []byte
		for _, e := range kids {
			mode := "100644"
			if e.dir {
				mode = "40000"
				e.oid = tree(e.path)
			}
			raw, _ := hex.DecodeString(e.oid)
			body = fmt.Appendf(body, "%s %s\x00", mode, baseName(e.path))
			body = append(body, raw...)
		}
		return gitObject("tree", body)
	}
	return tree("")
}

// baseName is the last element of a repository path ("" for "a/").
func baseName(path string) string {
	return path[strings.LastIndexByte(path, '/')+1:]
}
