//! The state database's schema as an ordered list of migrations. `PRAGMA user_version`
//! records how many have run; each runs once, in its own transaction, on open.
//!
//! Append new migrations at the end; never edit one that has shipped.

use rusqlite::Connection;

use super::StateError;

/// Migration N (1-based) brings the schema from version N-1 to N.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the tables. Objects are stored as JSON plus the columns queries filter on.
    r#"
    CREATE TABLE jobs (
        id               TEXT PRIMARY KEY,
        status           TEXT NOT NULL,
        version          INTEGER NOT NULL,
        create_index     INTEGER NOT NULL,
        modify_index     INTEGER NOT NULL,
        job_modify_index INTEGER NOT NULL,
        json             TEXT NOT NULL
    );
    CREATE TABLE job_versions (
        job_id       TEXT NOT NULL,
        version      INTEGER NOT NULL,
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL,
        PRIMARY KEY (job_id, version)
    );
    CREATE TABLE evals (
        id           TEXT PRIMARY KEY,
        job_id       TEXT NOT NULL,
        status       TEXT NOT NULL,
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL
    );
    CREATE TABLE allocs (
        id             TEXT PRIMARY KEY,
        job_id         TEXT NOT NULL,
        node_id        TEXT NOT NULL,
        client_status  TEXT NOT NULL,
        desired_status TEXT NOT NULL,
        create_index   INTEGER NOT NULL,
        modify_index   INTEGER NOT NULL,
        json           TEXT NOT NULL
    );
    CREATE TABLE nodes (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        status       TEXT NOT NULL,
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL
    );
    CREATE TABLE command_log (
        idx     INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        time    INTEGER NOT NULL
    );
    CREATE TABLE indexes (
        name TEXT PRIMARY KEY,
        idx  INTEGER NOT NULL
    );
    "#,
    // 2: lookups by job, node and status; the group column for job summaries
    // (backfilled from the stored JSON).
    r#"
    CREATE INDEX evals_by_job ON evals (job_id);
    CREATE INDEX evals_by_status ON evals (status);
    CREATE INDEX allocs_by_job ON allocs (job_id);
    CREATE INDEX allocs_by_node ON allocs (node_id, client_status);
    ALTER TABLE allocs ADD COLUMN group_name TEXT NOT NULL DEFAULT '';
    UPDATE allocs SET group_name = COALESCE(json_extract(json, '$.group'), '');
    "#,
    // 3: the cluster-wide scheduler configuration (one row).
    r#"
    CREATE TABLE scheduler_config (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL
    );
    "#,
    // 4: allocations keyed by a sequence number, with no SQLite index on their random
    // id: that index cost one random page write per new allocation (a third of the
    // c1m benchmark's time). The store keeps id -> seq in memory (`AllocSeqs`).
    r#"
    CREATE TABLE allocs_v4 (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        id             TEXT NOT NULL,
        job_id         TEXT NOT NULL,
        node_id        TEXT NOT NULL,
        client_status  TEXT NOT NULL,
        desired_status TEXT NOT NULL,
        create_index   INTEGER NOT NULL,
        modify_index   INTEGER NOT NULL,
        json           TEXT NOT NULL,
        group_name     TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO allocs_v4 (id, job_id, node_id, client_status, desired_status,
                           create_index, modify_index, json, group_name)
        SELECT id, job_id, node_id, client_status, desired_status,
               create_index, modify_index, json, group_name
        FROM allocs ORDER BY create_index, id;
    DROP TABLE allocs;
    ALTER TABLE allocs_v4 RENAME TO allocs;
    CREATE INDEX allocs_by_job ON allocs (job_id);
    CREATE INDEX allocs_by_node ON allocs (node_id, client_status);
    "#,
    // 5: no SQLite index on allocations' node: its rows were spread over the index
    // like random ids (a placement lands on any of thousands of nodes), one random
    // page write per new allocation. The store keeps node -> rows in memory
    // (`AllocIndex`).
    r#"
    DROP INDEX allocs_by_node;
    "#,
    // 6: deployments (one per rolled-out job version).
    r#"
    CREATE TABLE deployments (
        id           TEXT PRIMARY KEY,
        job_id       TEXT NOT NULL,
        job_version  INTEGER NOT NULL,
        status       TEXT NOT NULL,
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL
    );
    CREATE INDEX deployments_by_job ON deployments (job_id, create_index);
    "#,
    // 7: ACL policies and tokens (a token is found by the hash of its secret).
    r#"
    CREATE TABLE acl_policies (
        name         TEXT PRIMARY KEY,
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL
    );
    CREATE TABLE acl_tokens (
        accessor_id  TEXT PRIMARY KEY,
        secret_hash  TEXT NOT NULL UNIQUE,
        create_index INTEGER NOT NULL,
        modify_index INTEGER NOT NULL,
        json         TEXT NOT NULL
    );
    "#,
    // 8: what Raft last applied to this state (one row, written with the entry it
    // describes), so a restarted server resumes applying where its state stands.
    r#"
    CREATE TABLE raft_applied (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        log_id     TEXT NOT NULL,
        membership TEXT NOT NULL
    );
    "#,
];

/// The schema version this binary writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// The schema version of an open database.
pub fn version(conn: &Connection) -> Result<u32, StateError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
        .map_err(|source| StateError::Sql {
            context: "reading the schema version".to_string(),
            source,
        })
}

/// Runs every migration the database has not seen yet.
pub fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    migrate_to(conn, CURRENT_VERSION)
}

/// Runs migrations up to (and including) `target`; tests use it to build old files.
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), StateError> {
    let found = version(conn)?;
    if found > CURRENT_VERSION {
        return Err(StateError::SchemaTooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    for v in (found + 1)..=target.min(CURRENT_VERSION) {
        let sql = MIGRATIONS[(v - 1) as usize];
        let run = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v)?;
            tx.commit()
        };
        run(conn).map_err(|source| StateError::Migrate { version: v, source })?;
        tracing::debug!(version = v, "state schema migrated");
    }
    Ok(())
}
