package model

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrUnsafeKey marks an object key that would land outside the model directory.
var ErrUnsafeKey = errors.New("model: unsafe object key")

// RelPath maps an object key under prefix to the file path it takes inside the
// model directory. skip is true for "directory marker" keys (KEY/ with no
// name), which consoles create and which hold no file. A key that is absolute,
// holds "." or ".." segments, empty segments, NUL or invalid UTF-8 is refused
// with an error naming it: such a key is either hostile or ambiguous, and
// guessing what it meant is how files end up outside the directory.
func RelPath(prefix, key string) (rel string, skip bool, err error) {
	p := prefix
	if p != "" {
		p += "/"
	}
	rel, ok := strings.CutPrefix(key, p)
	if !ok {
		return "", false, fmt.Errorf("%w %q: not under prefix %q", ErrUnsafeKey, key, prefix)
	}
	if rel == "" {
		return "", true, nil
	}
	dir, marker := strings.CutSuffix(rel, "/")
	if err := checkRelPath(dir); err != nil {
		return "", false, fmt.Errorf("%w %q: %v", ErrUnsafeKey, key, err)
	}
	if marker {
		return "", true, nil
	}
	return rel, false, nil
}

// checkRelPath accepts only clean relative slash-separated paths.
func checkRelPath(p string) error {
	switch {
	case p == "":
		return errors.New("is empty")
	case strings.ContainsRune(p, 0):
		return errors.New("contains a NUL byte")
	case !utf8.ValidString(p):
		return errors.New("is not valid UTF-8")
	case strings.HasPrefix(p, "/"):
		return errors.New("is absolute")
	case len(p) > 4096:
		return errors.New("is longer than 4096 bytes")
	}
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "":
			return errors.New("has an empty path segment")
		case seg == "." || seg == "..":
			return fmt.Errorf("has a %q segment", seg)
		case len(seg) > 255:
			return errors.New("has a segment longer than 255 bytes")
		}
	}
	return nil
}
