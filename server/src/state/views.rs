//! The read shapes the store's consumers ask for, beside the store because the store
//! fills each in one read transaction with SQL of its own: `GcView` (what garbage
//! collection decides on, `crate::gc::rules`) and `CatalogView` (what the service
//! catalog is computed from, `crate::catalog`). The consumers import these types from
//! here; the store imports nothing of theirs.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use orch_common::ids::{AllocId, EvalId, JobId, NodeId};
use orch_common::model::{
    Allocation, ClientStatus, DesiredStatus, EvalStatus, Job, JobStatus, JobType, Node, NodeStatus,
};
use rusqlite::Connection;
use serde::de::DeserializeOwned;

use super::error::{SqlContext, StateError};
use super::read::{job_version, node, query_json};

/// What the rules need of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcJob {
    pub id: JobId,
    pub job_type: JobType,
    pub status: JobStatus,
    pub stop: bool,
    pub create_index: u64,
    pub submit_time: u64,
    /// The names of its current version's groups.
    pub groups: Vec<String>,
}

/// What the rules need of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcEval {
    pub id: EvalId,
    pub job_id: JobId,
    pub job_type: JobType,
    pub status: EvalStatus,
    pub modify_time: u64,
    pub create_index: u64,
}

/// What the rules need of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcAlloc {
    pub id: AllocId,
    pub job_id: JobId,
    pub eval_id: EvalId,
    pub node_id: NodeId,
    pub client_status: ClientStatus,
    pub desired_status: DesiredStatus,
    pub modify_time: u64,
    pub create_index: u64,
    /// A replacement was placed (`next_allocation` is set).
    pub replaced: bool,
    pub group: String,
    pub index: u32,
    /// The allocation it replaced, when it carries no reschedule tracker (placed
    /// before allocations carried one): the rescheduler walks that chain instead.
    pub untracked_previous: Option<AllocId>,
}

/// What the rules need of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcNode {
    pub id: NodeId,
    pub status: NodeStatus,
    pub status_updated_at: u64,
}

/// The state the rules look at: one consistent read.
#[derive(Debug, Clone, Default)]
pub struct GcView {
    pub jobs: Vec<GcJob>,
    pub evals: Vec<GcEval>,
    pub allocs: Vec<GcAlloc>,
    pub nodes: Vec<GcNode>,
}

/// What the catalog is computed from, read in one transaction: the running allocations
/// of the jobs that have services, the job versions they run, and their nodes.
#[derive(Debug, Clone, Default)]
pub struct CatalogView {
    /// Running allocations (client `running`, desired `run`) of jobs with services.
    pub allocs: Vec<Allocation>,
    /// `(job id, version)` -> that version of the job, for each allocation above.
    pub jobs: BTreeMap<(JobId, u64), Job>,
    /// Node id -> node, for each allocation above (a missing node is tolerated).
    pub nodes: BTreeMap<NodeId, Node>,
}

/// A status or type column's text as its enum (they are stored as their serde names).
fn parse_name<T: DeserializeOwned>(
    kind: &'static str,
    id: &str,
    name: &str,
) -> Result<T, StateError> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|source| {
        StateError::Decode {
            kind,
            id: id.to_string(),
            source,
        }
    })
}

