package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is CPU time used so far: by this process (the REST clients,
// nexus and the sled-agents) and by the whole machine (PostgreSQL too).
type cpuSample struct {
	self, machine time.Duration
	ok            bool
}

// cpuUse is the CPU time spent between two samples, per operation.
type cpuUse struct {
	self, machine time.Duration
	ok            bool
}

// clockTick is the unit of /proc/stat: USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

func sampleCPU() cpuSample {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{}
	}
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	machine, err := machineBusy()
	if err != nil {
		return cpuSample{}
	}
	return cpuSample{self: self, machine: machine, ok: true}
}

// machineBusy is the non-idle CPU time of every CPU since boot, from the
// first line of /proc/stat.
func machineBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	// user nice system idle iowait irq softirq steal: all but idle and iowait.
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return time.Duration(busy) * clockTick, nil
}

// per is the CPU spent from a to b, per one of n operations.
func per(a, b cpuSample, n int) cpuUse {
	if !a.ok || !b.ok || n == 0 {
		return cpuUse{}
	}
	return cpuUse{self: (b.self - a.self) / time.Duration(n), machine: (b.machine - a.machine) / time.Duration(n), ok: true}
}

func (u cpuUse) String() string {
	if !u.ok {
		return "not measured"
	}
	return fmt.Sprintf("%.0f µs of CPU on the machine, %.0f µs of it in this process (clients, nexus, sled-agents), %.0f µs elsewhere (PostgreSQL)",
		us(u.machine), us(u.self), us(u.machine-u.self))
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
