//! Queries over one connection, shared by the store's pooled reads, the snapshot and
//! `apply` (which reads inside its write transaction).

use std::collections::{BTreeMap, BTreeSet};

use orch_common::ids::JobId;
use orch_common::model::{
    AclPolicy, AclToken, AllocatedResources, Allocation, ClientStatus, Deployment, Evaluation, Job,
    Node, NodeAllocated, SchedulerConfiguration,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Params};
use serde::de::DeserializeOwned;

use super::versions::StoredVersion;
use super::{log_entry, Command, SqlContext, StateError, Table};

/// `(job, group, client status) -> count`, one row of `alloc_status_counts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatusCount {
    pub job_id: JobId,
    pub group: String,
    pub client_status: ClientStatus,
    pub count: u32,
}

/// `query_row` through the connection's statement cache.
fn cached_row<T, P: Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

/// Runs `sql` (selecting `id, json`) and decodes every row.
pub(super) fn query_json<T: DeserializeOwned, P: Params>(
    c: &Connection,
    kind: &'static str,
    sql: &str,
    params: P,
) -> Result<Vec<T>, StateError> {
    let mut stmt = c
        .prepare_cached(sql)
        .ctx(|| format!("preparing a query of {kind}s"))?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .ctx(|| format!("querying {kind}s"))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json) = row.ctx(|| format!("reading a {kind} row"))?;
        out.push(decode(kind, &id, &json)?);
    }
    Ok(out)
}

fn query_one<T: DeserializeOwned, P: Params>(
    c: &Connection,
    kind: &'static str,
    sql: &str,
    params: P,
) -> Result<Option<T>, StateError> {
    Ok(query_json(c, kind, sql, params)?.into_iter().next())
}

pub(crate) fn decode<T: DeserializeOwned>(
    kind: &'static str,
    id: &str,
    json: &str,
) -> Result<T, StateError> {
    serde_json::from_str(json).map_err(|source| StateError::Decode {
        kind,
        id: id.to_string(),
        source,
    })
}

pub(crate) fn job(c: &Connection, id: &str) -> Result<Option<Job>, StateError> {
    query_one(c, "job", "SELECT id, json FROM jobs WHERE id = ?1", [id])
}

/// The stored scheduler configuration, or the defaults when none was ever set.
pub(crate) fn scheduler_config(c: &Connection) -> Result<SchedulerConfiguration, StateError> {
    Ok(query_one(
        c,
        "scheduler configuration",
        "SELECT 'scheduler_config', json FROM scheduler_config WHERE id = 1",
        [],
    )?
    .unwrap_or_default())
}

pub(crate) fn jobs(c: &Connection) -> Result<Vec<Job>, StateError> {
    query_json(c, "job", "SELECT id, json FROM jobs ORDER BY id", [])
}

pub(crate) fn job_versions(c: &Connection, id: &str) -> Result<Vec<Job>, StateError> {
    query_json(
        c,
        "job version",
        "SELECT job_id, json FROM job_versions WHERE job_id = ?1 ORDER BY version DESC",
        [id],
    )
}

pub(crate) fn job_version(
    c: &Connection,
    id: &str,
    version: u64,
) -> Result<Option<Job>, StateError> {
    query_one(
        c,
        "job version",
        "SELECT job_id, json FROM job_versions WHERE job_id = ?1 AND version = ?2",
        params![id, version as i64],
    )
}

/// The highest stored version of a job id (kept across purges), if any.
pub(crate) fn max_job_version(c: &Connection, id: &str) -> Result<Option<u64>, StateError> {
    cached_row(
        c,
        "SELECT MAX(version) FROM job_versions WHERE job_id = ?1",
        [id],
        |r| r.get::<_, Option<i64>>(0),
    )
    .ctx(|| format!("reading the versions of job {id:?}"))
    .map(|v| v.map(|v| v as u64))
}

