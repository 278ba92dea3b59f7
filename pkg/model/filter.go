package model

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Limits on patterns: they come from volume attributes and annotations,
// which any tenant writes.
const (
	MaxPatterns      = 64
	MaxPatternLength = 256
)

// ErrInvalidPattern marks an include or exclude pattern that is refused.
var ErrInvalidPattern = errors.New("model: invalid pattern")

// Filter selects a model's files by include and exclude patterns, matched
// as huggingface_hub matches allow_patterns and ignore_patterns, so a
// pattern copied from a snapshot_download call selects the same files:
// fnmatch on the whole path, case-sensitive; "*" and "?" match any
// characters, "/" included ("*.safetensors" finds weights at any depth);
// [seq] and [!seq] are classes; a pattern ending in "/" matches everything
// under that folder ("original/"). A path is kept when it matches an
// include pattern (or there are none) and no exclude pattern: exclude wins.
// The zero Filter keeps everything.
type Filter struct {
	include, exclude []*regexp.Regexp
	text             []string // the patterns as given, for String
}

// NewFilter compiles the patterns.
func NewFilter(include, exclude []string) (Filter, error) {
	var f Filter
	if n := len(include) + len(exclude); n > MaxPatterns {
		return Filter{}, fmt.Errorf("%w: %d patterns, at most %d", ErrInvalidPattern, n, MaxPatterns)
	}
	var err error
	if f.include, err = compileAll(include); err != nil {
		return Filter{}, err
	}
	if f.exclude, err = compileAll(exclude); err != nil {
		return Filter{}, err
	}
	for _, p := range include {
		f.text = append(f.text, "include "+p)
	}
	for _, p := range exclude {
		f.text = append(f.text, "exclude "+p)
	}
	return f, nil
}

// Keep says whether path is selected.
func (f Filter) Keep(path string) bool {
	if len(f.include) > 0 && !matchAny(f.include, path) {
		return false
	}
	return !matchAny(f.exclude, path)
}

// Empty says whether the filter keeps everything.
func (f Filter) Empty() bool { return len(f.include) == 0 && len(f.exclude) == 0 }

func (f Filter) String() string { return strings.Join(f.text, ", ") }

func matchAny(res []*regexp.Regexp, path string) bool {
	for _, re := range res {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

func compileAll(patterns []string) ([]*regexp.Regexp, error) {
	var out []*regexp.Regexp
	for _, p := range patterns {
		re, err := compile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, re)
	}
	return out, nil
}

// compile translates one fnmatch pattern to an anchored regexp, as
// Python's fnmatch.translate does. Go's path.Match is not used: its "*"
// stops at "/" and "\" escapes, so it would select other files.
func compile(p string) (*regexp.Regexp, error) {
	switch {
	case p == "":
		return nil, fmt.Errorf("%w: empty", ErrInvalidPattern)
	case len(p) > MaxPatternLength:
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidPattern, len(p), MaxPatternLength)
	case strings.ContainsRune(p, 0):
		return nil, fmt.Errorf("%w %q: contains a NUL byte", ErrInvalidPattern, p)
	}
	if strings.HasSuffix(p, "/") {
		p += "*"
	}
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '[':
			class, n := translateClass(p[i:])
			if n == 0 { // no closing "]": a literal "["
				b.WriteString(`\[`)
				continue
			}
			b.WriteString(class)
			i += n - 1
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString(`)$`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidPattern, p, err)
	}
	return re, nil
}

// translateClass translates the class at the start of p ("[...]") and
// returns it with the number of bytes it took, 0 if it is not closed. As in
// fnmatch, a "]" right after "[" or "[!" is a member, "!" negates and "^"
// is literal.
func translateClass(p string) (string, int) {
	j := 1
	if j < len(p) && p[j] == '!' {
		j++
	}
	if j < len(p) && p[j] == ']' {
		j++
	}
	for j < len(p) && p[j] != ']' {
		j++
	}
	if j >= len(p) {
		return "", 0
	}
	body := p[1:j]
	var b strings.Builder
	b.WriteByte('[')
	if strings.HasPrefix(body, "!") {
		b.WriteByte('^')
		body = body[1:]
	}
	for k := 0; k < len(body); k++ {
		switch c := body[k]; c {
		case '\\', '[', ']', '^':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte(']')
	return b.String(), j + 1
}
