package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rackplane/rackplane/services/racktest/chaos"
)

// weighted are the kinds of call a client draws from, each as often as it
// appears: state-changing calls most, so that there is much to check.
var weighted = []chaos.Kind{
	chaos.KindStart, chaos.KindStart, chaos.KindStart,
	chaos.KindStop, chaos.KindStop,
	chaos.KindReboot, chaos.KindReboot,
	chaos.KindForceTerminate,
	chaos.KindMigrate, chaos.KindMigrate,
	chaos.KindView, chaos.KindView, chaos.KindView,
	chaos.KindList, chaos.KindList,
}

// allKinds are every kind of call, in the summary's order.
var allKinds = []chaos.Kind{chaos.KindStart, chaos.KindStop, chaos.KindReboot, chaos.KindForceTerminate,
	chaos.KindMigrate, chaos.KindView, chaos.KindList}

func kindNames(kinds []chaos.Kind) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = string(k)
	}
	return out
}

// parseKinds reads --ops.
func parseKinds(names []string) ([]chaos.Kind, error) {
	var out []chaos.Kind
	for _, n := range names {
		k := chaos.Kind(strings.TrimSpace(n))
		if !slices.Contains(allKinds, k) {
			return nil, fmt.Errorf("--ops: %q is none of %s", n, strings.Join(kindNames(allKinds), ", "))
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--ops: name at least one operation")
	}
	return out, nil
}

// exercise runs the clients and the faults for --duration, then heals
// every fault and waits until every call in flight has ended (each is
// bounded by --call-timeout).
func (h *harness) exercise(ctx context.Context) error {
	h.say("running %d clients for %s with faults %v", h.o.clients, h.o.duration, faultNames(h.o.faults))
	sampling, stopSampling := context.WithCancel(ctx)
	h.tb.Cleanup(stopSampling)
	go h.gens.loop(sampling, h.db, h.o.sample)
	go h.twice.loop(sampling, h, h.o.sample)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for c := range h.o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.client(ctx, c, &stop)
		}()
	}
	faultsDone := make(chan struct{})
	stopFaults := make(chan struct{})
	go func() {
		defer close(faultsDone)
		h.injectFaults(stopFaults)
	}()
	select {
	case <-time.After(h.o.duration):
	case <-ctx.Done():
	}
	close(stopFaults)
	<-faultsDone
	h.say("faults healed; waiting for the clients' last calls (at most %s)", h.o.callTimeout)
	stop.Store(true)
	wg.Wait()
	return ctx.Err()
}

// client calls random operations on random tracked instances, each
// through a replica drawn for it, until stop.
func (h *harness) client(ctx context.Context, id int, stop *atomic.Bool) {
	rnd := rand.New(rand.NewPCG(h.o.seed, uint64(100+id)))
	kinds := slices.DeleteFunc(slices.Clone(weighted), func(k chaos.Kind) bool { return !slices.Contains(h.o.ops, k) })
	for !stop.Load() && ctx.Err() == nil {
		kind := kinds[rnd.IntN(len(kinds))]
		instance := h.instances[rnd.IntN(len(h.instances))]
		replica := h.serving(rnd.IntN(len(h.apis)))
		method, path, body := request(kind, instance, h.sledIDs[rnd.IntN(len(h.sledIDs))])
		if kind == chaos.KindList {
			instance = ""
		}
		call := h.history.Invoke(id, kind, instance)
		callCtx, cancel := context.WithTimeout(ctx, h.o.callTimeout)
		resp, err := h.apis[replica].Do(callCtx, method, path, body)
		cancel()
		if err != nil {
			call.Failed(err)
		} else if err := call.Answered(resp.Status, resp.Body); err != nil {
			h.mu.Lock()
			h.answers = append(h.answers, fmt.Sprintf("client %d through replica %d: %v", id, replica, err))
			h.mu.Unlock()
		}
		if h.o.think > 0 {
			select {
			case <-time.After(time.Duration(rnd.Int64N(int64(h.o.think)))):
			case <-ctx.Done():
			}
		}
	}
}

// request is the REST call of kind on instance; a migration goes to sled.
func request(kind chaos.Kind, instance, sled string) (method, path, body string) {
	switch kind {
	case chaos.KindView:
		return http.MethodGet, "/v1/instances/" + instance, ""
	case chaos.KindList:
		return http.MethodGet, "/v1/instances?project=" + project + "&limit=100", ""
	case chaos.KindMigrate:
		return http.MethodPost, "/v1/instances/" + instance + "/migrate", fmt.Sprintf(`{"dst_sled_id": %q}`, sled)
	}
	return http.MethodPost, "/v1/instances/" + instance + "/" + string(kind), ""
}
