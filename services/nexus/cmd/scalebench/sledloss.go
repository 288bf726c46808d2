package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	nexusconfig "github.com/rackplane/rackplane/services/nexus/config"
)

const (
	// instancesChecked bounds how many of the lost sled's instances are
	// viewed for their sled_reachability.
	instancesChecked = 10
	// lossPoll is how often the sled list is read while waiting for the
	// lost sled to show unreachable, or reachable again.
	lossPoll = 100 * time.Millisecond
	// lostWhy excuses the lost sled's sightings.
	lostWhy = "lost sled"
)

// sledLossFigures are what the sled loss measured.
type sledLossFigures struct {
	Sled string `json:"sled"`
	// RunningInstances is how many instances ran on it when it stopped.
	RunningInstances int `json:"running_instances"`
	// DetectedSeconds is from SIGSTOP to the first sled list showing it
	// unreachable (read every PollSeconds): an upper bound; the list read
	// before showed it reachable DetectedAfterSeconds after SIGSTOP.
	DetectedSeconds      float64 `json:"detected_seconds"`
	DetectedAfterSeconds float64 `json:"detected_after_seconds"`
	PollSeconds          float64 `json:"poll_seconds"`
	// InstancesChecked of its instances were viewed once it showed
	// unreachable; InstancesShownUnreachable said "sled_reachability":
	// "unreachable".
	InstancesChecked          int      `json:"instances_checked"`
	InstancesShownUnreachable int      `json:"instances_shown_unreachable"`
	InstanceAnswers           []string `json:"instance_answers,omitempty"`
	// NewInstances were created while it was unreachable; NewOnLostSled
	// of their VMMs were placed on it, and NewVMMsOnLostSled VMMs of any
	// instance appeared on it from its stop until it was resumed.
	NewInstances      int            `json:"new_instances"`
	NewOnLostSled     int            `json:"new_instances_placed_on_lost_sled"`
	NewVMMsOnLostSled int            `json:"new_vmms_on_lost_sled"`
	NewPlacement      map[string]int `json:"new_instances_by_sled"`
	// BackSeconds is from SIGCONT to the first sled list showing it
	// reachable again (an upper bound, as DetectedSeconds), and
	// BackAfterSeconds to the last one showing it unreachable.
	BackSeconds            float64 `json:"back_seconds"`
	BackAfterSeconds       float64 `json:"back_after_seconds"`
	HeartbeatPeriodSeconds float64 `json:"heartbeat_period_seconds"`
	// InstancesShownReachable of the same instances said "reachable" once
	// it was back.
	InstancesShownReachable int `json:"instances_shown_reachable"`
}

// sledLoss stops the lost sled (SIGSTOP: heartbeats, gRPC and VMMs freeze;
// no record is touched), measures how soon the sled API shows it
// unreachable, checks its instances say so and no new VMM goes to it, then
// lets it go on (SIGCONT) and measures how soon it is reachable again.
func (b *bench) sledLoss(ctx context.Context) error {
	b.watch.setPhase("sled loss")
	f := &b.fig.loss
	f.Sled = b.lostID.String()
	f.HeartbeatPeriodSeconds = b.heartbeatPeriod().Seconds()
	poll := min(lossPoll, b.o.sledPoll)
	f.PollSeconds = poll.Seconds()
	running, err := b.vmmsOn(ctx, b.lostID, "running")
	if err != nil {
		return err
	}
	if len(running) == 0 {
		return fmt.Errorf("the sled to be lost (%s) hosts no running instance: placement put none on it", b.lostID)
	}
	f.RunningInstances = len(running)
	vmmsBefore, err := b.vmmsOn(ctx, b.lostID, "")
	if err != nil {
		return err
	}
	b.say("sled loss: SIGSTOP to sled %s (pid %d), which runs %d instances", b.lostID, b.lost.Pid(), len(running))
	window := b.watch.open(b.lostID, lostWhy)
	stoppedAt := time.Now()
	if err := b.do(b.lost.Pause); err != nil {
		return err
	}
	detectedAt, before, err := b.waitReachability(ctx, b.lostID, "unreachable", poll, max(time.Minute, 10*b.heartbeatTimeout()))
	if err != nil {
		b.do(b.lost.Resume) //nolint:errcheck // the error says what went wrong
		return fmt.Errorf("the stopped sled: %w", err)
	}
	f.DetectedSeconds, f.DetectedAfterSeconds = detectedAt.Sub(stoppedAt).Seconds(), max(0, before.Sub(stoppedAt).Seconds())
	b.say("  shown unreachable %.2fs after it stopped (still reachable at %.2fs)", f.DetectedSeconds, f.DetectedAfterSeconds)

	var instances []string
	for _, inst := range running {
		instances = append(instances, inst)
	}
	instances = instances[:min(len(instances), instancesChecked)]
	f.InstancesChecked = len(instances)
	f.InstancesShownUnreachable, f.InstanceAnswers = b.sledReachabilityOf(ctx, instances, "unreachable")

	created, err := b.createWhileLost(ctx)
	if err != nil {
		b.do(b.lost.Resume) //nolint:errcheck // the error says what went wrong
		return err
	}
	f.NewInstances = len(created)
	placement, err := b.placementOf(ctx, created)
	if err != nil {
		return err
	}
	f.NewPlacement = placement
	f.NewOnLostSled = placement[b.lostID.String()]
	after, err := b.vmmsOn(ctx, b.lostID, "")
	if err != nil {
		return err
	}
	for vmm := range after {
		if _, ok := vmmsBefore[vmm]; !ok {
			f.NewVMMsOnLostSled++
		}
	}

	// The false-report watch must have seen the lost sled unreachable
	// too: it proves the watch sees unreachable sleds at all.
	if err := b.watch.waitExcused(ctx, lostWhy, 10*b.o.sledPoll+10*time.Second); err != nil {
		b.problem("%v", err)
	}

	resumedAt := time.Now()
	if err := b.do(b.lost.Resume); err != nil {
		return err
	}
	backAt, stillOut, err := b.waitReachability(ctx, b.lostID, "reachable", poll, max(time.Minute, 10*b.heartbeatTimeout()))
	if err != nil {
		return fmt.Errorf("the resumed sled: %w", err)
	}
	b.watch.closeAt(window, backAt)
	f.BackSeconds, f.BackAfterSeconds = backAt.Sub(resumedAt).Seconds(), max(0, stillOut.Sub(resumedAt).Seconds())
	f.InstancesShownReachable, _ = b.sledReachabilityOf(ctx, instances, "reachable")
	b.say("  SIGCONT: shown reachable %.2fs later; %d new instances placed %v", f.BackSeconds, len(created), placement)
	// Those placed elsewhere run; one placed on the lost sled may too,
	// now that it answers.
	for _, id := range created {
		if _, err := b.settle(ctx, id, func() bool { return false }); err != nil {
			b.problem("instance %s created while the sled was lost: %v", id, err)
		}
	}
	b.fig.lossEnded = time.Now()
	b.fig.lossBegan = stoppedAt
	return nil
}

