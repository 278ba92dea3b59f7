package s3test

// The answers of the Hostile server: listings and objects.

import (
	"cmp"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// emptyETag is the MD5 of no bytes: the ETag of an empty object.
const emptyETag = "d41d8cd98f00b204e9800998ecf8427e"

// listResult is a ListObjectsV2 answer, as aws-sdk-go-v2 parses it.
type listResult struct {
	XMLName               xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
	Name                  string
	Prefix                string
	StartAfter            string `xml:",omitempty"`
	ContinuationToken     string `xml:",omitempty"`
	NextContinuationToken string `xml:",omitempty"`
	KeyCount              int
	MaxKeys               int
	EncodingType          string `xml:",omitempty"`
	IsTruncated           bool
	Contents              []listEntry
}

type listEntry struct {
	Key               string
	LastModified      string
	ETag              string // in quotes, as S3 lists it
	ChecksumAlgorithm string `xml:",omitempty"`
	ChecksumType      string `xml:",omitempty"`
	Size              int64
	StorageClass      string
}

func (h *Hostile) list(w http.ResponseWriter, r *http.Request, name string, b *hostileBucket) {
	q := r.URL.Query()
	res := listResult{Name: name, Prefix: q.Get("prefix"), StartAfter: q.Get("start-after"),
		ContinuationToken: q.Get("continuation-token"), MaxKeys: 1000}
	if s := q.Get("max-keys"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			h.fail(w, r, http.StatusBadRequest, "InvalidArgument", "bad max-keys "+s)
			return
		}
		res.MaxKeys = n
	}
	h.mu.Lock()
	endless := b.endless
	h.mu.Unlock()
	// Normal tokens are the last key listed, opaque to the client as S3's are.
	after := res.StartAfter
	if tok := res.ContinuationToken; tok != "" && !endless {
		k, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
			return
		}
		after = string(k)
	}
	entry := func(key string, l Listing) listEntry {
		e := listEntry{Key: key, LastModified: hostileModTime.Format("2006-01-02T15:04:05.000Z"),
			ETag: `"` + l.ETag + `"`, Size: l.Size, StorageClass: "STANDARD"}
		if l.ChecksumSHA256 != "" {
			e.ChecksumAlgorithm, e.ChecksumType = "SHA256", cmp.Or(l.ChecksumType, "FULL_OBJECT")
		}
		return e
	}

	h.mu.Lock()
	h.pages++
	per := min(h.pageSize, res.MaxKeys)
	if endless {
		// h.pages numbers the page, so keys and token are new every time.
		for i := range per {
			key := fmt.Sprintf("%sendless-%d-%d", res.Prefix, h.pages, i)
			res.Contents = append(res.Contents, entry(key, Listing{ETag: emptyETag}))
		}
		res.IsTruncated, res.NextContinuationToken = true, fmt.Sprintf("endless-%d", h.pages)
	} else {
		var keys []string
		for k := range b.objects {
			if strings.HasPrefix(k, res.Prefix) && k > after {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		if per > 0 && len(keys) > per {
			keys = keys[:per]
			res.IsTruncated = true
			res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(keys[per-1]))
		}
		for _, k := range keys[:min(per, len(keys))] {
			res.Contents = append(res.Contents, entry(k, b.objects[k]))
		}
	}
	h.mu.Unlock()

	res.KeyCount = len(res.Contents)
	if q.Get("encoding-type") == "url" {
		res.EncodingType = "url"
		res.Prefix, res.StartAfter = s3URLEncode(res.Prefix), s3URLEncode(res.StartAfter)
		for i := range res.Contents {
			res.Contents[i].Key = s3URLEncode(res.Contents[i].Key)
		}
	}
	h.writeXML(w, r, res)
}

// s3URLEncode encodes a key as S3 does for encoding-type=url.
func s3URLEncode(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "%2F", "/") }

func (h *Hostile) object(w http.ResponseWriter, r *http.Request, b *hostileBucket, key, akid string) {
	h.mu.Lock()
	l, ok := b.objects[key]
	endless := b.endless
	h.mu.Unlock()
	if !ok && endless {
		l, ok = Listing{ETag: emptyETag}, true
	}
	if !ok {
		h.fail(w, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	if slices.Contains(l.DenyTo, akid) {
		h.fail(w, r, http.StatusForbidden, "AccessDenied", "Access Denied")
		return
	}
	etag := cmp.Or(l.ServedETag, l.ETag)
	if im := r.Header.Get("If-Match"); im != "" && !etagMatch(im, etag) {
		h.fail(w, r, http.StatusPreconditionFailed, "PreconditionFailed",
			"At least one of the pre-conditions you specified did not hold")
		return
	}
	n := int64(len(l.Body))
	total := cmp.Or(l.RangeTotal, l.Size)
	from, to, ranged := byteRange(r.Header.Get("Range"), n)
	if r.Method == http.MethodGet && ranged && from > to {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", total))
		h.fail(w, r, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
		return
	}
	hd := w.Header()
	hd.Set("ETag", `"`+etag+`"`)
	hd.Set("Last-Modified", hostileModTime.Format(http.TimeFormat))
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Content-Type", "application/octet-stream")
	if l.ChecksumSHA256 != "" && r.Header.Get("X-Amz-Checksum-Mode") == "ENABLED" && !ranged {
		hd.Set("X-Amz-Checksum-Sha256", l.ChecksumSHA256)
		hd.Set("X-Amz-Checksum-Type", cmp.Or(l.ChecksumType, "FULL_OBJECT"))
	}
	if r.Method == http.MethodHead {
		size := cmp.Or(l.HeadSize, l.Size)
		if size < 0 {
			size = n
		}
		hd.Set("Content-Length", strconv.FormatInt(size, 10))
		return
	}
	status := http.StatusOK
	if ranged {
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, total))
		status = http.StatusPartialContent
	} else {
		from, to = 0, n-1
	}
	hd.Set("Content-Length", strconv.FormatInt(to-from+1, 10))
	w.WriteHeader(status)
	w.Write(l.Body[from : to+1])
}

// etagMatch reports whether an If-Match header ("*" or a list of quoted
// ETags) matches etag.
func etagMatch(header, etag string) bool {
	for _, e := range strings.Split(header, ",") {
		if e = strings.TrimSpace(e); e == "*" || strings.Trim(e, `"`) == etag {
			return true
		}
	}
	return false
}

// byteRange reads "bytes=A-B", "bytes=A-" or "bytes=-N" against n bytes.
// ok is false for a header S3 ignores (it serves the whole object: no
// header, bad syntax, several ranges); from > to if no byte is in range.
func byteRange(header string, n int64) (from, to int64, ok bool) {
	spec, found := strings.CutPrefix(header, "bytes=")
	a, b, found2 := strings.Cut(spec, "-")
	if !found || !found2 || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	if a == "" { // the last N bytes
		k, err := strconv.ParseInt(b, 10, 64)
		if err != nil || k < 0 {
			return 0, 0, false
		}
		return max(0, n-k), n - 1, true // k = 0 or n = 0: from > to
	}
	from, err := strconv.ParseInt(a, 10, 64)
	if err != nil || from < 0 {
		return 0, 0, false
	}
	to = n - 1
	if b != "" {
		t, err := strconv.ParseInt(b, 10, 64)
		if err != nil || t < from {
			return 0, 0, false
		}
		to = min(t, n-1)
	}
	return from, to, true // from >= n: from > to
}
