//! The SQLite schema.

/// Schema version stored in `meta`.
pub(crate) const SCHEMA_VERSION: &str = "1";

/// Tables, indexes and triggers. Entries are append-only: UPDATE and DELETE are refused
/// unless the retention path has opened `retention_gate` inside its own transaction (and it
/// closes it again before committing). Checkpoints and metadata are never changed.
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    body      TEXT,
    leaf_hash BLOB NOT NULL,
    chain     BLOB NOT NULL,
    nodes     BLOB NOT NULL,
    time      TEXT GENERATED ALWAYS AS (json_extract(body, '$.time')) VIRTUAL,
    action    TEXT GENERATED ALWAYS AS (json_extract(body, '$.action')) VIRTUAL,
    actor_id  TEXT GENERATED ALWAYS AS (json_extract(body, '$.actor.id')) VIRTUAL,
    target_id TEXT GENERATED ALWAYS AS (json_extract(body, '$.target.id')) VIRTUAL,
    trace_id  TEXT GENERATED ALWAYS AS (json_extract(body, '$.trace_id')) VIRTUAL,
    outcome   TEXT GENERATED ALWAYS AS (json_extract(body, '$.outcome.result')) VIRTUAL
);
CREATE INDEX IF NOT EXISTS entries_action ON entries(action, seq) WHERE body IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_actor ON entries(actor_id, seq) WHERE body IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_target ON entries(target_id, seq) WHERE body IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_time ON entries(time) WHERE body IS NOT NULL;

CREATE TABLE IF NOT EXISTS checkpoints (
    id        INTEGER PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    time      TEXT NOT NULL,
    note      TEXT NOT NULL,
    hash      BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS checkpoints_size ON checkpoints(tree_size);

CREATE TABLE IF NOT EXISTS segments (
    id           INTEGER PRIMARY KEY,
    start        INTEGER NOT NULL,
    end          INTEGER NOT NULL,
    file         TEXT NOT NULL,
    sha256       BLOB NOT NULL,
    newest_time  TEXT NOT NULL,
    sealed_at    TEXT NOT NULL,
    expired_at   TEXT
) STRICT;

CREATE TABLE IF NOT EXISTS retained_base (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    size     INTEGER NOT NULL,
    chain    BLOB NOT NULL,
    frontier BLOB NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS retention_gate (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    open INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO retention_gate (id, open) VALUES (1, 0);

CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
WHEN (SELECT open FROM retention_gate WHERE id = 1) IS NOT 1
  OR NEW.seq IS NOT OLD.seq OR NEW.leaf_hash IS NOT OLD.leaf_hash
  OR NEW.chain IS NOT OLD.chain OR NEW.nodes IS NOT OLD.nodes OR NEW.body IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
WHEN (SELECT open FROM retention_gate WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
BEGIN
    SELECT RAISE(ABORT, 'audit metadata is immutable');
END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
BEGIN
    SELECT RAISE(ABORT, 'audit metadata is immutable');
END;
CREATE TRIGGER IF NOT EXISTS segments_no_delete BEFORE DELETE ON segments
BEGIN
    SELECT RAISE(ABORT, 'archive segment records are kept');
END;
CREATE TRIGGER IF NOT EXISTS segments_update_only_expiry BEFORE UPDATE ON segments
WHEN (SELECT open FROM retention_gate WHERE id = 1) IS NOT 1
  OR OLD.expired_at IS NOT NULL OR NEW.start IS NOT OLD.start OR NEW.end IS NOT OLD.end
  OR NEW.sha256 IS NOT OLD.sha256 OR NEW.file IS NOT OLD.file
BEGIN
    SELECT RAISE(ABORT, 'archive segment records are kept');
END;
CREATE TRIGGER IF NOT EXISTS retained_base_gate_update BEFORE UPDATE ON retained_base
WHEN (SELECT open FROM retention_gate WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'the retained base changes only through retention');
END;
CREATE TRIGGER IF NOT EXISTS retained_base_gate_insert BEFORE INSERT ON retained_base
WHEN (SELECT open FROM retention_gate WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'the retained base changes only through retention');
END;
"#;
