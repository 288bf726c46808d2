package chaos

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestR1_AViolationWritesTheHistoryAndItsVisualization(t *testing.T) {
	dir := t.TempDir()
	h := newScript("running").
		call(0, KindForceTerminate, 10, 20, 200, "stopped").
		view(1, 30, 40, "running").
		history()
	res, err := Check(h, 10*time.Second, dir)
	if res.Outcome != porcupine.Illegal || err == nil {
		t.Fatalf("want a violation, got %s: %v", res.Outcome, err)
	}
	for _, path := range []string{res.HistoryFile, res.VisualizationFile} {
		if !strings.HasPrefix(path, dir) || !strings.Contains(err.Error(), path) {
			t.Errorf("file %q: want it in %s and named by the error %q", path, dir, err)
		}
	}
	page, readErr := os.ReadFile(res.VisualizationFile)
	if readErr != nil || !strings.Contains(string(page), "<html") ||
		!strings.Contains(string(page), "force-terminate: 200") || !strings.Contains(string(page), "view: running") {
		t.Errorf("visualization %s: want porcupine's HTML describing the calls (%v)", res.VisualizationFile, readErr)
	}
	// The written history is the one a replay checks.
	replayed, readErr := ReadHistory(res.HistoryFile)
	if readErr != nil {
		t.Fatal(readErr)
	}
	if again, err := Check(replayed, 10*time.Second, t.TempDir()); again.Outcome != porcupine.Illegal || err == nil {
		t.Errorf("the written history checked again: %s (%v), want the same violation", again.Outcome, err)
	}
}

func TestR1_ALinearizableHistoryWritesNoFiles(t *testing.T) {
	dir := t.TempDir()
	res, err := Check(newScript("stopped").view(1, 10, 20, "stopped").history(), 10*time.Second, dir)
	if err != nil || res.Outcome != porcupine.Ok || res.HistoryFile != "" {
		t.Fatalf("Check = %+v, %v; want Ok and no files", res, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("dir holds %d files, want none", len(entries))
	}
}

func TestR1_ACallOnAnInstanceNotYetTrackedIsAnErrorNamingIt(t *testing.T) {
	h := NewHistory()
	h.Invoke(0, KindView, "nobody").Answered(200, []byte(`{"run_state":"running"}`)) //nolint:errcheck // checked below
	_, err := Check(h, time.Second, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `"nobody" was not tracked`) {
		t.Fatalf("Check = %v, want an error naming the untracked instance", err)
	}
}

func TestR1_TrackRefusesARunStateTheModelDoesNotStartFrom(t *testing.T) {
	err := NewHistory().Track(vm, "creating", true)
	if err == nil || !strings.Contains(err.Error(), "run_state") {
		t.Fatalf("Track(creating) = %v, want an error naming run_state", err)
	}
}

// The recorder, used as the harness will: concurrent clients, answers read
// from REST bodies, calls that time out or never finish.
func TestR1_TheHistoryRecordsEveryCallOfConcurrentClients(t *testing.T) {
	h := NewHistory()
	if err := h.Track(vm, "running", true); err != nil {
		t.Fatal(err)
	}
	const clients, calls = 8, 50
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				if err := h.Invoke(c, KindView, vm).Answered(200, []byte(`{"id":"x","run_state":"running"}`)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	list := h.Invoke(0, KindList, "")
	if err := list.Answered(200, []byte(`{"items":[{"id":"`+vm+`","run_state":"running"}],"next_page":null}`)); err != nil {
		t.Fatal(err)
	}
	h.Invoke(1, KindStop, vm).Failed(context.DeadlineExceeded)
	h.Invoke(2, KindReboot, vm).Answered(409, []byte(`{"request_id":"r","error_code":"Conflict","message":"busy"}`)) //nolint:errcheck // not a 2xx
	h.Invoke(3, KindStart, vm)                                                                                       // never answered
	if err := h.Invoke(4, KindView, vm).Answered(200, []byte(`{}`)); err == nil {
		t.Error("a 2xx view with no run_state: want an error")
	}

	f := h.snapshot()
	if got := len(f.Calls); got != clients*calls+5 {
		t.Fatalf("%d calls recorded, want %d", got, clients*calls+5)
	}
	for i, c := range f.Calls[:clients*calls] {
		if !c.Returned || c.Return < c.Invoke || c.RunState != "running" {
			t.Fatalf("call %d: %+v, want a returned view of running", i, c)
		}
	}
	tail := f.Calls[clients*calls:]
	if tail[0].Items[vm] != "running" || tail[1].Status != 0 || !strings.Contains(tail[1].Error, "deadline") ||
		tail[2].Error != "Conflict: busy" || tail[3].Returned {
		t.Fatalf("the last calls: %+v", tail)
	}
	// The unreadable view aside, the history is linearizable: the stop and
	// the start are indeterminate.
	h.ops = h.ops[:len(h.ops)-1]
	res, err := Check(h, 10*time.Second, t.TempDir())
	if err != nil || res.Outcome != porcupine.Ok || res.Indeterminate != 2 || res.Calls != clients*calls+4 {
		t.Fatalf("Check = %+v, %v; want Ok with 2 indeterminate calls", res, err)
	}
}
