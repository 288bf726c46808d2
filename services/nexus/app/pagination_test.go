package app

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"

	"github.com/rackplane/rackplane/pkg/apierror"
)

// FuzzPageToken (S6, SPEC 7): any page_token, sort_by and limit is
// refused naming its field or accepted, never a panic; an accepted token
// resumes its own listing in one of its sort orders, and a token this API
// hands out is accepted back by its listing only.
func FuzzPageToken(f *testing.F) {
	issued := func(listing, sortBy, after string) string {
		raw, _ := json.Marshal(pageToken{Listing: listing, SortBy: sortBy, After: after})
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	f.Add(issued("projects", "name_ascending", "p"), "", uint32(0), "projects")
	f.Add(issued("projects", "id_ascending", "p"), "name_ascending", uint32(10), "projects")
	f.Add(issued("instances/x", "name_ascending", "vm"), "", uint32(1001), "sleds")
	f.Add("!!!", "bogus", uint32(5), "projects")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"l":"projects","s":"name_ascending","a":""}`)), "", uint32(0), "projects")
	sorts := []string{"name_ascending", "id_ascending"}
	f.Fuzz(func(t *testing.T, token, sortBy string, limit uint32, listing string) {
		var v apierror.Violations
		p := parsePage(&v, listing, limit, token, sortBy, sorts...)
		if v.Err() != nil {
			return
		}
		if !slices.Contains(sorts, p.sortBy) || p.limit < 1 || p.limit > MaxPageSize {
			t.Fatalf("accepted a page %+v", p)
		}
		if token == "" {
			return
		}
		var got pageToken
		raw, _ := base64.RawURLEncoding.DecodeString(token)
		if json.Unmarshal(raw, &got) != nil || got.Listing != listing || got.After != p.after {
			t.Fatalf("accepted token %q for listing %q: %+v", token, listing, p)
		}
		next := p.next(p.limit, "last")
		var again apierror.Violations
		if q := parsePage(&again, listing, limit, *next, "", sorts...); again.Err() != nil || q.after != "last" || q.sortBy != p.sortBy {
			t.Fatalf("the token handed out after %+v does not resume it: %+v (%v)", p, q, again.Err())
		}
	})
}
