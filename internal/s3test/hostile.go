package s3test

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Hostile is an in-process S3 server that says what the test tells it to,
// for security tests: listings whose ETags and sizes are not those of the
// bytes served, listings that never end, keys no real server would store.
// It speaks just enough path-style S3 for aws-sdk-go-v2 (ListObjectsV2,
// HeadObject, GetObject with Range and If-Match) and answers anything else
// 501 NotImplemented. It accepts any signature, but records who signed each
// request (Seen), so a test can tell which tenant's credentials reached it.
// Run two (a victim and an attacker) to test isolation between tenants.
type Hostile struct {
	// Endpoint is http://127.0.0.1:PORT, for BaseEndpoint with UsePathStyle.
	Endpoint string

	mu       sync.Mutex
	buckets  map[string]*hostileBucket
	seen     []Request
	pageSize int
	pages    int64 // ListObjectsV2 pages served
	requests int64 // for x-amz-request-id
}

// Listing is one object as the hostile server describes it. The listing
// claims ETag and Size; HEAD and GET answer with the same claims (the ETag
// header, Content-Length of HEAD, the total of Content-Range) so the lie is
// consistent, and GET serves Body. Only the bytes can expose it.
type Listing struct {
	ETag string // without quotes; listed, sent on HEAD and GET, matched against If-Match
	Size int64  // listed as decimal text: 2^63-1 and negative sizes are fine
	Body []byte // what GET serves; a Range selects bytes of Body

	// HeadSize is the Content-Length of a HEAD answer; 0 means Size. A
	// negative value cannot be sent (net/http refuses it), so len(Body) is.
	HeadSize int64
	// ServedETag, if set, replaces ETag on HEAD and GET and for If-Match:
	// an object that changed after it was listed.
	ServedETag string
	// ChecksumSHA256 is the base64 SHA-256 the server claims for the object
	// (what S3 keeps for an object uploaded with a checksum): listed as
	// ChecksumAlgorithm SHA256 and sent as x-amz-checksum-sha256 on a HEAD
	// or whole GET with x-amz-checksum-mode: ENABLED. ChecksumType is
	// FULL_OBJECT (default) or COMPOSITE (a multipart upload's).
	ChecksumSHA256, ChecksumType string
	// PartSizes are the parts of a multipart upload, for GetObjectAttributes
	// (ObjectParts), which serves them 1,000 a page or x-amz-max-parts.
	PartSizes []int64
	// DenyTo lists access key IDs that get 403 AccessDenied on HEAD and GET
	// of this object (a bucket policy that denies one key): "" is unsigned.
	// Listings still show it, as S3 does when ListBucket is allowed.
	DenyTo []string
	// RangeTotal is the TOTAL of "Content-Range: bytes A-B/TOTAL"; 0 means
	// Size. Set it to len(Body) for a server that is honest there.
	RangeTotal int64
}

// Request is what the server recorded of one request.
type Request struct {
	Method, Bucket, Key string
	// AccessKeyID is the AKID of "Credential=AKID/date/region/s3/aws4_request"
	// in Authorization (or X-Amz-Credential of a presigned URL); "" if unsigned.
	AccessKeyID string
	// SessionToken is X-Amz-Security-Token (header or query); "" for
	// long-term credentials.
	SessionToken string
	Range        string // the Range header, as sent
	IfMatch      string // the If-Match header, as sent
}

type hostileBucket struct {
	objects map[string]Listing
	endless bool
}

// Fixed, so listings and headers are the same from run to run.
var hostileModTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// StartHostile runs a Hostile server on a loopback port until the test ends.
func StartHostile(t testing.TB) *Hostile {
	t.Helper()
	h := &Hostile{buckets: map[string]*hostileBucket{}, pageSize: 1000}
	ts := httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(ts.Close)
	h.Endpoint = ts.URL
	return h
}

// Put stores an honest object: listed with the hex MD5 of body as its ETag
// (as S3 does for single-part uploads) and len(body) as its size.
func (h *Hostile) Put(bucket, key string, body []byte) {
	sum := md5.Sum(body)
	h.Lie(bucket, key, Listing{ETag: hex.EncodeToString(sum[:]), Size: int64(len(body)), Body: body})
}

