package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/rackplane/rackplane/pkg/ledgerfile"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

// FileName is the name of every copy of the zones ledger.
const FileName = "omicron-zones.ledger"

// The reasons a config is refused (Z1). A refused config changes nothing.
var (
	ErrGenerationOutdated                 = errors.New("generation is older than the ledgered one")
	ErrConfigChangedWithoutGenerationBump = errors.New("config differs from the ledgered one of the same generation")
	// ErrNotDurable means no ledger copy could be written; nothing changed.
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

	mu      sync.Mutex
	current *zoneconfig.Config
}

// Open loads the ledger from dirs. Invalid copies are logged and ignored;
// when copies exist but none is valid Open fails, so that the agent never
// starts with an empty config by mistake. onCommit, if set, is called with
// every newly accepted config, in generation order, once it is durable.
func Open(dirs []string, log *zap.Logger, onCommit func(zoneconfig.Config)) (*ZonesLedger, error) {
	file, err := ledgerfile.New(dirs, FileName)
	if err != nil {
		return nil, err
	}
	loaded, err := file.Load()
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
		var cfg zoneconfig.Config
		if err := json.Unmarshal(loaded.Payload, &cfg); err != nil {
			return nil, fmt.Errorf("zones ledger generation %d passed its checksum but does not decode: %w", loaded.Generation, err)
		}
		l.current = &cfg
		log.Info("loaded zones ledger", zap.Uint64("generation", cfg.Generation), zap.Int("zones", len(cfg.Zones)))
	}
	return l, nil
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

// Ensure applies the generation rules to cfg and, when it is accepted, makes
// it durable before returning. The returned error is a *RejectedError, an
// error wrapping ErrNotDurable, or nil.
func (l *ZonesLedger) Ensure(cfg zoneconfig.Config) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.current; cur != nil {
		switch {
		case cfg.Generation < cur.Generation:
			return &RejectedError{Reason: ErrGenerationOutdated, Ledgered: cur.Generation, Requested: cfg.Generation}
		case cfg.Generation == cur.Generation && !cfg.SameZones(*cur):
			return &RejectedError{Reason: ErrConfigChangedWithoutGenerationBump, Ledgered: cur.Generation, Requested: cfg.Generation}
		}
	}
	payload, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encoding zones config: %w", err)
	}
	res, err := l.file.Commit(cfg.Generation, payload)
	for path, werr := range res.Failed {
		l.log.Error("zones ledger copy not written", zap.String("path", path),
			zap.Uint64("generation", cfg.Generation), zap.Error(werr))
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotDurable, err)
	}
	changed := l.current == nil || !l.current.Equal(cfg)
	l.current = &cfg
	if changed && l.onCommit != nil {
		// Under the lock, so that the reconciler sees configs in the order
		// they were ledgered.
		l.onCommit(cfg)
	}
	return nil
}
