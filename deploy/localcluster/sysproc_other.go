//go:build !linux

package main

import "syscall"

// childSysProcAttr: outside Linux there is no parent-death signal; children
// are stopped by the launcher only, so kill it with SIGTERM, not SIGKILL.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

// becomeSubreaper: outside Linux orphaned zones go to init, which reaps
// them.
func becomeSubreaper() error { return nil }

func reap(int) {}
