package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelcache/modelcache/pkg/model"
)

// Credentials are keys a volume brings (a CSI nodePublishSecretRef). With
// them the fetcher talks to the ref's endpoint as the volume's owner instead
// of with the agent's own credentials. Like Source, they never print.
type Credentials struct {
	AccessKeyID     string `json:"accessKeyID"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
}

// Validate refuses half a key pair.
func (c Credentials) Validate() error {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return errors.New("credentials need both an access key ID and a secret access key")
	}
	return nil
}

// String shows the key ID's first characters only.
func (c Credentials) String() string {
	id := c.AccessKeyID
	if len(id) > 4 {
		id = id[:4] + "…"
	}
	return fmt.Sprintf("{accessKeyID: %s, secret: redacted}", id)
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return "fetch.Credentials" + c.String() }

// LogValue is what slog prints.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

type credentialsKey struct{}

// WithCredentials returns a context under which List, Fetch and CheckAccess
// use c instead of the source's credentials (the endpoint stays the ref's).
// A context carries them because they belong to one caller's request, not to
// the ref, which is printed and stored.
func WithCredentials(ctx context.Context, c Credentials) context.Context {
	return context.WithValue(ctx, credentialsKey{}, c)
}

func credentialsFrom(ctx context.Context) (Credentials, bool) {
	c, ok := ctx.Value(credentialsKey{}).(Credentials)
	return c, ok
}

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
	return &Error{Class: ErrAccessDenied, Bucket: ref.Bucket, Key: ref.Prefix,
		Msg: fmt.Sprintf("source %q may not be used by %s", ref.Source, who)}
}

// CheckAccess asks S3 whether the credentials in effect (the context's, or
// else the source's) may read the model at ref: a listing of one key under
// its prefix, then a HEAD of that key, which need the same permissions as a
// download (s3:ListBucket, s3:GetObject). It is what keeps a cache hit from
// serving a model to a volume that could not have fetched it.
func (f *Fetcher) CheckAccess(ctx context.Context, ref model.Ref) error {
	t, err := f.target(ctx, ref)
	if err != nil {
		return err
	}
	prefix := ref.Prefix
	if prefix != "" {
		prefix += "/"
	}
	var out *s3.ListObjectsV2Output
	err = f.retry(ctx, t, ref.Bucket, ref.Prefix, func() error {
		var err error
		out, err = t.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
			Bucket: aws.String(ref.Bucket), Prefix: aws.String(prefix), MaxKeys: aws.Int32(1)})
		return err
	}, nil, nil)
	if err != nil {
		return err
	}
	if len(out.Contents) == 0 {
		return &Error{Class: ErrNotFound, Bucket: ref.Bucket, Key: ref.Prefix,
			Msg: fmt.Sprintf("prefix %q is empty or missing in bucket %q at %s", ref.Prefix, ref.Bucket, t.endpoint)}
	}
	key := aws.ToString(out.Contents[0].Key)
	return f.retry(ctx, t, ref.Bucket, key, func() error {
		_, err := t.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(ref.Bucket), Key: aws.String(key)})
		return err
	}, nil, nil)
}

// volumeProvider is the credentials provider for a volume's own keys.
func volumeProvider(c Credentials) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
}