/// True when `version` of a job id is not stored but a newer one is: it was pruned
/// (`versions`). A job id with no versions stored at all has none pruned.
pub(crate) fn job_version_pruned(
    c: &Connection,
    id: &str,
    version: u64,
) -> Result<bool, StateError> {
    cached_row(
        c,
        "SELECT COALESCE(MAX(version), -1), COALESCE(SUM(version = ?2), 0) \
         FROM job_versions WHERE job_id = ?1",
        params![id, version as i64],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    )
    .ctx(|| format!("looking for version {version} of job {id:?}"))
    .map(|(newest, found)| found == 0 && newest > version as i64)
}

/// How many versions of a job id are stored.
pub(crate) fn job_version_count(c: &Connection, id: &str) -> Result<usize, StateError> {
    cached_row(
        c,
        "SELECT COUNT(*) FROM job_versions WHERE job_id = ?1",
        [id],
        |r| r.get::<_, i64>(0),
    )
    .ctx(|| format!("counting the versions of job {id:?}"))
    .map(|n| n as usize)
}

/// Every stored version of a job id with whether it is stable, newest first (read
/// from the JSON without decoding the jobs).
pub(crate) fn job_version_stability(
    c: &Connection,
    id: &str,
) -> Result<Vec<StoredVersion>, StateError> {
    let context = || format!("reading the versions of job {id:?}");
    let mut stmt = c
        .prepare_cached(
            "SELECT version, COALESCE(json_extract(json, '$.stable'), 0) FROM job_versions \
             WHERE job_id = ?1 ORDER BY version DESC",
        )
        .ctx(context)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(StoredVersion {
                version: r.get::<_, i64>(0)? as u64,
                stable: r.get::<_, bool>(1)?,
            })
        })
        .ctx(context)?;
    rows.collect::<Result<_, _>>().ctx(context)
}

/// The versions of a job that something still needs: those its non-terminal
/// allocations run (stored allocations read their job from `job_versions`) and those
/// its active deployments roll out.
pub(crate) fn job_versions_in_use(c: &Connection, id: &str) -> Result<BTreeSet<u64>, StateError> {
    let context = || format!("reading the versions job {id:?} still runs");
    let mut stmt = c
        .prepare_cached(
            "SELECT json_extract(json, '$.job_version') FROM allocs WHERE job_id = ?1 \
               AND client_status NOT IN ('complete', 'failed', 'lost') \
             UNION SELECT job_version FROM deployments WHERE job_id = ?1 \
               AND status IN ('running', 'paused')",
        )
        .ctx(context)?;
    let rows = stmt
        .query_map([id], |r| r.get::<_, Option<i64>>(0))
        .ctx(context)?;
    let mut out = BTreeSet::new();
    for v in rows {
        if let Some(v) = v.ctx(context)? {
            out.insert(v as u64);
        }
    }
    Ok(out)
}

pub(crate) fn deployment(c: &Connection, id: &str) -> Result<Option<Deployment>, StateError> {
    query_one(
        c,
        "deployment",
        "SELECT id, json FROM deployments WHERE id = ?1",
        [id],
    )
}

pub(crate) fn deployments(c: &Connection) -> Result<Vec<Deployment>, StateError> {
    query_json(
        c,
        "deployment",
        "SELECT id, json FROM deployments ORDER BY create_index DESC, id",
        [],
    )
}

pub(crate) fn deployments_by_job(
    c: &Connection,
    job_id: &str,
) -> Result<Vec<Deployment>, StateError> {
    query_json(
        c,
        "deployment",
        "SELECT id, json FROM deployments WHERE job_id = ?1 ORDER BY create_index DESC, id",
        [job_id],
    )
}

pub(crate) fn latest_deployment(
    c: &Connection,
    job_id: &str,
) -> Result<Option<Deployment>, StateError> {
    query_one(
        c,
        "deployment",
        "SELECT id, json FROM deployments WHERE job_id = ?1 \
         ORDER BY create_index DESC, id LIMIT 1",
        [job_id],
    )
}

