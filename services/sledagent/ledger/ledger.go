package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
	"github.com/rackplane/rackplane/pkg/ledgerfile"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// FileName is the name of every copy of the zones ledger.
const FileName = "omicron-zones.ledger"

// CommitTimeout bounds how long Ensure waits for a first durable copy when
// every disk is slow; it is under the 10 s nexus gives an EnsureZones call,
// so the caller hears UNAVAILABLE rather than its own deadline.
const CommitTimeout = 5 * time.Second

// The reasons a config is refused (Z1). A refused config changes nothing.
var (
	ErrGenerationOutdated                 = errors.New("generation is older than the ledgered one")
	ErrConfigChangedWithoutGenerationBump = errors.New("config differs from the ledgered one of the same generation")
	// ErrNotDurable means no ledger copy could be written; nothing changed
	// in memory. A write still in flight may land later, as a reply lost
	// after a commit would; until a commit at least that new succeeds, an
	// older config is refused this way too (ledgerfile.ErrGenerationBehind).
	ErrNotDurable = errors.New("no ledger copy could be written")
)

// RejectedError says why a config was refused and what is ledgered instead.
type RejectedError struct {
	Reason    error
	Ledgered  uint64
	Requested uint64
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%v (ledgered generation %d, requested %d)", e.Reason, e.Ledgered, e.Requested)
}

func (e *RejectedError) Unwrap() error { return e.Reason }

// ZonesLedger is the durable zones config of this sled.
type ZonesLedger struct {
	log      *zap.Logger
	file     *ledgerfile.Ledger
	onCommit func(zoneconfig.Config)

	// commitMu serializes Ensure calls, so that configs are ledgered and
	// handed on in order. mu guards current alone, so that the inventory
	// never waits for a commit on a slow disk.
	commitMu sync.Mutex
	mu       sync.Mutex
	current  *zoneconfig.Config
}

// Option adjusts Open.
type Option func(*options)

type options struct {
	sled     *zoneconfig.Sled
	fileOpts []ledgerfile.Option
}

// ForSled has Open check every copy's zones against this sled, as
// zoneconfig.Parse checks a config nexus sends: a copy naming a pool the
// sled does not have is corrupt. Without it a copy's pools go unchecked;
// every other rule still applies.
func ForSled(sled zoneconfig.Sled) Option {
	return func(o *options) { o.sled = &sled }
}

// WithFileOptions passes options to the copies' ledgerfile.Ledger, such as
// ledgerfile.WithCopyWriterForTest.
func WithFileOptions(opts ...ledgerfile.Option) Option {
	return func(o *options) { o.fileOpts = append(o.fileOpts, opts...) }
}

