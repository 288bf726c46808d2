package app

import (
	"encoding/base64"
	"encoding/json"

	"github.com/rackplane/rackplane/pkg/apierror"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// page is a validated list request: sort order, where to resume, how many.
type page struct {
	sortBy string
	after  string
	limit  int
}

type pageToken struct {
	SortBy string `json:"s"`
	After  string `json:"a"`
}

// parsePage validates limit, page_token and sort_by. A page token carries
// its sort order, so a client cannot change order mid-listing by accident.
func parsePage(v *apierror.Violations, limit uint32, token, sortBy string, sorts ...string) page {
	p := page{limit: defaultPageSize, sortBy: sorts[0]}
	if limit > maxPageSize {
		v.Add("limit", "must be at most %d, got %d", maxPageSize, limit)
	} else if limit > 0 {
		p.limit = int(limit)
	}
	if sortBy != "" {
		known := false
		for _, s := range sorts {
			known = known || s == sortBy
		}
		if !known {
			v.Add("sort_by", "%q is not one of %v", sortBy, sorts)
		}
		p.sortBy = sortBy
	}
	if token != "" {
		var t pageToken
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err == nil {
			err = json.Unmarshal(raw, &t)
		}
		if err != nil || t.After == "" {
			v.Add("page_token", "is not a token this API handed out")
		} else {
			p.sortBy, p.after = t.SortBy, t.After
		}
	}
	return p
}

// next returns the token for the page after one ending at last, or nil when
// the page was not full (the listing is over).
func (p page) next(got int, last string) *string {
	if got < p.limit {
		return nil
	}
	raw, _ := json.Marshal(pageToken{SortBy: p.sortBy, After: last})
	token := base64.RawURLEncoding.EncodeToString(raw)
	return &token
}
