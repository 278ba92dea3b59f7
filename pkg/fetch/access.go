package fetch

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// AllowedIn says whether namespace may use the source ref names: a source
// with a namespaces list is for those namespaces only. Refs without a source
// are open to every caller.
func (f *Fetcher) AllowedIn(ref model.Ref, namespace string) error {
	src, ok := f.sources[ref.Source]
	if !ok || len(src.Namespaces) == 0 || slices.Contains(src.Namespaces, namespace) {
		return nil
	}
	who := fmt.Sprintf("namespace %q", namespace)
	if namespace == "" {
		who = "a volume whose pod namespace is unknown (is podInfoOnMount set on the CSIDriver?)"
	}
	msg := fmt.Sprintf("source %q may not be used by %s", ref.Source, who)
	if ref.Scheme != "" {
		return &source.Error{Class: ErrAccessDenied, Where: ref.Location().String(), Op: "authorize", Msg: msg}
	}
	return &Error{Class: ErrAccessDenied, Bucket: ref.Bucket, Key: ref.Prefix, Msg: msg}
}

// accessHeads is how many HEADs CheckAccess sends at once.
const accessHeads = 8

// CheckAccess asks S3 whether creds (nil: the source's own credentials)
// may read the whole model at ref: the full listing, as
// a download makes it, then a HEAD of every object, which needs the same
// permission as its GET (s3:ListBucket, s3:GetObject). Every object, not
// one: a bucket policy may deny some keys, and a cache hit must not hand a
// volume a file its keys could not have fetched. The first denial (or
// missing object) is the answer.
func (f *Fetcher) CheckAccess(ctx context.Context, ref model.Ref, creds *model.Credentials) error {
	switch ref.Scheme {
	case model.SchemeHF:
		return f.checkHubAccess(ctx, ref, creds)
	case model.SchemeOCI:
		return f.checkOCIAccess(ctx, ref, creds)
	case model.SchemeAzure:
		return f.checkAzureAccess(ctx, ref, creds)
	case model.SchemeGCS:
		return f.checkGCSAccess(ctx, ref, creds)
	}
	t, err := f.target(ctx, ref, creds)
	if err != nil {
		return err
	}
	files, _, err := f.list(ctx, t, ref)
	if err != nil {
		return err
	}
	return each(ctx, accessHeads, len(files), func(ctx context.Context, i int) error {
		key := objectKey(ref.Prefix, files[i].Path)
		return f.retry(ctx, s3Origin{t: t, bucket: ref.Bucket}, key, func() error {
			_, err := t.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(key)})
			return err
		}, nil, nil)
	})
}

// objectKey is the key of the model file at path under prefix.
func objectKey(prefix, path string) string {
	if prefix == "" {
		return path
	}
	return prefix + "/" + path
}

// each calls fn for 0..n-1 on up to workers goroutines and returns the
// first error, after which the others are cancelled and no more start.
func each(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idx := make(chan int)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range min(workers, n) {
		wg.Go(func() {
			for i := range idx {
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
				}
			}
		})
	}
send:
	for i := range n {
		select {
		case idx <- i:
		case <-ctx.Done():
			break send
		}
	}
	close(idx)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// volumeProvider is the credentials provider for a volume's own keys.
func volumeProvider(c model.Credentials) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
}
