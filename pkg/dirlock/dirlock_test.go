package dirlock_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/pkg/dirlock"
	"github.com/rackplane/rackplane/pkg/testutil"
)

func TestASecondHolderIsRefusedUntilTheFirstReleases(t *testing.T) {
	a, b := filepath.Join(t.TempDir(), "a"), t.TempDir()
	first, err := dirlock.Acquire("agent", a, b)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to open file descriptions: a second open in this
	// process conflicts as another process's would.
	_, err = dirlock.Acquire("agent", b)
	if err == nil || !strings.Contains(err.Error(), b) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second acquire: %v, want an error naming the directory and the holder's pid", err)
	}
	first.Release()
	second, err := dirlock.Acquire("agent", a, b)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	second.Release()
}

// The kernel drops the lock of a process killed with SIGKILL.
func TestALockDiesWithItsHolder(t *testing.T) {
	dir := t.TempDir()
	testutil.RequireCommand(t, "flock")
	// -o: flock itself holds the lock, not the sleep it runs.
	holder := exec.Command("flock", "-o", "--exclusive", filepath.Join(dir, ".lock"), "sleep", "100000")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		l, err := dirlock.Acquire("agent", dir)
		if err != nil {
			break // held now
		}
		l.Release()
	}
	syscall.Kill(-holder.Process.Pid, syscall.SIGKILL) //nolint:errcheck // checked by the wait
	holder.Wait()                                      //nolint:errcheck // killed
	// flock's child (killed with it) may not have finished exiting, and
	// closing its copy of the descriptor, when flock is reaped.
	testutil.WaitFor(t, 10*time.Second, func() error {
		l, err := dirlock.Acquire("agent", dir)
		if err == nil {
			l.Release()
		}
		return err
	})
}
