package process

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procStat is what /proc/<pid>/stat says of a process that matters here.
type procStat struct {
	state      byte
	ppid       int
	startTicks uint64
}

// readStat reads /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so the fields after it are counted from its last
// ')'.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	// From field 3 (state) on.
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStat{}, err
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64) // field 22, starttime
	if err != nil {
		return procStat{}, err
	}
	return procStat{state: fields[0][0], ppid: ppid, startTicks: ticks}, nil
}

// startTicks is a process's start time in clock ticks since boot.
func startTicks(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.startTicks, err
}

// alive reports whether the process pid, started at ticks, still runs: the
// pid exists, is not a zombie, and was started at that very time (a pid
// recycled for another process has another start time).
func alive(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := readStat(pid)
	return err == nil && st.startTicks == ticks && st.state != 'Z' && st.state != 'X'
}

// zoneMarker is the environment entry every process of a zone carries: the
// zone's process sets it and its children inherit it. It is how the
// runtime finds all of a zone's processes, not only the one it started: a
// shell's children, a process that left the zone's process group, and a
// process started by an agent killed before it could record the pid.
func zoneMarker(id string) []byte { return []byte("RACKPLANE_ZONE_ID=" + id) }

// zoneMembers returns the live processes that carry zone id's marker and
// started at or after since (clock ticks since boot; 0 for any time). A
// zombie runs nothing and is not counted; a process whose environment this
// user cannot read is not a zone of this agent's.
func zoneMembers(id string, since uint64) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	marker := zoneMarker(id)
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' || st.state == 'X' || st.startTicks < since {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, marker) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
