package main

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// replicaJSON is the API's NexusReplica.
type replicaJSON struct {
	ID                string `json:"id"`
	SledID            string `json:"sled_id"`
	ExternalAddress   string `json:"external_address"`
	State             string `json:"state"`
	ZoneConfirmedGone bool   `json:"zone_confirmed_gone"`
	SagasRunning      uint64 `json:"sagas_running"`
	SagasUnwinding    uint64 `json:"sagas_unwinding"`
	SagasStuck        uint64 `json:"sagas_stuck"`
	UpdaterLocks      uint64 `json:"updater_locks"`
	SagasReassigned   uint64 `json:"sagas_reassigned"`
	ReassignedTo      string `json:"reassigned_to"`
	WaitingFor        string `json:"waiting_for"`
}

var replicaColumns = columns[replicaJSON]{
	header: []string{"ID", "SLED", "API", "STATE", "RUNNING", "UNWINDING", "STUCK", "LOCKS", "CONFIRMED-GONE", "REASSIGNED", "WAITING-FOR"},
	row: func(r replicaJSON) []string {
		reassigned := ""
		if r.ReassignedTo != "" {
			reassigned = strconv.FormatUint(r.SagasReassigned, 10) + " to " + r.ReassignedTo
		}
		return []string{r.ID, r.SledID, r.ExternalAddress, r.State, count(r.SagasRunning), count(r.SagasUnwinding),
			count(r.SagasStuck), count(r.UpdaterLocks), boolText(r.ZoneConfirmedGone), reassigned, r.WaitingFor}
	},
}

// sagaJSON is the API's Saga.
type sagaJSON struct {
	ID               string     `json:"id"`
	Template         string     `json:"template"`
	State            string     `json:"state"`
	Owner            string     `json:"owner"`
	OwnerState       string     `json:"owner_state"`
	InstanceID       string     `json:"instance_id"`
	TimeStateChanged *time.Time `json:"time_state_changed"`
}

var sagaColumns = columns[sagaJSON]{
	header: []string{"ID", "TEMPLATE", "STATE", "OWNER", "OWNER-STATE", "INSTANCE", "SINCE"},
	row: func(s sagaJSON) []string {
		return []string{s.ID, s.Template, s.State, s.Owner, s.OwnerState, s.InstanceID, timeText(s.TimeStateChanged)}
	},
}

// stuckSagaJSON is the API's StuckSaga.
type stuckSagaJSON struct {
	ID          string     `json:"id"`
	Template    string     `json:"template"`
	Owner       string     `json:"owner"`
	OwnerState  string     `json:"owner_state"`
	Node        string     `json:"node"`
	Error       string     `json:"error"`
	TimeCreated *time.Time `json:"time_created"`
}

var stuckSagaColumns = columns[stuckSagaJSON]{
	header: []string{"ID", "TEMPLATE", "OWNER", "OWNER-STATE", "NODE", "ERROR", "CREATED"},
	row: func(s stuckSagaJSON) []string {
		return []string{s.ID, s.Template, s.Owner, s.OwnerState, s.Node, s.Error, timeText(s.TimeCreated)}
	},
}

// updaterLockJSON is the API's UpdaterLock.
type updaterLockJSON struct {
	InstanceID      string     `json:"instance_id"`
	InstanceName    string     `json:"instance_name"`
	SagaID          string     `json:"saga_id"`
	Owner           string     `json:"owner"`
	OwnerState      string     `json:"owner_state"`
	TimeSagaCreated *time.Time `json:"time_saga_created"`
}

var updaterLockColumns = columns[updaterLockJSON]{
	header: []string{"INSTANCE", "ID", "SAGA", "OWNER", "OWNER-STATE", "SINCE"},
	row: func(l updaterLockJSON) []string {
		return []string{l.InstanceName, l.InstanceID, l.SagaID, l.Owner, l.OwnerState, timeText(l.TimeSagaCreated)}
	},
}

func count(n uint64) string { return strconv.FormatUint(n, 10) }

func replicaCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "replica", Aliases: []string{"replicas"}, Short: "The nexus replicas (fleet admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the nexus replicas, their states and the sagas and updater locks each holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExtList(s, cmd, replicaColumns, "/v1/system/nexus-replicas")
		},
	})
	return cmd
}

func sagaCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "saga", Aliases: []string{"sagas"}, Short: "Nexus's sagas (fleet admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the unfinished and stuck sagas, with the replica that owns each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExtList(s, cmd, sagaColumns, "/v1/system/sagas")
		},
	}, &cobra.Command{
		Use:   "stuck",
		Short: "List the sagas whose undo kept failing: what they left behind needs an operator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExtList(s, cmd, stuckSagaColumns, "/v1/system/sagas/stuck")
		},
	})
	return cmd
}

func updaterLockCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "updater-lock", Aliases: []string{"updater-locks"}, Short: "Instances' updater locks (fleet admin)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the instances whose updater lock is held, and by which saga of which replica",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExtList(s, cmd, updaterLockColumns, "/v1/system/updater-locks")
		},
	})
	return cmd
}