pub(crate) fn active_deployments(c: &Connection) -> Result<Vec<Deployment>, StateError> {
    query_json(
        c,
        "deployment",
        "SELECT id, json FROM deployments WHERE status IN ('running', 'paused') \
         ORDER BY create_index, id",
        [],
    )
}

pub(crate) fn eval(c: &Connection, id: &str) -> Result<Option<Evaluation>, StateError> {
    query_one(
        c,
        "evaluation",
        "SELECT id, json FROM evals WHERE id = ?1",
        [id],
    )
}

pub(crate) fn evals(c: &Connection) -> Result<Vec<Evaluation>, StateError> {
    query_json(
        c,
        "evaluation",
        "SELECT id, json FROM evals ORDER BY create_index, id",
        [],
    )
}

pub(crate) fn evals_by_job(c: &Connection, job_id: &str) -> Result<Vec<Evaluation>, StateError> {
    query_json(
        c,
        "evaluation",
        "SELECT id, json FROM evals WHERE job_id = ?1 ORDER BY create_index, id",
        [job_id],
    )
}

pub(crate) fn evals_non_terminal(c: &Connection) -> Result<Vec<Evaluation>, StateError> {
    query_json(
        c,
        "evaluation",
        "SELECT id, json FROM evals WHERE status IN ('pending', 'blocked') \
         ORDER BY create_index, id",
        [],
    )
}

/// The job's newest blocked evaluation, if any.
pub(crate) fn blocked_eval(c: &Connection, job_id: &str) -> Result<Option<Evaluation>, StateError> {
    query_one(
        c,
        "evaluation",
        "SELECT id, json FROM evals WHERE job_id = ?1 AND status = 'blocked' \
         ORDER BY create_index DESC, id DESC LIMIT 1",
        [job_id],
    )
}

/// True when the job has a pending or blocked evaluation.
pub(crate) fn job_has_open_evals(c: &Connection, job_id: &str) -> Result<bool, StateError> {
    cached_row(
        c,
        "SELECT EXISTS (SELECT 1 FROM evals WHERE job_id = ?1 AND status IN ('pending', 'blocked'))",
        [job_id],
        |r| r.get::<_, bool>(0),
    )
    .ctx(|| format!("looking for open evaluations of job {job_id:?}"))
}