/// Runs `sql` and turns each row into a `T` with `f` (given the row's first column,
/// its id, for errors).
fn query_rows<T>(
    c: &Connection,
    kind: &'static str,
    sql: &str,
    mut f: impl FnMut(&str, &rusqlite::Row<'_>) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let mut stmt = c
        .prepare(sql)
        .ctx(|| format!("preparing the garbage collection read of {kind}s"))?;
    let mut rows = stmt
        .query([])
        .ctx(|| format!("reading {kind}s for garbage collection"))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().ctx(|| format!("reading a {kind} row"))? {
        let id: String = r.get(0).ctx(|| format!("reading a {kind} id"))?;
        out.push(f(&id, r)?);
    }
    Ok(out)
}

/// What garbage collection looks at, read from columns and a few JSON fields (no
/// object is decoded whole: a pass reads every allocation).
pub(crate) fn gc_view(c: &Connection) -> Result<GcView, StateError> {
    let col = |kind: &'static str, id: &str| {
        let id = id.to_string();
        move || format!("reading {kind} {id:?} for garbage collection")
    };
    let jobs = query_rows(
        c,
        "job",
        "SELECT id, status, create_index, json_extract(json, '$.type'), \
         COALESCE(json_extract(json, '$.stop'), 0), \
         COALESCE(json_extract(json, '$.submit_time'), 0), \
         (SELECT json_group_array(json_extract(g.value, '$.name')) \
            FROM json_each(jobs.json, '$.groups') g) FROM jobs",
        |id, r| {
            let status: String = r.get(1).ctx(col("job", id))?;
            let job_type: Option<String> = r.get(3).ctx(col("job", id))?;
            let groups: Option<String> = r.get(6).ctx(col("job", id))?;
            let groups = match groups {
                Some(text) => serde_json::from_str(&text).map_err(|source| StateError::Decode {
                    kind: "job groups",
                    id: id.to_string(),
                    source,
                })?,
                None => Vec::new(),
            };
            Ok(GcJob {
                groups,
                id: id.into(),
                status: parse_name("job status", id, &status)?,
                create_index: r.get::<_, i64>(2).ctx(col("job", id))? as u64,
                job_type: match job_type {
                    Some(t) => parse_name("job type", id, &t)?,
                    None => Default::default(),
                },
                stop: r.get::<_, bool>(4).ctx(col("job", id))?,
                submit_time: r.get::<_, i64>(5).ctx(col("job", id))? as u64,
            })
        },
    )?;
    let evals = query_rows(
        c,
        "evaluation",
        "SELECT id, job_id, status, json_extract(json, '$.type'), \
         COALESCE(json_extract(json, '$.modify_time'), 0), create_index FROM evals",
        |id, r| {
            let status: String = r.get(2).ctx(col("evaluation", id))?;
            let job_type: Option<String> = r.get(3).ctx(col("evaluation", id))?;
            Ok(GcEval {
                id: id.into(),
                job_id: r.get(1).ctx(col("evaluation", id))?,
                status: parse_name("evaluation status", id, &status)?,
                job_type: match job_type {
                    Some(t) => parse_name("evaluation type", id, &t)?,
                    None => Default::default(),
                },
                modify_time: r.get::<_, i64>(4).ctx(col("evaluation", id))? as u64,
                create_index: r.get::<_, i64>(5).ctx(col("evaluation", id))? as u64,
            })
        },
    )?;
    let allocs = query_rows(
        c,
        "allocation",
        "SELECT id, job_id, node_id, client_status, desired_status, create_index, \
         COALESCE(json_extract(json, '$.eval_id'), ''), \
         COALESCE(json_extract(json, '$.modify_time'), 0), \
         json_extract(json, '$.next_allocation') IS NOT NULL, group_name, \
         COALESCE(json_extract(json, '$.index'), 0), \
         CASE WHEN json_extract(json, '$.reschedule_tracker') IS NULL \
           THEN json_extract(json, '$.previous_allocation') END FROM allocs",
        |id, r| {
            let client: String = r.get(3).ctx(col("allocation", id))?;
            let desired: String = r.get(4).ctx(col("allocation", id))?;
            Ok(GcAlloc {
                id: id.into(),
                job_id: r.get(1).ctx(col("allocation", id))?,
                node_id: r.get(2).ctx(col("allocation", id))?,
                client_status: parse_name("allocation client status", id, &client)?,
                desired_status: parse_name("allocation desired status", id, &desired)?,
                create_index: r.get::<_, i64>(5).ctx(col("allocation", id))? as u64,
                eval_id: r.get(6).ctx(col("allocation", id))?,
                modify_time: r.get::<_, i64>(7).ctx(col("allocation", id))? as u64,
                replaced: r.get::<_, bool>(8).ctx(col("allocation", id))?,
                group: r.get(9).ctx(col("allocation", id))?,
                index: r.get::<_, i64>(10).ctx(col("allocation", id))? as u32,
                untracked_previous: r.get(11).ctx(col("allocation", id))?,
            })
        },
    )?;
    let nodes = query_rows(
        c,
        "node",
        "SELECT id, status, COALESCE(json_extract(json, '$.status_updated_at'), 0) FROM nodes",
        |id, r| {
            let status: String = r.get(1).ctx(col("node", id))?;
            Ok(GcNode {
                id: id.into(),
                status: parse_name("node status", id, &status)?,
                status_updated_at: r.get::<_, i64>(2).ctx(col("node", id))? as u64,
            })
        },
    )?;
    Ok(GcView {
        jobs,
        evals,
        allocs,
        nodes,
    })
}

/// What the service catalog is computed from (`crate::catalog`), in the caller's
/// transaction. Cost: one pass over the jobs table, in SQLite (JSON is looked into,
/// not decoded here), then the allocations of the jobs found, by their job id index;
/// only the running ones are decoded. A cluster's allocations of jobs without
/// services are never read.
pub(crate) fn catalog_view(
    c: &Connection,
    service: Option<&str>,
) -> Result<CatalogView, StateError> {
    // The jobs whose current version has a service (named `service`, when given).
    let mut stmt = c
        .prepare_cached(
            "SELECT id FROM jobs WHERE EXISTS ( \
               SELECT 1 FROM json_each(jobs.json, '$.groups') g, \
                             json_each(g.value, '$.services') s \
               WHERE ?1 IS NULL OR json_extract(s.value, '$.name') = ?1) \
             ORDER BY id",
        )
        .ctx(|| "preparing the read of jobs with services".to_string())?;
    let job_ids = stmt
        .query_map([service], |r| r.get::<_, JobId>(0))
        .ctx(|| "reading jobs with services".to_string())?
        .collect::<Result<Vec<JobId>, _>>()
        .ctx(|| "reading a job with services".to_string())?;
    let mut view = CatalogView::default();
    for job_id in &job_ids {
        view.allocs.extend(query_json::<Allocation, _>(
            c,
            "allocation",
            "SELECT id, json FROM allocs WHERE job_id = ?1 \
             AND client_status = 'running' AND desired_status = 'run' \
             ORDER BY create_index, id",
            [job_id],
        )?);
    }
    for alloc in &view.allocs {
        // Stored allocations carry no job: it is kept once per version.
        if let Entry::Vacant(slot) = view.jobs.entry((alloc.job_id.clone(), alloc.job_version)) {
            if let Some(job) = job_version(c, &alloc.job_id, alloc.job_version)? {
                slot.insert(job);
            }
        }
        if let Entry::Vacant(slot) = view.nodes.entry(alloc.node_id.clone()) {
            if let Some(n) = node(c, &alloc.node_id)? {
                slot.insert(n);
            }
        }
    }
    Ok(view)
}