// heartbeatTimeout is nexus's sled_heartbeat_timeout as the harness set
// it, or nexus's default.
func (b *bench) heartbeatTimeout() time.Duration {
	if b.o.hbTimeout > 0 {
		return b.o.hbTimeout
	}
	return time.Duration(nexusconfig.Default().SledHeartbeatTimeout)
}

// waitReachability polls the sled list until sled shows want, and returns
// when the answer that showed it arrived, and when the request before it
// was sent (the change happened in between).
func (b *bench) waitReachability(ctx context.Context, sled uuid.UUID, want string, poll, bound time.Duration) (got, before time.Time, err error) {
	deadline := time.Now().Add(bound)
	last := "not listed"
	before = time.Now()
	for {
		sent := time.Now()
		sleds, err := b.listSleds(ctx)
		got := time.Now()
		if err != nil {
			return got, before, err
		}
		for _, s := range sleds {
			if s.ID == sled.String() {
				last = s.Reachability
			}
		}
		if last == want {
			return got, before, nil
		}
		before = sent
		if got.After(deadline) {
			return got, before, fmt.Errorf("sled %s still shown %q, not %q, after %s", sled, last, want, bound)
		}
		if err := pause(ctx, poll); err != nil {
			return got, before, err
		}
	}
}

// sledReachabilityOf views instances and counts those whose
// sled_reachability is want; answers lists the others.
func (b *bench) sledReachabilityOf(ctx context.Context, instances []string, want string) (int, []string) {
	n := 0
	var answers []string
	for _, id := range instances {
		a, err := b.call(ctx, http.MethodGet, "/v1/instances/"+id, "", http.StatusOK)
		if err != nil {
			answers = append(answers, err.Error())
			continue
		}
		var inst instanceRow
		if err := a.JSON(&inst); err != nil {
			answers = append(answers, err.Error())
			continue
		}
		switch {
		case inst.SledReachability == nil:
			answers = append(answers, fmt.Sprintf("%s (%s): no sled_reachability", id, inst.RunState))
		case *inst.SledReachability == want:
			n++
		default:
			answers = append(answers, fmt.Sprintf("%s (%s): sled_reachability %q", id, inst.RunState, *inst.SledReachability))
		}
	}
	return n, answers
}

// createWhileLost creates --loss-instances instances while the lost sled
// is unreachable.
func (b *bench) createWhileLost(ctx context.Context) ([]string, error) {
	ids := make([]string, b.o.lossInstances)
	var retries atomic.Int64
	err := parallel(ctx, len(ids), min(len(ids), b.o.concurrency), func(i int) error {
		id, err := b.createOne(ctx, fmt.Sprintf("lost-sled-%03d", i), &retries)
		ids[i] = id
		return err
	})
	if n := retries.Load(); n > 0 {
		b.problem("%d creates while a sled was lost answered 500 or 503 and were sent again", n)
	}
	return ids, err
}

// vmmsOn lists the VMMs on sled not deleted (in state, if given), from
// nexus's vmm table: VMM id to instance id. An empty state lists every
// VMM record ever placed there, deleted or not.
func (b *bench) vmmsOn(ctx context.Context, sled uuid.UUID, state string) (map[string]string, error) {
	q := `SELECT id, instance_id FROM vmm WHERE sled_id = $1`
	args := []any{sled.String()}
	if state != "" {
		q += ` AND time_deleted IS NULL AND state = $2`
		args = append(args, state)
	}
	rows, err := b.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading nexus's vmm table: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, inst string
		if err := rows.Scan(&id, &inst); err != nil {
			return nil, err
		}
		out[id] = inst
	}
	return out, rows.Err()
}

// placementOf counts the VMMs of instances by sled, from nexus's vmm table
// (every VMM record of theirs, deleted or not).
func (b *bench) placementOf(ctx context.Context, instances []string) (map[string]int, error) {
	if len(instances) == 0 {
		return map[string]int{}, nil
	}
	marks := make([]string, len(instances))
	args := make([]any, len(instances))
	for i, id := range instances {
		marks[i] = fmt.Sprintf("$%d", i+1)
		args[i] = id
	}
	rows, err := b.db.QueryContext(ctx, `SELECT sled_id FROM vmm WHERE instance_id IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading nexus's vmm table: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var sled string
		if err := rows.Scan(&sled); err != nil {
			return nil, err
		}
		out[sled]++
	}
	return out, rows.Err()
}
