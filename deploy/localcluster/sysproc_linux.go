package main

import "syscall"

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
