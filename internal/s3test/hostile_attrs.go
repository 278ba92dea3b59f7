package s3test

import (
	"cmp"
	"encoding/xml"
	"net/http"
	"strconv"
	"strings"
)

// attributesResult is a GetObjectAttributes answer with the object's
// checksum and parts, as aws-sdk-go-v2 parses it.
type attributesResult struct {
	XMLName     xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ GetObjectAttributesResponse"`
	ETag        string
	Checksum    *attributesChecksum `xml:",omitempty"`
	ObjectParts *attributesParts    `xml:",omitempty"`
	ObjectSize  int64
}

type attributesChecksum struct {
	ChecksumSHA256 string
	ChecksumType   string
}

type attributesParts struct {
	TotalPartsCount      int
	PartNumberMarker     int
	NextPartNumberMarker int
	MaxParts             int
	IsTruncated          bool
	Part                 []attributesPart
}

type attributesPart struct {
	PartNumber int
	Size       int64
}

// attributes answers GetObjectAttributes from Listing.PartSizes and the
// checksum fields (the composite checksum without its "-N", as S3 does).
func (h *Hostile) attributes(w http.ResponseWriter, r *http.Request, b *hostileBucket, key string) {
	h.mu.Lock()
	l, ok := b.objects[key]
	h.mu.Unlock()
	if !ok {
		h.fail(w, r, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	res := attributesResult{ETag: l.ETag, ObjectSize: l.Size}
	if l.ChecksumSHA256 != "" {
		sum, _, _ := strings.Cut(l.ChecksumSHA256, "-") // base64 has no '-'
		res.Checksum = &attributesChecksum{sum, cmp.Or(l.ChecksumType, "FULL_OBJECT")}
	}
	if len(l.PartSizes) > 0 {
		per, _ := strconv.Atoi(r.Header.Get("X-Amz-Max-Parts"))
		if per <= 0 || per > 1000 {
			per = 1000
		}
		marker, _ := strconv.Atoi(r.Header.Get("X-Amz-Part-Number-Marker"))
		marker = max(0, min(marker, len(l.PartSizes)))
		end := min(marker+per, len(l.PartSizes))
		res.ObjectParts = &attributesParts{TotalPartsCount: len(l.PartSizes), PartNumberMarker: marker,
			NextPartNumberMarker: end, MaxParts: per, IsTruncated: end < len(l.PartSizes)}
		for i := marker; i < end; i++ {
			res.ObjectParts.Part = append(res.ObjectParts.Part, attributesPart{PartNumber: i + 1, Size: l.PartSizes[i]})
		}
	}
	h.writeXML(w, r, res)
}

// writeXML sends v as an S3 XML answer.
func (h *Hostile) writeXML(w http.ResponseWriter, r *http.Request, v any) {
	out, err := xml.Marshal(v)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Write([]byte(xml.Header))
	w.Write(out)
}
