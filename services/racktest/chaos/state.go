package chaos

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// Indeterminate calls are tokens. A call that may or may not have taken
// effect, at any time after it was invoked, is porcupine's usual "return
// at the end of the history"; but every such call then stays open to the
// end, and the search grows exponentially with their number (a walk of
// the model with 30 of them in 130 calls did not finish in a minute).
// Instead, such a call adds a token of its kind to the state when it is
// invoked, and the state's closure may spend the token at any later
// moment, once, on what the call would have done (happened). Tokens of a
// kind are interchangeable, so the state counts them. That is the same
// semantics, with nothing left open.

// tokenKinds are the kinds a token can be, in the order tokens counts them.
var tokenKinds = [...]Kind{KindStart, KindStop, KindReboot, KindForceTerminate, KindMigrate}

// tokens counts the unspent tokens of each kind. A count saturates at its
// maximum, which then never runs out: more behaviour, never less.
type tokens [len(tokenKinds)]uint8

func tokenIndex(k Kind) int { return slices.Index(tokenKinds[:], k) }

func (t tokens) covers(u tokens) bool {
	for i := range t {
		if t[i] < u[i] {
			return false
		}
	}
	return true
}

func (t tokens) plus(k int) tokens {
	if t[k] < 255 {
		t[k]++
	}
	return t
}

func (t tokens) spend(k int) tokens {
	if t[k] < 255 {
		t[k]--
	}
	return t
}

func (t tokens) String() string {
	var parts []string
	for i, n := range t {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", tokenKinds[i], n))
		}
	}
	return strings.Join(parts, " ")
}

// union is the greater count of each kind.
func (t tokens) union(u tokens) tokens {
	for i := range t {
		t[i] = max(t[i], u[i])
	}
	return t
}

// possibilities are the situations the instance may be in, each with the
// tokens it may still have. An instance with more tokens left can do all
// it could with fewer (by not spending them), so a situation keeps the
// greatest count of each kind it may have left. That over-approximates
// (two ways to one situation, each having spent a token of another kind,
// leave it both), which is sound, and keeps the state small: keeping every
// incomparable count instead made checking a long history about 30 times slower.
type possibilities map[situation]tokens

// add records that x is possible with t left; false when that was known.
func (p possibilities) add(x situation, t tokens) bool {
	x = x.normal()
	u, ok := p[x]
	if ok && u.covers(t) {
		return false
	}
	p[x] = u.union(t)
	return true
}

// close adds everything the background and unspent tokens lead to.
func (p possibilities) close(reincarnates bool) {
	work := p.situations()
	for len(work) > 0 {
		x := work[len(work)-1]
		work = work[:len(work)-1]
		t := p[x]
		push := func(left tokens) func(situation) {
			return func(y situation) {
				if p.add(y, left) {
					work = append(work, y.normal())
				}
			}
		}
		background(x, reincarnates).each(push(t))
		for k, n := range t {
			if n > 0 {
				happened(tokenKinds[k], x).each(push(t.spend(k)))
			}
		}
	}
}

// mapEach is the possibilities of f over every situation of p, with their
// tokens.
func (p possibilities) mapEach(f func(situation) set) possibilities {
	out := possibilities{}
	for x, t := range p {
		f(x).each(func(y situation) { out.add(y, t) })
	}
	return out
}

// encode is p as a comparable value: the same possibilities always give
// the same string.
func (p possibilities) encode() string {
	var b strings.Builder
	for _, x := range p.situations() {
		t := p[x]
		b.WriteByte(byte(x.index()))
		b.Write(t[:])
	}
	return b.String()
}

func decode(s string) possibilities {
	p := possibilities{}
	const width = 1 + len(tokens{})
	for i := 0; i+width <= len(s); i += width {
		var t tokens
		copy(t[:], s[i+1:i+width])
		p[situationAt(int(s[i]))] = t
	}
	return p
}

// situations are p's situations in index order.
func (p possibilities) situations() []situation {
	xs := make([]situation, 0, len(p))
	for x := range p {
		xs = append(xs, x)
	}
	slices.SortFunc(xs, func(a, b situation) int { return a.index() - b.index() })
	return xs
}

func (p possibilities) String() string {
	var parts []string
	for _, x := range p.situations() {
		part := x.String()
		if t := p[x].String(); t != "" {
			part += " +" + t
		}
		parts = append(parts, part)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// state is porcupine's state of one instance: its possibilities, encoded
// (empty before its setup), and its reincarnation policy.
type state struct {
	may          string
	reincarnates bool
}

func (s state) hash() uint64 {
	h := fnv.New64a()
	h.Write([]byte(s.may)) //nolint:errcheck // a hash never fails
	if s.reincarnates {
		return ^h.Sum64()
	}
	return h.Sum64()
}
