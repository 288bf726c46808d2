package nexusclient

import (
	"context"
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

// RunRegistrar registers the sled with nexus, retrying until it succeeds,
// then heartbeats every period until ctx ends. A heartbeat answered NOT_FOUND
// (nexus lost the sled) registers again. It never gives up: a sled-agent keeps
// serving its API whether or not nexus is reachable (V8).
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
	ticker := time.NewTicker(cfg.HeartbeatPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
		_, err := client.SledHeartbeat(actx, &nexusv1.SledHeartbeatRequest{SledId: cfg.Sled.GetSledId()})
		cancel()
		switch {
		case err == nil:
		case status.Code(err) == codes.NotFound:
			log.Warn("nexus does not know this sled; registering again")
			if !register() {
				return
			}
		case ctx.Err() == nil:
			log.Warn("heartbeat to nexus failed", zap.Error(err))
		}
	}
}