/// A job's allocation count and how many of them are pending or running on a client.
pub(crate) fn job_alloc_counts(c: &Connection, job_id: &str) -> Result<(u64, u64), StateError> {
    cached_row(
        c,
        "SELECT COUNT(*), COALESCE(SUM(client_status IN ('pending', 'running')), 0) \
         FROM allocs WHERE job_id = ?1",
        [job_id],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .ctx(|| format!("counting the allocations of job {job_id:?}"))
}

/// The allocation in row `seq` (see `AllocSeqs` for finding it by id).
pub(crate) fn alloc_at(c: &Connection, seq: i64) -> Result<Option<Allocation>, StateError> {
    query_one(
        c,
        "allocation",
        "SELECT id, json FROM allocs WHERE seq = ?1",
        [seq],
    )
}

pub(crate) fn allocs(c: &Connection) -> Result<Vec<Allocation>, StateError> {
    query_json(
        c,
        "allocation",
        "SELECT id, json FROM allocs ORDER BY create_index, id",
        [],
    )
}

pub(crate) fn allocs_by_job(c: &Connection, job_id: &str) -> Result<Vec<Allocation>, StateError> {
    query_json(
        c,
        "allocation",
        "SELECT id, json FROM allocs WHERE job_id = ?1 ORDER BY create_index, id",
        [job_id],
    )
}

/// The allocations at rows `seqs` (rows this connection does not see are skipped),
/// sorted by create index, then id.
pub(crate) fn allocs_at(
    c: &Connection,
    seqs: impl IntoIterator<Item = i64>,
) -> Result<Vec<Allocation>, StateError> {
    let mut out = Vec::new();
    for seq in seqs {
        out.extend(alloc_at(c, seq)?);
    }
    out.sort_by(|a, b| (a.create_index, &a.id).cmp(&(b.create_index, &b.id)));
    Ok(out)
}

/// What one allocation that holds resources uses, from its stored JSON (to fill the
/// mirror's per-node sums on open). Only `resources` is decoded: a million allocations
/// decoded whole took 3 GiB and most of a restart.
pub(crate) fn usage_part(id: &str, json: &str) -> Result<NodeAllocated, StateError> {
    #[derive(serde::Deserialize)]
    struct Usage {
        resources: AllocatedResources,
    }
    let usage: Usage = decode("allocation", id, json)?;
    Ok(NodeAllocated::of_resources(&usage.resources))
}

pub(crate) fn node(c: &Connection, id: &str) -> Result<Option<Node>, StateError> {
    query_one(c, "node", "SELECT id, json FROM nodes WHERE id = ?1", [id])
}

pub(crate) fn nodes(c: &Connection) -> Result<Vec<Node>, StateError> {
    query_json(c, "node", "SELECT id, json FROM nodes ORDER BY id", [])
}

pub(crate) fn acl_policy(c: &Connection, name: &str) -> Result<Option<AclPolicy>, StateError> {
    query_one(
        c,
        "ACL policy",
        "SELECT name, json FROM acl_policies WHERE name = ?1",
        [name],
    )
}

pub(crate) fn acl_policies(c: &Connection) -> Result<Vec<AclPolicy>, StateError> {
    query_json(
        c,
        "ACL policy",
        "SELECT name, json FROM acl_policies ORDER BY name",
        [],
    )
}

pub(crate) fn acl_token(c: &Connection, accessor_id: &str) -> Result<Option<AclToken>, StateError> {
    query_one(
        c,
        "ACL token",
        "SELECT accessor_id, json FROM acl_tokens WHERE accessor_id = ?1",
        [accessor_id],
    )
}

/// The token whose secret hashes to `secret_hash` (a UNIQUE column: one at most).
pub(crate) fn acl_token_by_secret_hash(
    c: &Connection,
    secret_hash: &str,
) -> Result<Option<AclToken>, StateError> {
    query_one(
        c,
        "ACL token",
        "SELECT accessor_id, json FROM acl_tokens WHERE secret_hash = ?1",
        [secret_hash],
    )
}

pub(crate) fn acl_tokens(c: &Connection) -> Result<Vec<AclToken>, StateError> {
    query_json(
        c,
        "ACL token",
        "SELECT accessor_id, json FROM acl_tokens ORDER BY create_index, accessor_id",
        [],
    )
}

/// The index recorded under `name` in the `indexes` table, if any.
pub(crate) fn index_of(c: &Connection, name: &str) -> Result<Option<u64>, StateError> {
    c.query_row("SELECT idx FROM indexes WHERE name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(|i| i as u64))
    .ctx(|| format!("reading the index of {name}"))
}

pub(crate) fn alloc_status_counts(c: &Connection) -> Result<Vec<GroupStatusCount>, StateError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT job_id, group_name, client_status, COUNT(*) FROM allocs \
             GROUP BY job_id, group_name, client_status ORDER BY job_id, group_name",
        )
        .ctx(|| "preparing allocation counts".to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, JobId>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .ctx(|| "counting allocations".to_string())?;
    let mut out = Vec::new();
    for row in rows {
        let (job_id, group, status, count) = row.ctx(|| "reading allocation counts".to_string())?;
        let client_status: ClientStatus =
            decode("allocation status", &job_id, &format!("\"{status}\""))?;
        out.push(GroupStatusCount {
            job_id,
            group,
            client_status,
            count: count as u32,
        });
    }
    Ok(out)
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

pub(crate) fn ids_with_prefix(
    c: &Connection,
    table: Table,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, StateError> {
    let name = table.name();
    let exact: Option<String> = c
        .query_row(
            &format!("SELECT id FROM {name} WHERE id = ?1"),
            [prefix],
            |r| r.get(0),
        )
        .optional()
        .ctx(|| format!("looking up {name} id {prefix:?}"))?;
    if let Some(id) = exact {
        return Ok(vec![id]);
    }
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT id FROM {name} WHERE id LIKE ?1 ESCAPE '\\' ORDER BY id LIMIT ?2"
        ))
        .ctx(|| format!("preparing a prefix lookup in {name}"))?;
    let rows = stmt
        .query_map(params![like_prefix(prefix), limit as i64], |r| {
            r.get::<_, String>(0)
        })
        .ctx(|| format!("looking up {name} ids starting with {prefix:?}"))?;
    let mut out = Vec::new();
    for row in rows {
        // LIKE is case-insensitive for ASCII; ids are matched case-sensitively.
        let id = row.ctx(|| format!("reading a {name} id"))?;
        if id.starts_with(prefix) {
            out.push(id);
        }
    }
    Ok(out)
}

pub(crate) fn table_indexes(c: &Connection) -> Result<BTreeMap<String, u64>, StateError> {
    let mut stmt = c
        .prepare_cached("SELECT name, idx FROM indexes")
        .ctx(|| "preparing the index table query".to_string())?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .ctx(|| "reading the index table".to_string())?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (name, idx) = row.ctx(|| "reading an index row".to_string())?;
        out.insert(name, idx as u64);
    }
    Ok(out)
}

