package az

import (
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/modelcache/modelcache/pkg/model"
	"github.com/modelcache/modelcache/pkg/source"
)

// List names every blob under the prefix, with its size and ETag, in the
// service's (lexicographic) order. Directory markers (a name ending in
// '/', or a directory of an account with a hierarchical namespace) are
// skipped; a name that would leave the model directory fails the whole
// listing. Nothing under the prefix is source.ErrNotFound.
func (m *Model) List(ctx context.Context) (source.Listing, error) {
	where := m.Where()
	if m.err != nil {
		return source.Listing{}, fmt.Errorf("az: list %s: %w", where, m.err)
	}
	prefix := m.prefix
	if prefix != "" {
		prefix += "/"
	}
	pageSize := m.c.o.PageSize
	pager := m.cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix, MaxResults: &pageSize,
		Include: container.ListBlobsInclude{Metadata: true}})
	var files []model.File
	seen := map[string]bool{}
	marker := ""
	for pages := 0; pager.More(); pages++ {
		if pages == m.c.o.MaxPages {
			return source.Listing{}, &source.Error{Class: source.ErrLimit, Where: where, Op: "list",
				Msg: fmt.Sprintf("the listing passed %d pages (--max-list-pages) with %d files and goes on", m.c.o.MaxPages, len(files))}
		}
		page, err := pager.NextPage(ctx)
		if err != nil {
			return source.Listing{}, m.c.classify(ctx, where, "list", err)
		}
		if page.Segment != nil {
			for _, it := range page.Segment.BlobItems {
				f, ok, err := fileOf(m.prefix, it)
				if err != nil {
					return source.Listing{}, &source.Error{Class: source.ErrProtocol, Where: where, Op: "list", Msg: "refusing the model", Err: err}
				}
				if !ok {
					continue
				}
				if seen[f.Path] {
					return source.Listing{}, source.ProtocolError(where, "list", "%q is listed twice", f.Path)
				}
				if len(files) == m.c.o.MaxFiles {
					return source.Listing{}, &source.Error{Class: source.ErrLimit, Where: where, Op: "list",
						Msg: fmt.Sprintf("more than %d files (--max-files)", m.c.o.MaxFiles)}
				}
				seen[f.Path] = true
				files = append(files, f)
			}
		}
		next := ""
		if page.NextMarker != nil {
			next = *page.NextMarker
		}
		if next != "" && next == marker {
			// A server that says "more" with the same marker would loop forever.
			return source.Listing{}, source.ProtocolError(where, "list", "the listing gives the same continuation marker twice")
		}
		marker = next
	}
	if len(files) == 0 {
		return source.Listing{}, &source.Error{Class: source.ErrNotFound, Where: where, Op: "list",
			Msg: fmt.Sprintf("no blob under prefix %q in container %q at %s", m.prefix, m.container, m.c.service)}
	}
	return source.Listing{Files: files}, nil
}

// fileOf checks one listed blob; ok is false for one that is no file of
// the model (a directory marker, a snapshot, a deleted blob).
func fileOf(prefix string, it *container.BlobItem) (model.File, bool, error) {
	if it == nil || it.Name == nil || it.Properties == nil {
		return model.File{}, false, fmt.Errorf("a blob without a name or properties")
	}
	if (it.Deleted != nil && *it.Deleted) || (it.Snapshot != nil && *it.Snapshot != "") {
		return model.File{}, false, nil
	}
	if isDir(it) {
		return model.File{}, false, nil
	}
	rel, skip, err := model.RelPath(prefix, *it.Name)
	if err != nil || skip {
		return model.File{}, false, err
	}
	p := it.Properties
	if p.ContentLength == nil || *p.ContentLength < 0 || *p.ContentLength > model.MaxFileSize {
		n := int64(-1)
		if p.ContentLength != nil {
			n = *p.ContentLength
		}
		return model.File{}, false, fmt.Errorf("%q: a size of %d bytes", source.Trim(rel), n)
	}
	etag := ""
	if p.ETag != nil {
		etag = strings.Trim(string(*p.ETag), `"`)
	}
	if etag == "" || len(etag) > 256 || strings.ContainsAny(etag, "\"\r\n\x00") {
		return model.File{}, false, fmt.Errorf("%q: ETag %q", source.Trim(rel), source.Trim(etag))
	}
	return model.File{Path: rel, Size: *p.ContentLength, ETag: etag}, true, nil
}

// isDir: a directory of an account with a hierarchical namespace (Data
// Lake Storage Gen2) is listed as an empty blob marked hdi_isfolder.
func isDir(it *container.BlobItem) bool {
	if it.Properties.ResourceType != nil && *it.Properties.ResourceType == "directory" {
		return true
	}
	for k, v := range it.Metadata {
		if strings.EqualFold(k, "hdi_isfolder") && v != nil && strings.EqualFold(*v, "true") {
			return true
		}
	}
	return false
}