// Lie stores an object described by l, replacing any under bucket/key. It
// creates the bucket, as Put does. l.Body is served as it is, not copied:
// do not change it afterwards.
func (h *Hostile) Lie(bucket, key string, l Listing) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bucket(bucket).objects[key] = l
}

// EndlessPages makes every ListObjectsV2 of bucket answer IsTruncated=true
// with a continuation token never given before and a page of keys never
// listed before (under the requested prefix), whatever token it was sent,
// so a client that follows tokens lists forever. Objects put in the bucket
// are not listed; every key not put is an empty object, so the listed keys
// can be fetched too.
func (h *Hostile) EndlessPages(bucket string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bucket(bucket).endless = true
}

// PageSize sets the number of keys per ListObjectsV2 page (default 1000,
// as S3; at least 1); a smaller max-keys in the request wins.
func (h *Hostile) PageSize(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pageSize = max(n, 1)
}

// Pages is the number of ListObjectsV2 pages served, of any bucket.
func (h *Hostile) Pages() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pages
}

// Seen returns every request received so far, oldest first, including those
// answered with an error.
func (h *Hostile) Seen() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

// bucket returns the named bucket, creating it; h.mu must be held.
func (h *Hostile) bucket(name string) *hostileBucket {
	b := h.buckets[name]
	if b == nil {
		b = &hostileBucket{objects: map[string]Listing{}}
		h.buckets[name] = b
	}
	return b
}

func (h *Hostile) serve(w http.ResponseWriter, r *http.Request) {
	// Path-style: /BUCKET/KEY. r.URL.Path is decoded and, with no ServeMux,
	// not cleaned, so keys such as "a/../../b" arrive as sent.
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	q := r.URL.Query()
	req := Request{Method: r.Method, Bucket: bucket, Key: key, Range: r.Header.Get("Range"),
		IfMatch: r.Header.Get("If-Match"), SessionToken: r.Header.Get("X-Amz-Security-Token")}
	cred := q.Get("X-Amz-Credential")
	if _, c, ok := strings.Cut(r.Header.Get("Authorization"), "Credential="); ok {
		cred = c
	}
	req.AccessKeyID, _, _ = strings.Cut(cred, "/")
	if req.SessionToken == "" {
		req.SessionToken = q.Get("X-Amz-Security-Token")
	}

	h.mu.Lock()
	h.seen = append(h.seen, req)
	h.requests++
	w.Header().Set("x-amz-request-id", fmt.Sprintf("hostile-%d", h.requests))
	b := h.buckets[bucket] // never removed, so safe to use unlocked
	h.mu.Unlock()

	switch {
	case bucket == "" || !plainQuery(q, key == ""):
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "the hostile server does not do this")
	case b == nil:
		h.fail(w, r, http.StatusNotFound, "NoSuchBucket", "no bucket "+bucket)
	case key == "" && r.Method == http.MethodGet && q.Get("list-type") == "2":
		h.list(w, r, bucket, b)
	case key != "" && r.Method == http.MethodGet && q.Has("attributes"):
		h.attributes(w, r, b, key)
	case key != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.object(w, r, b, key, req.AccessKeyID)
	default:
		h.fail(w, r, http.StatusNotImplemented, "NotImplemented", "the hostile server does not do this")
	}
}

// plainQuery reports whether q has only parameters of the operations served:
// ?acl, ?tagging, ?uploads, ?versionId and the like are other operations.
func plainQuery(q url.Values, bucketLevel bool) bool {
	for k := range q {
		switch {
		case k == "x-id", strings.HasPrefix(k, "X-Amz-"), strings.HasPrefix(k, "response-"), !bucketLevel && k == "attributes":
		case bucketLevel && slices.Contains([]string{"list-type", "prefix", "continuation-token",
			"max-keys", "start-after", "encoding-type", "fetch-owner"}, k):
		default:
			return false
		}
	}
	return true
}

// fail answers an S3 error document (S3 sends none to HEAD).
func (h *Hostile) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	type errorDoc struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		Resource  string
		RequestID string `xml:"RequestId"`
	}
	out, _ := xml.Marshal(errorDoc{Code: code, Message: msg, Resource: r.URL.Path,
		RequestID: w.Header().Get("x-amz-request-id")})
	w.Write([]byte(xml.Header))
	w.Write(out)
}
