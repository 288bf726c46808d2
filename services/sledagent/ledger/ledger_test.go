package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/ledgerfile"
	"github.com/rackplane/rackplane/pkg/ledgerfile/ledgerfiletest"
	"github.com/rackplane/rackplane/pkg/testutil"
	"github.com/rackplane/rackplane/services/sledagent/ledger"
	"github.com/rackplane/rackplane/services/sledagent/zoneconfig"
)

type sledLedger struct {
	dirs  []string
	sled  zoneconfig.Sled
	disks *ledgerfiletest.Disks
}

func newSledLedger(t *testing.T) *sledLedger {
	t.Helper()
	root := t.TempDir()
	s := &sledLedger{
		dirs:  []string{filepath.Join(root, "m2-0"), filepath.Join(root, "m2-1")},
		sled:  zoneconfig.Sled{Zpools: []string{"oxp_" + uuid.NewString(), "oxp_" + uuid.NewString()}},
		disks: ledgerfiletest.NewDisks(),
	}
	// Runs before the directories go: no write may outlive the test.
	t.Cleanup(func() {
		s.disks.ReleaseAll()
		testutil.WaitFor(t, 10*time.Second, s.disks.Idle)
	})
	return s
}

func (s *sledLedger) open(t *testing.T, log *zap.Logger, onCommit func(zoneconfig.Config)) (*ledger.ZonesLedger, error) {
	t.Helper()
	return ledger.Open(s.dirs, log, onCommit, ledger.ForSled(s.sled),
		ledger.WithFileOptions(ledgerfile.WithCopyWriterForTest(s.disks.Write)))
}

func (s *sledLedger) path(i int) string { return filepath.Join(s.dirs[i], ledger.FileName) }