/// The last applied index as seen by this connection (its transaction, if any).
pub(crate) fn last_index(c: &Connection) -> Result<u64, StateError> {
    cached_row(c, "SELECT COALESCE(MAX(idx), 0) FROM indexes", [], |r| {
        r.get::<_, i64>(0)
    })
    .ctx(|| "reading the last applied index".to_string())
    .map(|v| v as u64)
}

pub(crate) fn commands_since(
    c: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Command)>, StateError> {
    // Garbage collection drops old entries: a reader must not miss some silently.
    let truncated_at = match command_log_first(c)? {
        Some(first) => (first > after + 1).then_some(first),
        None => {
            let last = last_index(c)?;
            (last > after).then_some(last + 1)
        }
    };
    if let Some(first) = truncated_at {
        return Err(StateError::LogTruncated { after, first });
    }
    let mut stmt = c
        .prepare_cached("SELECT idx, command FROM command_log WHERE idx > ?1 ORDER BY idx LIMIT ?2")
        .ctx(|| "preparing the command log query".to_string())?;
    let rows = stmt
        .query_map(params![after as i64, limit as i64], |r| {
            let idx = r.get::<_, i64>(0)?;
            let cmd = match r.get_ref(1)? {
                // Entries written before the log was compressed are JSON text.
                ValueRef::Text(json) => Ok(json.to_vec()),
                ValueRef::Blob(entry) => log_entry::decompress(entry),
                other => Err(format!("unexpected column type {:?}", other.data_type())),
            };
            Ok((idx, cmd))
        })
        .ctx(|| "reading the command log".to_string())?;
    let mut out = Vec::new();
    for row in rows {
        let (idx, json) = row.ctx(|| "reading a command log row".to_string())?;
        let json = json.map_err(|reason| StateError::CommandLogEntry {
            index: idx as u64,
            reason,
        })?;
        let cmd = serde_json::from_slice(&json).map_err(|source| StateError::Decode {
            kind: "command",
            id: idx.to_string(),
            source,
        })?;
        out.push((idx as u64, cmd));
    }
    Ok(out)
}

/// The oldest index still in the command log, `None` when it is empty.
pub(crate) fn command_log_first(c: &Connection) -> Result<Option<u64>, StateError> {
    cached_row(c, "SELECT MIN(idx) FROM command_log", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .ctx(|| "reading the oldest command log index".to_string())
    .map(|v| v.map(|i| i as u64))
}
