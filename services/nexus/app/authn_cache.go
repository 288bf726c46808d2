package app

import (
	"sync"
	"time"

	"github.com/rackplane/rackplane/services/nexus/authz"
)

// authnCacheLimit bounds the tokens remembered at once; past it the cache
// starts again empty rather than tracking recency on every request.
const authnCacheLimit = 10000

// authnCache remembers, for a short while, whom a token authenticated: every
// request presents one, and resolving it costs a database round trip. Only
// successes are kept, never past the token's own expiry, so a token minted a
// moment ago works at once; what it bounds is how long a role change made
// elsewhere (another replica, `nexus token create`) takes to apply here.
type authnCache struct {
	ttl     time.Duration
	mu      sync.Mutex
	entries map[string]authnEntry
	// epoch counts forgets: a lookup that read the database before a
	// forget (a revocation committing meanwhile) must not put back what
	// it read.
	epoch uint64
}

type authnEntry struct {
	actor *authz.Actor
	until time.Time
}

func newAuthnCache(ttl time.Duration) *authnCache {
	return &authnCache{ttl: ttl, entries: map[string]authnEntry{}}
}

// get returns the caller a token hash resolved to, if that is recent enough.
func (c *authnCache) get(hash string, now time.Time) (*authz.Actor, bool) {
	if c.ttl <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if !ok || !now.Before(e.until) {
		return nil, false
	}
	return e.actor, true
}

// begin returns the epoch to give put for a lookup starting now.
func (c *authnCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// put remembers actor for the hash until the TTL or the token's expiry,
// whichever comes first, unless the cache was forgotten since epoch (from
// begin, before the database was read). The actor must not be changed
// afterwards.
func (c *authnCache) put(hash string, actor *authz.Actor, expires *time.Time, now time.Time, epoch uint64) {
	if c.ttl <= 0 {
		return
	}
	until := now.Add(c.ttl)
	if expires != nil && expires.Before(until) {
		until = *expires
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if len(c.entries) >= authnCacheLimit {
		clear(c.entries)
	}
	c.entries[hash] = authnEntry{actor: actor, until: until}
}

// forget drops everything: roles granted through this replica apply at once.
func (c *authnCache) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	clear(c.entries)
}
