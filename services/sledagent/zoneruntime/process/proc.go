package process

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// procStat is what /proc/<pid>/stat says of a process that matters here.
type procStat struct {
	state      byte
	ppid       int
	pgrp       int
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
	pgrp, err := strconv.Atoi(fields[2])
	if err != nil {
		return procStat{}, err
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64) // field 22, starttime
	if err != nil {
		return procStat{}, err
	}
	return procStat{state: fields[0][0], ppid: ppid, pgrp: pgrp, startTicks: ticks}, nil
}

// StartTicks is a process's start time in clock ticks since boot
// (/proc/<pid>/stat, field 22): with its pid, the identity a zone's record
// keeps of its process.
func StartTicks(pid int) (uint64, error) {
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

// zoneMembers returns the live processes of zone id of the runtime over
// root: those whose environment carries the zone's id and a zone directory
// under root (the zone's process sets both and its children inherit them;
// another runtime's zone of the same id, under another root, is not this
// one), those in the process group the zone's process leads (leader, 0
// when unknown) that started no earlier than it (since, in clock ticks
// since boot), and every descendant of any of them, which catches a child
// that cleared its environment. A zombie runs nothing and is not counted;
// a process whose environment this user cannot read is no zone of this
// agent's. A process that both clears its environment and leaves the group
// and its parent escapes: only a cgroup would hold it.
func zoneMembers(root, id string, leader int, since uint64) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	type proc struct {
		pid int
		st  procStat
	}
	var live []proc
	members := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' || st.state == 'X' {
			continue
		}
		live = append(live, proc{pid, st})
		if st.startTicks < since {
			continue
		}
		if (leader > 0 && st.pgrp == leader) || carriesMarker(pid, root, id) {
			members[pid] = true
		}
	}
	// Descendants of members, to a fixed point: the list is in pid order,
	// not parent-first.
	for grew := true; grew; {
		grew = false
		for _, p := range live {
			if !members[p.pid] && members[p.st.ppid] {
				members[p.pid], grew = true, true
			}
		}
	}
	pids := make([]int, 0, len(members))
	for pid := range members {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// carriesMarker reports whether process pid's environment names zone id
// with a zone directory under root.
func carriesMarker(pid int, root, id string) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	var hasID, underRoot bool
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(envZoneID+"=")); ok && string(v) == id {
			hasID = true
		}
		if v, ok := bytes.CutPrefix(kv, []byte(envZoneDir+"=")); ok &&
			strings.HasPrefix(string(v), root+string(os.PathSeparator)) && strings.HasSuffix(string(v), string(os.PathSeparator)+id) {
			underRoot = true
		}
	}
	return hasID && underRoot
}