// config returns a valid config of generation with one zone per kind.
func (s *sledLedger) config(t *testing.T, generation uint64, kinds ...sledagentv1.ZoneKind) zoneconfig.Config {
	t.Helper()
	in := &sledagentv1.OmicronZonesConfig{Generation: generation}
	for i, kind := range kinds {
		z := &sledagentv1.OmicronZoneConfig{
			Id: uuid.NewString(), Kind: kind, FilesystemPool: s.sled.Zpools[0],
			Address: fmt.Sprintf("[fd00:1122:3344:101::%x]:%d", i+1, 12000+i),
		}
		if kind == sledagentv1.ZoneKind_ZONE_KIND_NEXUS {
			z.Nexus = &sledagentv1.NexusZoneDetails{ExternalAddress: "0.0.0.0:12220", MetricsAddress: "0.0.0.0:12223",
				DatabaseBackend: "sqlite", DatabaseUrl: "file:/data/nexus.db"}
		}
		in.Zones = append(in.Zones, z)
	}
	cfg, err := zoneconfig.Parse(in, s.sled)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeCopy puts payload in copy i as generation, with a valid checksum.
func (s *sledLedger) writeCopy(t *testing.T, i int, generation uint64, payload string) {
	t.Helper()
	f, err := ledgerfile.New(s.dirs[i:i+1], ledger.FileName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Commit(generation, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// readCopy returns the generation copy i holds, or an error when it is
// missing or invalid.
func (s *sledLedger) readCopy(i int) (uint64, error) {
	f, err := ledgerfile.New(s.dirs[i:i+1], ledger.FileName)
	if err != nil {
		return 0, err
	}
	got, err := f.Load()
	if err == nil && !got.Found {
		err = errors.New("missing")
	}
	return got.Generation, err
}

// TestZ3_ACopyWithAValidChecksumButInvalidContentIsCorrupt: a newer copy
// that passes its checksum but holds nothing the agent would accept is
// ignored for the older good one, in either copy; it is reported (a warning,
// and its status) and rewritten by the next commit.
func TestZ3_ACopyWithAValidChecksumButInvalidContentIsCorrupt(t *testing.T) {
	bad := map[string]func(s *sledLedger, good zoneconfig.Config) (string, string){
		"not JSON": func(*sledLedger, zoneconfig.Config) (string, string) {
			return "rackplane zones, generation 4", "not a zones config"
		},
		"unknown zone kind": func(_ *sledLedger, good zoneconfig.Config) (string, string) {
			return strings.Replace(marshal(t, 4, good.Zones), `"kind":"nexus"`, `"kind":"nexsus"`, 1),
				`unknown zone kind "nexsus"`
		},
		"duplicate ids": func(_ *sledLedger, good zoneconfig.Config) (string, string) {
			zones := append([]zoneconfig.Zone(nil), good.Zones...)
			zones[1].ID = zones[0].ID
			return marshal(t, 4, zones), "is also the id of"
		},
		"a pool that is not this sled's": func(_ *sledLedger, good zoneconfig.Config) (string, string) {
			zones := append([]zoneconfig.Zone(nil), good.Zones...)
			zones[0].FilesystemPool = "oxp_" + uuid.NewString()
			return marshal(t, 4, zones), "is not a zpool of this sled"
		},
		"a generation other than its header's": func(_ *sledLedger, good zoneconfig.Config) (string, string) {
			return marshal(t, 9, good.Zones), "holds generation 9 under a header of generation 4"
		},
	}
	for name, corrupt := range bad {
		for badCopy := range 2 {
			t.Run(fmt.Sprintf("%s in copy %d", name, badCopy), func(t *testing.T) {
				s := newSledLedger(t)
				l, err := s.open(t, zap.NewNop(), nil)
				if err != nil {
					t.Fatal(err)
				}
				good := s.config(t, 3, sledagentv1.ZoneKind_ZONE_KIND_NEXUS, sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE)
				if err := l.Ensure(good); err != nil {
					t.Fatal(err)
				}
				payload, problem := corrupt(s, good)
				s.writeCopy(t, badCopy, 4, payload)

				core, logs := observer.New(zapcore.WarnLevel)
				l, err = s.open(t, zap.New(core), nil)
				if err != nil {
					t.Fatalf("Open refused although copy %d is fine: %v", 1-badCopy, err)
				}
				if cur, ok := l.Current(); !ok || !cur.Equal(good) {
					t.Fatalf("loaded %+v, want the good generation 3", cur)
				}
				if st := l.CopyStatus()[badCopy]; !strings.Contains(st.Problem, problem) {
					t.Fatalf("the corrupt copy's status is %+v, want a problem saying %q", st, problem)
				}
				if st := l.CopyStatus()[1-badCopy]; st.Problem != "" || st.Generation != 3 {
					t.Fatalf("the good copy's status is %+v, want generation 3 and no problem", st)
				}
				warned := logs.FilterMessage("ignoring invalid zones ledger copy").FilterField(zap.String("path", s.path(badCopy)))
				if warned.Len() != 1 || warned.All()[0].Level != zapcore.WarnLevel {
					t.Fatalf("logged %v, want one warning about %s", logs.All(), s.path(badCopy))
				}

				next := good
				next.Generation = 4
				if err := l.Ensure(next); err != nil {
					t.Fatal(err)
				}
				if gen, err := s.readCopy(badCopy); err != nil || gen != 4 {
					t.Fatalf("after a commit the corrupt copy holds generation %d (%v), want 4", gen, err)
				}
				if st := l.CopyStatus()[badCopy]; st.Problem != "" || st.Generation != 4 {
					t.Fatalf("after a commit the corrupt copy's status is %+v, want generation 4 and no problem", st)
				}
			})
		}
	}
}

func TestZ3_OpenRefusesWhenEveryCopyHasAValidChecksumButInvalidContent(t *testing.T) {
	s := newSledLedger(t)
	for i := range s.dirs {
		s.writeCopy(t, i, 2, `{"generation":2,"zones":[{"id":"x"}]}`)
	}
	_, err := s.open(t, zap.NewNop(), nil)
	if !errors.Is(err, ledgerfile.ErrNoValidCopy) || !strings.Contains(err.Error(), "refusing to start") ||
		!strings.Contains(err.Error(), s.path(0)) || !strings.Contains(err.Error(), s.path(1)) {
		t.Fatalf("Open: %v, want a refusal naming both copies", err)
	}
}

// TestZ3_EnsureReturnsOnceOneCopyIsDurableAndReportsTheHungOne: a disk that
// hangs does not hold EnsureZones (nor the configs after it); its copy is
// reported as being written, and catches up with the newest config once
// the disk comes back.
func TestZ3_EnsureReturnsOnceOneCopyIsDurableAndReportsTheHungOne(t *testing.T) {
	s := newSledLedger(t)
	var mu sync.Mutex
	var committed []uint64
	l, err := s.open(t, zap.NewNop(), func(cfg zoneconfig.Config) {
		mu.Lock()
		defer mu.Unlock()
		committed = append(committed, cfg.Generation)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.disks.Hang(s.path(1))
	for gen := uint64(1); gen <= 2; gen++ {
		cfg := s.config(t, gen, sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE)
		if err := waitReturn(t, fmt.Sprintf("Ensure(generation %d)", gen), func() error { return l.Ensure(cfg) }); err != nil {
			t.Fatal(err)
		}
		if cur, _ := l.Current(); cur.Generation != gen {
			t.Fatalf("ledgered generation %d, want %d", cur.Generation, gen)
		}
		if got, err := s.readCopy(0); err != nil || got != gen {
			t.Fatalf("copy 0 holds generation %d (%v), want %d", got, err, gen)
		}
	}
	mu.Lock()
	if fmt.Sprint(committed) != "[1 2]" {
		t.Fatalf("the reconciler was handed generations %v, want [1 2]", committed)
	}
	mu.Unlock()
	if st := l.CopyStatus()[1]; st.Writing != 1 || st.WritingSince.IsZero() || st.Generation != 0 {
		t.Fatalf("the hung copy's status is %+v, want writing generation 1 since a time", st)
	}
	s.disks.Release(s.path(1))
	testutil.WaitFor(t, 10*time.Second, func() error {
		if st := l.CopyStatus()[1]; st.Generation != 2 || st.Writing != 0 || st.Problem != "" {
			return fmt.Errorf("copy 1's status is %+v, want generation 2, idle and fine", st)
		}
		return nil
	})
	if got, err := s.readCopy(1); err != nil || got != 2 {
		t.Fatalf("copy 1 holds generation %d (%v), want 2", got, err)
	}
}

// TestZ3_EnsureFailsUnavailableWhenNoCopyIsDurableInTime: with every disk
// hung the call ends with the caller's deadline and changes nothing.
func TestZ3_EnsureFailsUnavailableWhenNoCopyIsDurableInTime(t *testing.T) {
	s := newSledLedger(t)
	called := false
	l, err := s.open(t, zap.NewNop(), func(zoneconfig.Config) { called = true })
	if err != nil {
		t.Fatal(err)
	}
	s.disks.Hang(s.path(0))
	s.disks.Hang(s.path(1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.EnsureContext(ctx, s.config(t, 1, sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE)) }()
	testutil.WaitFor(t, 10*time.Second, func() error {
		for i, st := range l.CopyStatus() {
			if st.Writing != 1 {
				return fmt.Errorf("copy %d's status is %+v, want writing", i, st)
			}
		}
		return nil
	})
	cancel()
	err = waitReturn(t, "EnsureContext", func() error { return <-done })
	if !errors.Is(err, ledger.ErrNotDurable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("EnsureContext: %v, want ErrNotDurable for the cancelled context", err)
	}
	if _, ok := l.Current(); ok || called {
		t.Fatal("a config no copy made durable was taken")
	}
}

// TestZ3_AFailingCopyIsLoggedAndReportedUntilRewritten: a copy whose write
// failed says so, and stops saying so once a commit rewrote it.
func TestZ3_AFailingCopyIsLoggedAndReportedUntilRewritten(t *testing.T) {
	s := newSledLedger(t)
	core, logs := observer.New(zapcore.WarnLevel)
	l, err := s.open(t, zap.New(core), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.disks.FailWith(s.path(1), errors.New("input/output error"))
	if err := l.Ensure(s.config(t, 1, sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE)); err != nil {
		t.Fatal(err)
	}
	if st := l.CopyStatus()[1]; !strings.Contains(st.Problem, "input/output error") || st.Generation != 0 {
		t.Fatalf("the failing copy's status is %+v, want its error", st)
	}
	if failed := logs.FilterMessage("zones ledger copy not written").FilterField(zap.String("path", s.path(1))); failed.Len() != 1 {
		t.Fatalf("logged %v, want the failed copy logged once", logs.All())
	}
	s.disks.FailWith(s.path(1), nil)
	if err := l.Ensure(s.config(t, 2, sledagentv1.ZoneKind_ZONE_KIND_CRUCIBLE)); err != nil {
		t.Fatal(err)
	}
	for i, st := range l.CopyStatus() {
		if st.Problem != "" || st.Generation != 2 || st.Writing != 0 {
			t.Fatalf("copy %d's status is %+v, want generation 2 and no problem", i, st)
		}
	}
}

// waitReturn calls call and returns its error, failing the test if it does
// not return within a bound far above ledgerfile.StragglerWait.
func waitReturn(t *testing.T, what string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	var err error
	returned := false
	testutil.WaitFor(t, 10*time.Second, func() error {
		select {
		case err = <-done:
			returned = true
		default:
		}
		if !returned {
			return fmt.Errorf("%s has not returned", what)
		}
		return nil
	})
	return err
}

func marshal(t *testing.T, generation uint64, zones []zoneconfig.Zone) string {
	t.Helper()
	data, err := json.Marshal(zoneconfig.Config{Generation: generation, Zones: zones})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
