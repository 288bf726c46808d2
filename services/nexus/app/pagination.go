package app

import (
	"encoding/base64"
	"encoding/json"
	"slices"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/services/nexus/datastore"
)

const (
	defaultPageSize = 100
	MaxPageSize     = 1000
)

// Oxide's sort modes: NameOrIdSortMode for a listing of named resources,
// IdSortMode for one by id only; the first of each is the default.
var (
	nameOrIDSorts = []string{"name_ascending", "name_descending", "id_ascending"}
	idSorts       = []string{"id_ascending"}
)

// sortOrders is the datastore's order of each sort mode.
var sortOrders = map[string]datastore.ListOrder{
	"name_ascending":  datastore.ByNameAscending,
	"name_descending": datastore.ByNameDescending,
	"id_ascending":    datastore.ByIDAscending,
}

// page is a validated list request: sort order, where to resume, how many.
type page struct {
	listing string
	sortBy  string
	after   string
	limit   int
}

// pageToken is what a page token carries: the listing that issued it (for
// example "instances/<project id>"), its sort order, and where to resume.
type pageToken struct {
	Listing string `json:"l"`
	SortBy  string `json:"s"`
	After   string `json:"a"`
}

// parsePage validates limit, page_token and sort_by for listing. A page
// token works only for the listing and sort order that issued it (SPEC 7),
// so a client cannot resume one listing from another's position, or change
// order mid-listing.
func parsePage(v *apierror.Violations, listing string, limit uint32, token, sortBy string, sorts ...string) page {
	p := page{listing: listing, limit: defaultPageSize, sortBy: sorts[0]}
	if limit > MaxPageSize {
		v.Add("limit", "must be at most %d, got %d", MaxPageSize, limit)
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
		switch {
		case err != nil || t.After == "" || !storable(t.After) || !storable(t.Listing):
			v.Add("page_token", "is not a token this API handed out")
		case t.Listing != listing:
			v.Add("page_token", "was handed out by another listing")
		case !slices.Contains(sorts, t.SortBy):
			v.Add("page_token", "is not a token this API handed out")
		case sortBy != "" && sortBy != t.SortBy:
			v.Add("sort_by", "%q differs from the page_token's sort order %q; start the listing again to change it", sortBy, t.SortBy)
		default:
			p.sortBy, p.after = t.SortBy, t.After
		}
	}
	return p
}

// order is the datastore's order of the page's sort mode.
func (p page) order() datastore.ListOrder { return sortOrders[p.sortBy] }

// key is where the page after one ending at an item named name, of id id,
// resumes: as the page is sorted.
func (p page) key(name string, id uuid.UUID) string {
	if p.order().ByID {
		return id.String()
	}
	return name
}

// next returns the token for the page after one ending at last, or nil when
// the page was not full (the listing is over).
func (p page) next(got int, last string) *string {
	if got < p.limit {
		return nil
	}
	raw, _ := json.Marshal(pageToken{Listing: p.listing, SortBy: p.sortBy, After: last})
	token := base64.RawURLEncoding.EncodeToString(raw)
	return &token
}