// Open loads the ledger from dirs. A copy is invalid when its checksum is
// wrong or when its content is not a config the agent would accept (Z2);
// invalid copies are logged and ignored, and rewritten by the next commit.
// When copies exist but none is valid Open fails, so that the agent never
// starts with an empty config by mistake. onCommit, if set, is called with
// every newly accepted config, in generation order, once it is durable.
func Open(dirs []string, log *zap.Logger, onCommit func(zoneconfig.Config), opts ...Option) (*ZonesLedger, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	observe := ledgerfile.WithWriteObserver(func(path string, generation uint64, err error) {
		if err != nil {
			log.Error("zones ledger copy not written", zap.String("path", path),
				zap.Uint64("generation", generation), zap.Error(err))
		}
	})
	file, err := ledgerfile.New(dirs, FileName, append([]ledgerfile.Option{observe}, o.fileOpts...)...)
	if err != nil {
		return nil, err
	}
	loaded, err := file.LoadChecked(func(generation uint64, payload []byte) error {
		_, err := decode(generation, payload, o.sled)
		return err
	})
	for _, c := range loaded.Copies {
		if c.Err != nil {
			log.Warn("ignoring invalid zones ledger copy", zap.String("path", c.Path), zap.Error(c.Err))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("refusing to start without a valid zones config: %w", err)
	}
	l := &ZonesLedger{log: log, file: file, onCommit: onCommit}
	if loaded.Found {
		cfg, err := decode(loaded.Generation, loaded.Payload, o.sled)
		if err != nil { // the check above passed this very payload
			return nil, fmt.Errorf("zones ledger generation %d: %w", loaded.Generation, err)
		}
		l.current = &cfg
		log.Info("loaded zones ledger", zap.Uint64("generation", cfg.Generation), zap.Int("zones", len(cfg.Zones)))
	}
	return l, nil
}

// decode reads a copy's payload and validates it with the rules a config
// from nexus meets (Z2), against sled when known. It also requires what
// only this ledger could have written: the header's generation, and the
// canonical form Parse produces (zones sorted, nothing Parse would drop).
func decode(generation uint64, payload []byte, sled *zoneconfig.Sled) (zoneconfig.Config, error) {
	var stored zoneconfig.Config
	if err := json.Unmarshal(payload, &stored); err != nil {
		return zoneconfig.Config{}, fmt.Errorf("not a zones config: %w", err)
	}
	if stored.Generation != generation {
		return zoneconfig.Config{}, fmt.Errorf("holds generation %d under a header of generation %d", stored.Generation, generation)
	}
	// Proto turns a kind it does not know into UNSPECIFIED; name the
	// stored one instead.
	var unknown []string
	for i, z := range stored.Zones {
		if z.Kind.Proto() == sledagentv1.ZoneKind_ZONE_KIND_UNSPECIFIED {
			unknown = append(unknown, fmt.Sprintf("config.zones[%d].kind: unknown zone kind %q", i, z.Kind))
		}
	}
	if len(unknown) > 0 {
		return zoneconfig.Config{}, errors.New(strings.Join(unknown, "; "))
	}
	var against zoneconfig.Sled
	if sled != nil {
		against = *sled
	} else {
		for _, z := range stored.Zones {
			against.Zpools = append(against.Zpools, z.FilesystemPool)
		}
	}
	parsed, err := zoneconfig.Parse(stored.Proto(), against)
	var verr *apierror.ValidationError
	if errors.As(err, &verr) { // not a request: drop "invalid request"
		var problems []string
		for _, v := range verr.Violations {
			problems = append(problems, v.Field+": "+v.Description)
		}
		return zoneconfig.Config{}, errors.New(strings.Join(problems, "; "))
	}
	if err != nil {
		return zoneconfig.Config{}, err
	}
	if !parsed.Equal(stored) {
		return zoneconfig.Config{}, errors.New("not in the canonical form the ledger writes")
	}
	return parsed, nil
}

// Current returns the ledgered config, if any.
func (l *ZonesLedger) Current() (zoneconfig.Config, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.current == nil {
		return zoneconfig.Config{}, false
	}
	return *l.current, true
}

// CopyStatus is one ledger copy as the agent knows it, for the inventory.
type CopyStatus struct {
	Path string
	// Generation is the newest generation known durable on the copy, zero
	// when none.
	Generation uint64
	// Problem says what is wrong with the copy, empty when nothing is: it
	// was corrupt at start (until rewritten), its last write failed, or it
	// is missing or behind the ledgered generation with nothing being
	// written to it.
	Problem string
	// Writing is the generation being written to the copy, zero when no
	// write is in flight, since WritingSince: a write in flight for long is
	// a slow or hung disk, which commits go on without.
	Writing      uint64
	WritingSince time.Time
}

// CopyStatus returns the state of every copy, in the order of the ledger
// directories.
func (l *ZonesLedger) CopyStatus() []CopyStatus {
	var ledgered uint64
	if cur, ok := l.Current(); ok {
		ledgered = cur.Generation
	}
	copies := l.file.Copies()
	out := make([]CopyStatus, len(copies))
	for i, c := range copies {
		s := CopyStatus{Path: c.Path, Generation: c.Generation, Writing: c.Writing, WritingSince: c.WritingSince}
		switch {
		case c.Err != nil:
			s.Problem = c.Err.Error()
		case c.Writing != 0:
		case c.Missing && ledgered != 0:
			s.Problem = fmt.Sprintf("missing; the ledgered generation is %d", ledgered)
		case c.Generation < ledgered:
			s.Problem = fmt.Sprintf("holds generation %d, behind the ledgered %d", c.Generation, ledgered)
		}
		out[i] = s
	}
	return out
}

// Ensure is EnsureContext bounded by CommitTimeout alone.
func (l *ZonesLedger) Ensure(cfg zoneconfig.Config) error {
	return l.EnsureContext(context.Background(), cfg)
}

// EnsureContext applies the generation rules to cfg and, when it is
// accepted, makes it durable before returning: it returns once one copy is
// durable (Z3), reporting copies still being written in CopyStatus. It
// waits for that no longer than ctx allows, nor than CommitTimeout. The
// returned error is a *RejectedError, an error wrapping ErrNotDurable, or
// nil.
func (l *ZonesLedger) EnsureContext(ctx context.Context, cfg zoneconfig.Config) error {
	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	if cur, ok := l.Current(); ok {
		switch {
		case cfg.Generation < cur.Generation:
			return &RejectedError{Reason: ErrGenerationOutdated, Ledgered: cur.Generation, Requested: cfg.Generation}
		case cfg.Generation == cur.Generation && !cfg.SameZones(cur):
			return &RejectedError{Reason: ErrConfigChangedWithoutGenerationBump, Ledgered: cur.Generation, Requested: cfg.Generation}
		}
	}
	payload, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encoding zones config: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, CommitTimeout)
	defer cancel()
	res, err := l.file.CommitContext(ctx, cfg.Generation, payload)
	for _, path := range res.Writing {
		l.log.Warn("zones ledger copy is slow: going on without it", zap.String("path", path),
			zap.Uint64("generation", cfg.Generation))
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	l.mu.Lock()
	changed := l.current == nil || !l.current.Equal(cfg)
	l.current = &cfg
	l.mu.Unlock()
	if changed && l.onCommit != nil {
		// Under commitMu, so that the reconciler sees configs in the order
		// they were ledgered.
		l.onCommit(cfg)
	}
	return nil
}
