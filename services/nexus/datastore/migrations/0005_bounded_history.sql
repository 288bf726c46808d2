-- Bounded history (SPEC N14). Ended VMMs, resolved migrations and finished
-- sagas stay in their tables until the prune_history task deletes them
-- after the retention; until then no hot path may read them. The hot paths'
-- queries write each partial index's WHERE exactly as it is written here:
-- SQLite uses a partial index only when the query repeats its terms, and
-- PostgreSQL must be able to prove the query implies them.

-- What each VMM holds of its sled, recorded by placement, so that placement
-- sums a sled's live VMMs without joining their instances (whose table
-- keeps every instance ever deleted). NULL on VMMs placed before this
-- migration: placement then reads the instance, for those VMMs only.
ALTER TABLE vmm ADD COLUMN ncpus BIGINT;
ALTER TABLE vmm ADD COLUMN memory_bytes BIGINT;

-- Live VMMs by sled: placement (what each sled has given away, how busy it
-- is) and the instance watcher; and by instance. They replace vmm_by_sled
-- and vmm_by_instance, which held every VMM ever placed. The live states
-- are listed (see liveVMM in placement.go for why).
CREATE INDEX vmm_live_by_sled ON vmm (sled_id)
    WHERE time_deleted IS NULL AND state IN ('creating', 'starting', 'running', 'stopping', 'stopped', 'rebooting', 'migrating');
CREATE INDEX vmm_live_by_instance ON vmm (instance_id)
    WHERE time_deleted IS NULL AND state IN ('creating', 'starting', 'running', 'stopping', 'stopped', 'rebooting', 'migrating');
DROP INDEX vmm_by_sled;
DROP INDEX vmm_by_instance;

-- Open sagas (unfinished or stuck), oldest first: the operator's saga
-- listing, the claims per replica, and the oldest unfinished saga that
-- holds back pruning.
CREATE INDEX saga_open ON saga (time_created) WHERE state IN ('running', 'unwinding', 'stuck');

-- What pruning looks for, oldest first: finished sagas, ended VMMs, and
-- migrations (resolved or not: few are not).
CREATE INDEX saga_finished ON saga (time_state_changed) WHERE state IN ('done', 'unwound');
CREATE INDEX vmm_ended ON vmm (time_created) WHERE state IN ('destroyed', 'failed', 'saga_unwound');
CREATE INDEX migration_by_time_created ON migration (time_created);

-- What keeps an ended VMM or a resolved migration from being pruned: an
-- instance that still points at it, or a migration not yet resolved that
-- names the VMM as one of its sides. Each holds live rows only.
CREATE INDEX instance_by_active_vmm ON instance (active_propolis_id) WHERE active_propolis_id IS NOT NULL;
CREATE INDEX instance_by_target_vmm ON instance (target_propolis_id) WHERE target_propolis_id IS NOT NULL;
CREATE INDEX instance_by_migration ON instance (migration_id) WHERE migration_id IS NOT NULL;
CREATE INDEX migration_unresolved ON migration (source_propolis_id, target_propolis_id)
    WHERE time_deleted IS NULL AND (source_state IN ('pending', 'in_progress') OR target_state IN ('pending', 'in_progress'));

-- Instances that have a VMM: the instance updater's and the stop wishes'
-- listings, which deleted instances (kept, state destroyed) would
-- otherwise make scan every instance ever created.
CREATE INDEX instance_with_vmm ON instance (id) WHERE time_deleted IS NULL AND state = 'vmm';
