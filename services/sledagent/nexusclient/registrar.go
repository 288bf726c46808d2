package nexusclient

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nexusv1 "github.com/rackplane/rackplane/pkg/api/omicron/nexus/v1"
	"github.com/rackplane/rackplane/pkg/backoff"
)

// RegistrarConfig tunes registration and heartbeats.
type RegistrarConfig struct {
	Sled            *nexusv1.RegisterSledRequest
	HeartbeatPeriod time.Duration
	Retry           backoff.Policy
	AttemptTimeout  time.Duration
}

// heartbeatsInFlight bounds the heartbeats a sled-agent has sent and not
// yet seen answered: a nexus that answers slowly still hears the sled
// every period, and one that never answers costs a bounded number of calls
// until each times out.
const heartbeatsInFlight = 4

// RunRegistrar registers the sled with nexus, retrying until it succeeds,
// then heartbeats every period until ctx ends. A heartbeat answered NOT_FOUND
// (nexus lost the sled) registers again. It never gives up: a sled-agent keeps
// serving its API whether or not nexus is reachable (V8).
//
// A heartbeat does not wait for the one before it to be answered. Nexus
// answers one once it is written to its database, and a database slow for
// a few seconds would otherwise hold each sled's next heartbeat back
// until nexus, not hearing from it, called it unreachable (SPEC 6: no
// false reports): the replica that hears a heartbeat counts it at once,
// however long its write takes.
func RunRegistrar(ctx context.Context, client nexusv1.NexusInternalClient, cfg RegistrarConfig, log *zap.Logger) {
	register := func() bool {
		for attempt := 0; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
			_, err := client.RegisterSled(actx, cfg.Sled)
			cancel()
			if err == nil {
				log.Info("registered with nexus", zap.Int("attempts", attempt+1))
				return true
			}
			delay := cfg.Retry.Delay(attempt)
			log.Warn("registering with nexus failed; retrying", zap.Error(err), zap.Int("attempt", attempt+1),
				zap.Duration("retry_in", delay))
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return false
			}
		}
	}
	if !register() {
		return
	}
	type answer struct {
		err error
		// registration is how many registrations came before the
		// heartbeat was sent: a NOT_FOUND from before the last one says
		// nothing about the sled now.
		registration int
	}
	answers := make(chan answer, heartbeatsInFlight)
	inFlight, registrations := 0, 1
	var sent sync.WaitGroup
	defer sent.Wait() // each ends with ctx
	ticker := time.NewTicker(cfg.HeartbeatPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-answers:
			inFlight--
			switch {
			case a.err == nil:
			case status.Code(a.err) == codes.NotFound:
				if a.registration < registrations {
					continue
				}
				log.Warn("nexus does not know this sled; registering again")
				if !register() {
					return
				}
				registrations++
			case ctx.Err() == nil:
				log.Warn("heartbeat to nexus failed", zap.Error(a.err), zap.Int("unanswered", inFlight))
			}
		case <-ticker.C:
			if inFlight == heartbeatsInFlight {
				continue // each ends within its attempt timeout
			}
			inFlight++
			registration := registrations
			sent.Go(func() {
				actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
				defer cancel()
				_, err := client.SledHeartbeat(actx, &nexusv1.SledHeartbeatRequest{SledId: cfg.Sled.GetSledId()})
				answers <- answer{err: err, registration: registration}
			})
		}
	}
}
