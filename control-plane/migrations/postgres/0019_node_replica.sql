-- Which control-plane replica each data-plane node's watch stream is attached to ('' when
-- none): an admin change through one replica also waits for the nodes attached to the
-- other live replicas (`cp_replicas` heartbeat) to acknowledge its snapshot version.
ALTER TABLE nodes ADD COLUMN replica_id TEXT NOT NULL DEFAULT '';
