package main

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// childSysProcAttr puts a child in its own process group, so that Ctrl-C in
// the terminal reaches only the launcher, which then stops the children in
// order; and has the kernel kill the child if the launcher dies, even by
// SIGKILL, so that no orphan keeps the ports and the database. SIGKILL, not
// SIGTERM: the launcher is gone and cannot wait for a graceful stop, and the
// children's state survives a kill by design (ledgers, SQLite, zones).
//
// Pdeathsig fires when the OS thread that started the child exits; the Go
// runtime keeps its threads for the process's life unless a goroutine exits
// while locked to one, which the launcher never does.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// becomeSubreaper makes the launcher the reaper of its descendants'
// orphans: the nexus zones, whose sled-agent has stopped before them.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("becoming the reaper of orphaned zones: %w", err)
	}
	return nil
}

// reap waits for pid if it is the launcher's to wait for (an orphaned zone
// it stopped); any other pid is left alone.
func reap(pid int) {
	var status unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &status, 0, nil)
		if err != unix.EINTR {
			return
		}
	}
}
