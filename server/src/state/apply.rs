//! `StateStore::apply`: the one function that writes SQL. Each command is one
//! transaction that also appends it to `command_log` and records the index of every
//! table it touched; watch channels are bumped only after the commit.
//!
//! A command whose check-and-set fails (`Rejection`) is committed all the same: it is
//! appended to `command_log` at its index and `last_index` moves to it, but no table
//! changes (an `UpdateDeployment`, and an `ApplyPlan` of a job version pruned since it
//! was planned, still store their evaluations). So the log has no gaps
//! and replaying it, or applying it on another server, meets and reports the same
//! rejection at the same index.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use orch_common::api::AllocClientUpdate;
use orch_common::ids::{now_ms, AllocId, DeploymentId, EvalId, JobId, NodeId};
use orch_common::model::{
    AclPolicy, AclToken, Allocation, ClientStatus, Deployment, DeploymentStatus,
    DeploymentStatusUpdate, DrainOutcome, Evaluation, Job, JobStatus, JobType, Node, NodeAllocated,
    NodeStatus, SchedulerConfiguration,
};
use rusqlite::{params, Transaction, TransactionBehavior};
use serde::Serialize;
use serde_json::value::RawValue;

use super::alloc_index::{AllocIndex, NodeRow, RowChange, RowRemoval};
use super::command::{self, DeploymentChange, Rejection};
use super::mark::{self, ReplicationMark};
use super::{
    read, versions, Command, SqlContext, StateError, StateStore, Table, ACL_BOOTSTRAP_INDEX,
};

/// When a deployment group must next show progress: `now` plus the user's
/// `progress_deadline`, saturating (a wrapped sum would be a deadline already past).
fn progress_by(now: u64, deadline: std::time::Duration) -> u64 {
    now.saturating_add(orch_common::duration::millis_saturating(deadline))
}

/// What one applied command changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyOutcome {
    pub index: u64,
    /// Tables whose index moved to `index`.
    pub tables: Vec<Table>,
    /// Set when the command's check failed: its change was refused (see `Rejection`).
    pub rejected: Option<Rejection>,
}

impl StateStore {
    /// Applies `cmd` at `index` (which must be after `last_index()`) with this
    /// machine's clock as its time; see `apply_at`.
    pub fn apply(&self, index: u64, cmd: &Command) -> Result<ApplyOutcome, StateError> {
        self.apply_at(index, now_ms(), cmd)
    }

    /// Applies `cmd` at `index` (which must be after `last_index()`), in one
    /// transaction, durable on return. The only function that writes the database.
    /// `now_ms` is the command's time (create and modify times, deadlines): a
    /// replicated command carries its leader's, so every server writes the same rows.
    pub fn apply_at(
        &self,
        index: u64,
        now_ms: u64,
        cmd: &Command,
    ) -> Result<ApplyOutcome, StateError> {
        self.apply_marked(index, now_ms, cmd, None)
    }

    /// `apply_at` for a command from the Raft log: `mark` (that entry's log id and the
    /// membership) is written in the same transaction.
    pub fn apply_replicated(
        &self,
        index: u64,
        now_ms: u64,
        cmd: &Command,
        mark: &ReplicationMark,
    ) -> Result<ApplyOutcome, StateError> {
        self.apply_marked(index, now_ms, cmd, Some(mark))
    }

    /// Records `mark` for a Raft entry that carries no command (a blank or membership
    /// entry): no table changes, so the last index stays.
    pub fn record_mark(&self, mark: &ReplicationMark) -> Result<(), StateError> {
        let mut guard = self
            .inner
            .writer
            .lock()
            .expect("state writer mutex poisoned");
        let (conn, _) = &mut *guard;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| "starting the transaction for a Raft mark".to_string())?;
        mark::write(&tx, mark)?;
        tx.commit().ctx(|| "committing a Raft mark".to_string())
    }

    fn apply_marked(
        &self,
        index: u64,
        now_ms: u64,
        cmd: &Command,
        mark: Option<&ReplicationMark>,
    ) -> Result<ApplyOutcome, StateError> {
        let mut guard = self
            .inner
            .writer
            .lock()
            .expect("state writer mutex poisoned");
        let (conn, checkpointer) = &mut *guard;
        let last = self.last_index();
        if index <= last {
            return Err(StateError::IndexNotIncreasing { index, last });
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(|| format!("starting the transaction for index {index}"))?;
        let mut w = Writer {
            tx: &tx,
            rows: &self.inner.alloc_index,
            new_seqs: HashMap::new(),
            row_changes: Vec::new(),
            placed_json: Vec::new(),
            index,
            now: now_ms,
            touched: BTreeSet::new(),
            usage: Vec::new(),
            written: Vec::new(),
            removed: Vec::new(),
            deployments_touched: BTreeSet::new(),
        };
        let rejected = w.command(cmd)?;
        let acl_changed = matches!(
            cmd,
            Command::UpsertAclPolicy { .. }
                | Command::DeleteAclPolicies { .. }
                | Command::UpsertAclToken { .. }
                | Command::DeleteAclTokens { .. }
                | Command::BootstrapAcl { .. }
        );
        w.refresh_deployments()?;
        w.append_to_log(cmd)?;
        w.record_indexes()?;
        if let Some(mark) = mark {
            mark::write(&tx, mark)?;
        }
        let tables: Vec<Table> = w.touched.into_iter().collect();
        let usage = w.usage;
        let written = w.written;
        let row_changes = w.row_changes;
        let removed = w.removed;
        let allocs_reaped = !removed.is_empty();
        {
            // The mirror changes with the commit, under its write lock, so a snapshot
            // never pairs the new SQL state with the old memory state (or the reverse).
            let mut mirror = self
                .inner
                .mirror
                .write()
                .expect("state mirror lock poisoned");
            tx.commit().ctx(|| format!("committing index {index}"))?;
            self.inner.alloc_index.apply(row_changes);
            self.inner.alloc_index.remove(removed);
            if allocs_reaped {
                self.inner.alloc_gc_index.store(index, Ordering::SeqCst);
            }
            if acl_changed {
                self.inner.acl_index.store(index, Ordering::SeqCst);
            }
            if mirror.in_flight.contains_any(written.iter()) {
                let in_flight = Arc::make_mut(&mut mirror.in_flight);
                for id in &written {
                    in_flight.remove(id);
                }
            }
            if !usage.is_empty() {
                let sums = Arc::make_mut(&mut mirror.usage);
                for change in usage {
                    let sum = Arc::make_mut(sums.entry(change.node_id).or_default());
                    match change.delta {
                        Delta::Remove(part) => sum.remove_part(&part),
                        Delta::Add(part) => sum.add_part(&part),
                    }
                }
            }
            if tables.contains(&Table::Nodes) {
                mirror.nodes = None;
                mirror.nodes_index = index;
            }
        }
        checkpointer.after_commit(conn, super::BUSY_TIMEOUT);
        drop(guard);
        self.publish(index, &tables);
        Ok(ApplyOutcome {
            index,
            tables,
            rejected,
        })
    }
}

/// Serializes a unit-like enum (statuses) to its string form for an index column.
fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn encode<T: Serialize>(kind: &'static str, id: &str, v: &T) -> Result<String, StateError> {
    serde_json::to_string(v).map_err(|source| StateError::Encode {
        kind,
        id: id.to_string(),
        source,
    })
}

const INSERT_ALLOC: &str = "INSERT INTO allocs (id, job_id, node_id, client_status, \
     desired_status, create_index, modify_index, json, group_name) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

const UPDATE_ALLOC: &str = "UPDATE allocs SET id = ?1, job_id = ?2, node_id = ?3, \
     client_status = ?4, desired_status = ?5, create_index = ?6, modify_index = ?7, \
     json = ?8, group_name = ?9 WHERE seq = ?10";

struct Writer<'a> {
    tx: &'a Transaction<'a>,
    /// Where allocation rows are, as committed before this command.
    rows: &'a AllocIndex,
    /// Rows this command inserted, by allocation id.
    new_seqs: HashMap<AllocId, i64>,
    /// Every allocation row written, for `rows` once the command commits.
    row_changes: Vec<RowChange>,
    /// An `ApplyPlan`'s placements as written to their rows, in the command's order:
    /// its log entry carries these instead of encoding each allocation again.
    placed_json: Vec<Box<RawValue>>,
    index: u64,
    now: u64,
    touched: BTreeSet<Table>,
    /// Changes to the per-node allocation sums, applied to the mirror on commit.
    usage: Vec<UsageChange>,
    /// Ids of the allocations written (or of a rejected plan's placements): no longer
    /// in flight once committed.
    written: Vec<AllocId>,
    /// Allocation rows deleted (garbage collection), for `rows` once committed.
    removed: Vec<RowRemoval>,
    /// Deployments whose allocations this command wrote: their counters are
    /// recomputed before the commit.
    deployments_touched: BTreeSet<DeploymentId>,
}

/// One allocation entering or leaving a node's sum (only resources and ports kept).
struct UsageChange {
    node_id: NodeId,
    delta: Delta,
}

enum Delta {
    Add(NodeAllocated),
    Remove(NodeAllocated),
}

impl Writer<'_> {
    /// Runs a statement through the connection's statement cache: the writer runs the
    /// same few statements thousands of times per plan, and parsing them dominated.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.tx.prepare_cached(sql)?.execute(params)
    }

    /// Applies `cmd`, or returns why its check refused it (having written nothing but,
    /// for an `UpdateDeployment`, its evaluations).
    fn command(&mut self, cmd: &Command) -> Result<Option<Rejection>, StateError> {
        let job_check = match cmd {
            Command::UpsertJob {
                job,
                enforce_index: Some(want),
                ..
            } => Some((&job.id, *want)),
            Command::DeregisterJob {
                job_id,
                enforce_index: Some(want),
                ..
            } => Some((job_id, *want)),
            _ => None,
        };
        if let Some((job_id, want)) = job_check {
            let stored = read::job(self.tx, job_id)?;
            if let Err(rejection) = command::check_job_modify_index(job_id, want, stored.as_ref()) {
                tracing::debug!(
                    job_id = %job_id,
                    ?rejection,
                    "enforce_index does not match; command rejected"
                );
                return Ok(Some(rejection));
            }
        }
        if let Command::UpsertNode { node } = cmd {
            if let Some(stored) = read::node(self.tx, &node.id)? {
                if let Err(rejection) = command::check_node_secret(&stored, node) {
                    tracing::warn!(node_id = %node.id, "registration without the node's secret; command rejected");
                    return Ok(Some(rejection));
                }
            }
        }
        if let Command::BootstrapAcl { .. } = cmd {
            if let Some(index) = read::index_of(self.tx, ACL_BOOTSTRAP_INDEX)? {
                return Ok(Some(Rejection::AclBootstrapped { index }));
            }
        }
        if let Command::UpdateDeployment { change, evals, .. } = cmd {
            let id = &change.deployment_id;
            let rejection = match read::deployment(self.tx, id)? {
                None => {
                    tracing::warn!(deployment_id = %id, "update of an unknown deployment");
                    Some(Rejection::DeploymentNotFound {
                        deployment_id: id.clone(),
                    })
                }
                Some(d) if !d.status.is_active() => {
                    tracing::debug!(deployment_id = %id, status = d.status.as_str(), "deployment no longer active; change dropped");
                    Some(Rejection::DeploymentNotActive {
                        deployment_id: id.clone(),
                        status: d.status,
                    })
                }
                Some(_) => None,
            };
            if rejection.is_some() {
                // The evaluations stand: looking at the job again is never wrong.
                self.upsert_evals(evals)?;
                return Ok(rejection);
            }
        }
        if let Command::ApplyPlan { allocs, evals, .. } = cmd {
            if let Some(rejection) = self.placements_of_pruned_version(allocs)? {
                tracing::warn!(
                    ?rejection,
                    "plan of a job version pruned since; not applied"
                );
                // Their room was held while the plan committed: it is free again.
                self.written.extend(allocs.iter().map(|a| a.id.clone()));
                self.upsert_evals(evals)?;
                return Ok(Some(rejection));
            }
        }
        self.apply_command(cmd)?;
        Ok(None)
    }

    /// The rejection of a plan that places (or updates in place) allocations at a
    /// job version pruned since it was computed, if it does.
    fn placements_of_pruned_version(
        &self,
        allocs: &[Allocation],
    ) -> Result<Option<Rejection>, StateError> {
        let mut seen = BTreeSet::new();
        for a in allocs {
            if seen.insert((&a.job_id, a.job_version))
                && read::job_version_pruned(self.tx, &a.job_id, a.job_version)?
            {
                return Ok(Some(Rejection::PlanOfPrunedVersion {
                    job_id: a.job_id.clone(),
                    version: a.job_version,
                }));
            }
        }
        Ok(None)
    }

    /// Applies a command whose check (if any) passed.
    fn apply_command(&mut self, cmd: &Command) -> Result<(), StateError> {
        match cmd {
            Command::UpsertJob { job, eval, .. } => {
                self.upsert_job(job)?;
                if let Some(eval) = eval {
                    let mut eval = eval.clone();
                    if let Some(stored) = read::job(self.tx, &job.id)? {
                        eval.job_modify_index = stored.job_modify_index;
                    }
                    self.upsert_eval(&eval)?;
                }
                self.refresh_job_status(&job.id)
            }
            Command::DeregisterJob {
                job_id,
                purge,
                eval,
                ..
            } => {
                self.deregister_job(job_id, *purge)?;
                if let Some(eval) = eval {
                    self.upsert_eval(eval)?;
                }
                Ok(())
            }
            Command::UpsertEvals { evals } => self.upsert_evals(evals),
            Command::ApplyPlan {
                allocs,
                stopped,
                evals,
                deployment,
                deployment_updates,
            } => {
                if let Some(d) = deployment {
                    self.insert_deployment(d)?;
                }
                for u in deployment_updates {
                    self.set_deployment_status(u)?;
                }
                self.apply_plan(allocs, stopped, evals)
            }
            Command::UpdateDeployment {
                change,
                revert_to,
                evals,
            } => self.update_deployment(change, revert_to.as_ref(), evals),
            Command::UpsertNode { node } => self.upsert_node(node),
            Command::SetSchedulerConfig { config } => self.set_scheduler_config(config),
            Command::UpsertAclPolicy { policy } => self.upsert_acl_policy(policy),
            Command::DeleteAclPolicies { names } => {
                for name in names {
                    self.exec("DELETE FROM acl_policies WHERE name = ?1", [name])
                        .ctx(|| format!("deleting ACL policy {name:?}"))?;
                }
                Ok(())
            }
            Command::UpsertAclToken { token } | Command::BootstrapAcl { token } => {
                self.upsert_acl_token(token)?;
                if matches!(cmd, Command::BootstrapAcl { .. }) {
                    self.exec(
                        "INSERT INTO indexes (name, idx) VALUES (?1, ?2)",
                        params![ACL_BOOTSTRAP_INDEX, self.index as i64],
                    )
                    .ctx(|| "recording the ACL bootstrap".to_string())?;
                }
                Ok(())
            }
            Command::DeleteAclTokens { accessor_ids } => {
                for id in accessor_ids {
                    self.exec("DELETE FROM acl_tokens WHERE accessor_id = ?1", [id])
                        .ctx(|| format!("deleting ACL token {id:?}"))?;
                }
                Ok(())
            }
            Command::UpdateNodeStatus {
                node_id,
                status,
                evals,
            } => {
                self.update_node(node_id, |n, now| {
                    if n.status != *status {
                        n.status_updated_at = now;
                    }
                    n.status = *status;
                })?;
                self.upsert_evals(evals)
            }
            Command::UpdateNodeEligibility {
                node_id,
                eligibility,
                evals,
            } => {
                self.update_node(node_id, |n, _| n.eligibility = *eligibility)?;
                self.upsert_evals(evals)
            }
            Command::MigrateAllocs { alloc_ids, evals } => {
                for id in alloc_ids {
                    let Some(before) = self.alloc(id)? else {
                        tracing::warn!(alloc_id = %id, "migration of an unknown allocation");
                        continue;
                    };
                    let mut alloc = before.clone();
                    alloc.desired_transition.migrate = true;
                    alloc.modify_index = self.index;
                    alloc.modify_time = self.now;
                    self.write_alloc(&alloc, Some(&before))?;
                }
                self.upsert_evals(evals)
            }
            Command::UpdateAllocsFromClient { updates, evals } => {
                self.update_allocs_from_client(updates)?;
                self.upsert_evals(evals)
            }
            Command::UpdateNodeDrain {
                node_id,
                drain,
                eligibility,
                last_drain,
                evals,
            } => {
                self.update_node(node_id, |n, _| {
                    // The drainer ends a drain it saw; one restarted (or canceled) since
                    // is not its to end.
                    let stale = last_drain.as_ref().is_some_and(|l| {
                        l.outcome == DrainOutcome::Complete
                            && n.drain.as_ref().map(|d| d.started_at) != Some(l.started_at)
                    });
                    if stale {
                        return;
                    }
                    n.drain = drain.clone();
                    if let Some(e) = eligibility {
                        n.eligibility = *e;
                    }
                    if last_drain.is_some() {
                        n.last_drain = last_drain.clone();
                    }
                })?;
                self.upsert_evals(evals)
            }
            Command::Reap {
                jobs,
                evals,
                allocs,
                nodes,
                log_before,
            } => self.reap(jobs, evals, allocs, nodes, *log_before),
        }
    }

    fn append_to_log(&mut self, cmd: &Command) -> Result<(), StateError> {
        let json = match cmd {
            Command::ApplyPlan {
                allocs,
                stopped,
                evals,
                deployment,
                deployment_updates,
            } if allocs.len() == self.placed_json.len() => {
                serde_json::to_vec(&super::log_entry::LoggedPlan::ApplyPlan {
                    allocs: &self.placed_json,
                    stopped,
                    evals,
                    deployment,
                    deployment_updates,
                })
            }
            _ => serde_json::to_vec(cmd),
        };
        let json = json.map_err(|source| StateError::Encode {
            kind: "command",
            id: self.index.to_string(),
            source,
        })?;
        let entry = super::log_entry::compress(&json);
        self.exec(
            "INSERT INTO command_log (idx, command, time) VALUES (?1, ?2, ?3)",
            params![self.index as i64, entry, self.now as i64],
        )
        .ctx(|| format!("appending index {} to the command log", self.index))?;
        Ok(())
    }

    fn record_indexes(&mut self) -> Result<(), StateError> {
        let reaped = (!self.removed.is_empty()).then_some(super::ALLOC_GC_INDEX);
        let names = self
            .touched
            .iter()
            .map(|t| t.name())
            .chain(std::iter::once("command_log"))
            .chain(reaped);
        for name in names {
            self.exec(
                "INSERT INTO indexes (name, idx) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET idx = excluded.idx",
                params![name, self.index as i64],
            )
            .ctx(|| format!("recording index {} for {name}", self.index))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ jobs

    fn write_job(&mut self, job: &Job) -> Result<(), StateError> {
        let json = encode("job", &job.id, job)?;
        self.exec(
            "INSERT INTO jobs (id, status, version, create_index, modify_index, \
                 job_modify_index, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 version = excluded.version, create_index = excluded.create_index, \
                 modify_index = excluded.modify_index, \
                 job_modify_index = excluded.job_modify_index, json = excluded.json",
            params![
                job.id,
                enum_str(&job.status),
                job.version as i64,
                job.create_index as i64,
                job.modify_index as i64,
                job.job_modify_index as i64,
                json
            ],
        )
        .ctx(|| format!("writing job {:?}", job.id.as_str()))?;
        self.touched.insert(Table::Jobs);
        Ok(())
    }

    fn write_job_version(&mut self, job: &Job) -> Result<(), StateError> {
        let json = encode("job version", &job.id, job)?;
        self.exec(
            "INSERT INTO job_versions (job_id, version, create_index, modify_index, json) \
                 VALUES (?1, ?2, ?3, ?3, ?4) \
                 ON CONFLICT (job_id, version) DO UPDATE SET \
                 modify_index = excluded.modify_index, json = excluded.json",
            params![job.id, job.version as i64, self.index as i64, json],
        )
        .ctx(|| {
            format!(
                "writing version {} of job {:?}",
                job.version,
                job.id.as_str()
            )
        })?;
        self.touched.insert(Table::Jobs);
        Ok(())
    }

    /// Registers a job: a changed spec gets the next version (and a `job_versions` row);
    /// an unchanged one keeps its version. Re-registering a stopped job starts it again.
    fn upsert_job(&mut self, submitted: &Job) -> Result<(), StateError> {
        let mut job = submitted.clone();
        if job.name.is_empty() {
            job.name = job.id.to_string();
        }
        job.stop = false;
        job.submit_time = if submitted.submit_time > 0 {
            submitted.submit_time
        } else {
            self.now
        };
        job.modify_index = self.index;
        match read::job(self.tx, &job.id)? {
            Some(existing) => {
                job.create_index = existing.create_index;
                job.status = existing.status;
                job.version = if existing.spec_changed(&job) {
                    existing.version + 1
                } else {
                    existing.version
                };
                job.job_modify_index = if command::registration_unchanged(Some(&existing), &job) {
                    existing.job_modify_index
                } else {
                    self.index
                };
                // Stability is the server's: kept for the same version, never taken
                // from a submitted spec (a revert submits a stable version's copy).
                job.stable = job.version == existing.version && existing.stable;
            }
            None => {
                job.stable = false;
                job.create_index = self.index;
                job.job_modify_index = self.index;
                job.status = JobStatus::Pending;
                // Versions of a purged job with this id are kept: continue after them.
                job.version = match read::max_job_version(self.tx, &job.id)? {
                    Some(v) => v + 1,
                    None => 0,
                };
            }
        }
        let new_version = read::job_version(self.tx, &job.id, job.version)?.is_none()
            || job.job_modify_index == self.index;
        self.write_job(&job)?;
        if new_version {
            self.write_job_version(&job)?;
            self.prune_job_versions(&job)?;
        }
        Ok(())
    }

    /// Deletes the versions of `job` (just stored as its newest) that are no longer
    /// kept (`versions::versions_to_prune`), in the registration's transaction: a job
    /// registered over and over keeps a bounded history, and no version a running
    /// allocation or an active deployment needs is ever deleted.
    fn prune_job_versions(&mut self, job: &Job) -> Result<(), StateError> {
        if read::job_version_count(self.tx, &job.id)? <= versions::JOB_TRACKED_VERSIONS {
            return Ok(());
        }
        let stored = read::job_version_stability(self.tx, &job.id)?;
        let in_use = read::job_versions_in_use(self.tx, &job.id)?;
        // The version an auto-revert of this one would register again: the newest
        // stable older one whose spec differs (decoded only for stable versions).
        let mut revert_target = None;
        for v in stored
            .iter()
            .filter(|v| v.stable && v.version < job.version)
        {
            if let Some(older) = read::job_version(self.tx, &job.id, v.version)? {
                if job.spec_changed(&older) {
                    revert_target = Some(v.version);
                    break;
                }
            }
        }
        let pruned = versions::versions_to_prune(&stored, &in_use, revert_target);
        for version in &pruned {
            self.exec(
                "DELETE FROM job_versions WHERE job_id = ?1 AND version = ?2",
                params![job.id, *version as i64],
            )
            .ctx(|| format!("pruning version {version} of job {:?}", job.id.as_str()))?;
        }
        if !pruned.is_empty() {
            tracing::debug!(job_id = %job.id, ?pruned, "job versions pruned");
        }
        Ok(())
    }

    /// Stops a job (it stays, `stop = true`, status dead) or, with `purge`, deletes its
    /// row. Its allocations are left to the deregister evaluation's plan (the plan
    /// applier is the only writer of allocations); versions stay for their allocations.
    fn deregister_job(&mut self, job_id: &JobId, purge: bool) -> Result<(), StateError> {
        if purge {
            let n = self
                .exec("DELETE FROM jobs WHERE id = ?1", [job_id])
                .ctx(|| format!("purging job {:?}", job_id.as_str()))?;
            if n > 0 {
                self.touched.insert(Table::Jobs);
            }
            return Ok(());
        }
        let Some(mut job) = read::job(self.tx, job_id)? else {
            return Ok(());
        };
        if !job.stop {
            job.stop = true;
            job.job_modify_index = self.index;
        }
        job.status = JobStatus::Dead;
        job.modify_index = self.index;
        self.write_job(&job)
    }

    /// Re-derives a job's status from `stop`, its allocations and open evaluations:
    /// stopped -> dead; any allocation pending/running on its client -> running; a batch
    /// job whose allocations are all terminal with nothing left to evaluate -> dead;
    /// otherwise pending.
    fn refresh_job_status(&mut self, job_id: &JobId) -> Result<(), StateError> {
        let Some(mut job) = read::job(self.tx, job_id)? else {
            return Ok(());
        };
        let (total, live) = read::job_alloc_counts(self.tx, job_id)?;
        let status = if job.stop {
            JobStatus::Dead
        } else if live > 0 {
            JobStatus::Running
        } else if matches!(job.job_type, JobType::Batch | JobType::Sysbatch)
            && total > 0
            && !read::job_has_open_evals(self.tx, job_id)?
        {
            JobStatus::Dead
        } else {
            JobStatus::Pending
        };
        if status != job.status {
            job.status = status;
            job.modify_index = self.index;
            self.write_job(&job)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ evals

    fn upsert_evals(&mut self, evals: &[Evaluation]) -> Result<(), StateError> {
        let mut jobs = BTreeSet::new();
        for eval in evals {
            self.upsert_eval(eval)?;
            jobs.insert(eval.job_id.clone());
        }
        for job_id in jobs {
            self.refresh_job_status(&job_id)?;
        }
        Ok(())
    }

    /// Creates or replaces an evaluation, keeping the create index of an existing one.
    fn upsert_eval(&mut self, submitted: &Evaluation) -> Result<(), StateError> {
        let mut eval = submitted.clone();
        eval.create_index = match read::eval(self.tx, &eval.id)? {
            Some(existing) => existing.create_index,
            None => self.index,
        };
        eval.modify_index = self.index;
        if eval.create_time == 0 {
            eval.create_time = self.now;
        }
        eval.modify_time = self.now;
        let json = encode("evaluation", &eval.id, &eval)?;
        self.exec(
            "INSERT INTO evals (id, job_id, status, create_index, modify_index, json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET job_id = excluded.job_id, \
                 status = excluded.status, modify_index = excluded.modify_index, \
                 json = excluded.json",
            params![
                eval.id,
                eval.job_id,
                enum_str(&eval.status),
                eval.create_index as i64,
                eval.modify_index as i64,
                json
            ],
        )
        .ctx(|| format!("writing evaluation {:?}", eval.id.as_str()))?;
        self.touched.insert(Table::Evals);
        Ok(())
    }

    // ------------------------------------------------------------------ allocs

    /// The row of allocation `id`, committed or written by this command.
    fn seq_of(&self, id: &str) -> Option<i64> {
        self.new_seqs.get(id).copied().or_else(|| self.rows.get(id))
    }

    fn alloc(&self, id: &str) -> Result<Option<Allocation>, StateError> {
        match self.seq_of(id) {
            Some(seq) => read::alloc_at(self.tx, seq),
            None => Ok(None),
        }
    }

    /// Writes `alloc`; `before` is the stored version it replaces (read in this
    /// transaction), so the per-node sums follow. Returns the row's JSON.
    fn write_alloc(
        &mut self,
        alloc: &Allocation,
        before: Option<&Allocation>,
    ) -> Result<Box<RawValue>, StateError> {
        match self.put_alloc(alloc, before, false, false)? {
            Some(json) => Ok(json),
            None => unreachable!("put_alloc writes unless only_new"),
        }
    }

    /// Inserts `alloc` unless its id exists already (then writes nothing and returns
    /// `None`): a new placement needs no read of its id first.
    fn insert_new_alloc(
        &mut self,
        alloc: &Allocation,
    ) -> Result<Option<Box<RawValue>>, StateError> {
        self.put_alloc(alloc, None, true, false)
    }

    /// Writes one allocation row. `by_client`: the change is what its client reported,
    /// so the row keeps its server index and the client's watch does not wake for it.
    fn put_alloc(
        &mut self,
        alloc: &Allocation,
        before: Option<&Allocation>,
        only_new: bool,
        by_client: bool,
    ) -> Result<Option<Box<RawValue>>, StateError> {
        let seq = self.seq_of(&alloc.id);
        if only_new && seq.is_some() {
            return Ok(None);
        }
        let json = serde_json::value::to_raw_value(alloc).map_err(|source| StateError::Encode {
            kind: "allocation",
            id: alloc.id.to_string(),
            source,
        })?;
        let columns = params![
            alloc.id,
            alloc.job_id,
            alloc.node_id,
            alloc.client_status.as_str(),
            alloc.desired_status.as_str(),
            alloc.create_index as i64,
            alloc.modify_index as i64,
            json.get(),
            alloc.group
        ];
        let result = match seq {
            Some(seq) => {
                let mut values = columns.to_vec();
                values.push(&seq);
                self.exec(UPDATE_ALLOC, values.as_slice())
            }
            None => self.exec(INSERT_ALLOC, columns),
        };
        result.ctx(|| format!("writing allocation {:?}", alloc.id.as_str()))?;
        let (seq, new_id) = match seq {
            Some(seq) => (seq, None),
            None => {
                let seq = self.tx.last_insert_rowid();
                self.new_seqs.insert(alloc.id.clone(), seq);
                (seq, Some(alloc.id.clone()))
            }
        };
        let server_index = match before {
            Some(b) if by_client && b.node_id == alloc.node_id => self
                .rows
                .server_index(&alloc.node_id, seq)
                .unwrap_or(alloc.modify_index),
            _ => alloc.modify_index,
        };
        self.row_changes.push(RowChange {
            new_id,
            node_id: alloc.node_id.clone(),
            moved_from: before
                .filter(|b| b.node_id != alloc.node_id)
                .map(|b| b.node_id.clone()),
            row: NodeRow {
                seq,
                modify_index: alloc.modify_index,
                server_index,
                live: !alloc.client_status.is_terminal(),
            },
        });
        self.touched.insert(Table::Allocs);
        self.written.push(alloc.id.clone());
        if let Some(d) = &alloc.deployment_id {
            if !self.deployments_touched.contains(d) {
                self.deployments_touched.insert(d.clone());
            }
        }
        if let Some(b) = before.filter(|b| b.holds_resources()) {
            self.usage.push(UsageChange {
                node_id: b.node_id.clone(),
                delta: Delta::Remove(NodeAllocated::of(b)),
            });
        }
        if alloc.holds_resources() {
            self.usage.push(UsageChange {
                node_id: alloc.node_id.clone(),
                delta: Delta::Add(NodeAllocated::of(alloc)),
            });
        }
        Ok(Some(json))
    }

    /// Commits a plan: placements (new, or updates that keep the client's fields),
    /// stops (desired fields, and `lost` for allocations on down nodes), the
    /// `next_allocation` link on replaced allocations, and the plan's evaluations.
    fn apply_plan(
        &mut self,
        allocs: &[Allocation],
        stopped: &[Allocation],
        evals: &[Evaluation],
    ) -> Result<(), StateError> {
        let mut jobs = BTreeSet::new();
        for stop in stopped {
            let Some(before) = self.alloc(&stop.id)? else {
                tracing::warn!(alloc_id = %stop.id, index = self.index, "plan stops an unknown allocation");
                continue;
            };
            let mut alloc = before.clone();
            alloc.desired_status = stop.desired_status;
            alloc.desired_description = stop.desired_description.clone();
            if stop.client_status == ClientStatus::Lost && !alloc.client_status.is_terminal() {
                alloc.client_status = ClientStatus::Lost;
                if !stop.client_description.is_empty() {
                    alloc.client_description = stop.client_description.clone();
                }
            }
            if stop.next_allocation.is_some() {
                alloc.next_allocation = stop.next_allocation.clone();
            }
            alloc.modify_index = self.index;
            alloc.modify_time = self.now;
            jobs.insert(alloc.job_id.clone());
            self.write_alloc(&alloc, Some(&before))?;
        }
        for placed in allocs {
            let mut alloc = placed.clone();
            alloc.job = None; // served from job_versions at `job_version`
            if alloc.node_name.is_empty() {
                if let Some(node) = read::node(self.tx, &alloc.node_id)? {
                    alloc.node_name = node.name;
                }
            }
            alloc.modify_index = self.index;
            alloc.modify_time = self.now;
            // The plan applier sends new placements with create_index 0 (the store gives
            // every row one >= 1): those are inserted without reading their id first;
            // an id that exists after all takes the update path.
            let inserted = if placed.create_index == 0 {
                alloc.create_index = self.index;
                if alloc.create_time == 0 {
                    alloc.create_time = self.now;
                }
                self.insert_new_alloc(&alloc)?
            } else {
                None
            };
            let json = match inserted {
                Some(json) => json,
                None => self.write_existing_placement(&mut alloc)?,
            };
            self.placed_json.push(json);
            jobs.insert(alloc.job_id.clone());
            if let Some(prev_id) = &alloc.previous_allocation {
                if let Some(mut prev) = self.alloc(prev_id)? {
                    if prev.next_allocation.as_ref() != Some(&alloc.id) {
                        let old = prev.clone();
                        prev.next_allocation = Some(alloc.id.clone());
                        prev.modify_index = self.index;
                        prev.modify_time = self.now;
                        self.write_alloc(&prev, Some(&old))?;
                    }
                }
            }
        }
        for eval in evals {
            self.upsert_eval(eval)?;
            jobs.insert(eval.job_id.clone());
        }
        for job_id in jobs {
            self.refresh_job_status(&job_id)?;
        }
        Ok(())
    }

    /// Writes a placement whose id may exist: an in-place update keeps the client's
    /// fields of the stored row.
    fn write_existing_placement(
        &mut self,
        alloc: &mut Allocation,
    ) -> Result<Box<RawValue>, StateError> {
        let before = self.alloc(&alloc.id)?;
        match before.clone() {
            Some(existing) => {
                // An in-place update: the client owns its fields.
                alloc.create_index = existing.create_index;
                alloc.create_time = existing.create_time;
                alloc.client_status = existing.client_status;
                alloc.client_description = existing.client_description;
                alloc.task_states = existing.task_states;
                alloc.checks = existing.checks;
                if alloc.deployment_id == existing.deployment_id {
                    alloc.deployment_status = existing.deployment_status;
                }
                if alloc.next_allocation.is_none() {
                    alloc.next_allocation = existing.next_allocation;
                }
            }
            None => {
                alloc.create_index = self.index;
                if alloc.create_time == 0 {
                    alloc.create_time = self.now;
                }
            }
        }
        self.write_alloc(alloc, before.as_ref())
    }

    /// Client-reported states: only the client's fields change. Unknown ids are skipped.
    fn update_allocs_from_client(
        &mut self,
        updates: &[AllocClientUpdate],
    ) -> Result<(), StateError> {
        let mut jobs = BTreeSet::new();
        for update in updates {
            let Some(before) = self.alloc(&update.id)? else {
                tracing::warn!(alloc_id = %update.id, "client update for an unknown allocation");
                continue;
            };
            let mut alloc = before.clone();
            alloc.client_status = update.client_status;
            alloc.client_description = update.client_description.clone();
            alloc.task_states = update.task_states.clone();
            alloc.checks = update.checks.clone();
            if let Some(report) = &update.deployment_health {
                let same_deployment = alloc.deployment_id.as_ref() == Some(&report.deployment_id);
                if same_deployment && alloc.deployment_health().is_none() {
                    let status = alloc.deployment_status.get_or_insert_with(Default::default);
                    status.healthy = Some(report.healthy);
                    status.timestamp = report.timestamp;
                }
            }
            alloc.modify_index = self.index;
            alloc.modify_time = self.now;
            jobs.insert(alloc.job_id.clone());
            self.put_alloc(&alloc, Some(&before), false, true)?;
        }
        for job_id in jobs {
            self.refresh_job_status(&job_id)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ deployments

    fn write_deployment(&mut self, d: &Deployment) -> Result<(), StateError> {
        let json = encode("deployment", &d.id, d)?;
        self.exec(
            "INSERT INTO deployments (id, job_id, job_version, status, create_index, \
                 modify_index, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 modify_index = excluded.modify_index, json = excluded.json",
            params![
                d.id,
                d.job_id,
                d.job_version as i64,
                d.status.as_str(),
                d.create_index as i64,
                d.modify_index as i64,
                json
            ],
        )
        .ctx(|| format!("writing deployment {:?}", d.id.as_str()))?;
        self.touched.insert(Table::Deployments);
        Ok(())
    }

    /// Stores a deployment a plan creates (an id already stored is left alone: the
    /// plan is being applied again). Its progress deadlines start now.
    fn insert_deployment(&mut self, submitted: &Deployment) -> Result<(), StateError> {
        if read::deployment(self.tx, &submitted.id)?.is_some() {
            return Ok(());
        }
        let mut d = submitted.clone();
        d.create_index = self.index;
        d.modify_index = self.index;
        d.create_time = self.now;
        d.modify_time = self.now;
        for g in d.task_groups.values_mut() {
            if g.require_progress_by.is_none() && !g.progress_deadline.is_zero() {
                g.require_progress_by = Some(progress_by(self.now, g.progress_deadline));
            }
        }
        self.write_deployment(&d)
    }

    /// A plan's status change of an older deployment; only an active one changes.
    fn set_deployment_status(&mut self, u: &DeploymentStatusUpdate) -> Result<(), StateError> {
        let Some(mut d) = read::deployment(self.tx, &u.deployment_id)? else {
            return Ok(());
        };
        if !d.status.is_active() {
            return Ok(());
        }
        d.status = u.status;
        d.status_description = u.status_description.clone();
        d.modify_index = self.index;
        d.modify_time = self.now;
        self.write_deployment(&d)
    }

    /// `Command::UpdateDeployment`: see there.
    fn update_deployment(
        &mut self,
        change: &DeploymentChange,
        revert_to: Option<&Job>,
        evals: &[Evaluation],
    ) -> Result<(), StateError> {
        // `command` checked that it is stored and active.
        let Some(mut d) = read::deployment(self.tx, &change.deployment_id)? else {
            return self.upsert_evals(evals);
        };
        let touches_allocs = !change.alloc_health.is_empty() || !change.promote.is_empty();
        let allocs = if touches_allocs {
            read::allocs_by_job(self.tx, &d.job_id)?
        } else {
            Vec::new()
        };
        for (alloc_id, healthy) in &change.alloc_health {
            let Some(before) = allocs.iter().find(|a| &a.id == alloc_id) else {
                continue;
            };
            if before.deployment_id.as_ref() != Some(&d.id) {
                continue;
            }
            let mut alloc = before.clone();
            let status = alloc.deployment_status.get_or_insert_with(Default::default);
            status.healthy = Some(*healthy);
            status.timestamp = self.now;
            alloc.modify_index = self.index;
            alloc.modify_time = self.now;
            self.write_alloc(&alloc, Some(before))?;
        }
        for group in &change.promote {
            let Some(g) = d.task_groups.get_mut(group) else {
                continue;
            };
            if g.promoted {
                continue;
            }
            g.promoted = true;
            for before in allocs.iter().filter(|a| {
                &a.group == group && a.deployment_id.as_ref() == Some(&d.id) && a.is_canary()
            }) {
                let mut alloc = before.clone();
                if let Some(s) = alloc.deployment_status.as_mut() {
                    s.canary = false;
                }
                alloc.modify_index = self.index;
                alloc.modify_time = self.now;
                self.write_alloc(&alloc, Some(before))?;
            }
        }
        if let Some((status, description)) = &change.status {
            // A resumed deployment gets its whole progress deadline again: time spent
            // paused is not a lack of progress.
            if d.status == DeploymentStatus::Paused && *status == DeploymentStatus::Running {
                for g in d.task_groups.values_mut() {
                    if !g.progress_deadline.is_zero() {
                        g.require_progress_by = Some(progress_by(self.now, g.progress_deadline));
                    }
                }
            }
            d.status = *status;
            d.status_description = description.clone();
        }
        if change.mark_stable {
            self.mark_version_stable(&d.job_id, d.job_version)?;
        }
        d.modify_index = self.index;
        d.modify_time = self.now;
        self.write_deployment(&d)?;
        // A revert only while the job is still at the deployment's version: a newer
        // version registered since (whose plan cancels this deployment) is kept.
        let revert_to = match revert_to {
            Some(job) => match read::job(self.tx, &d.job_id)? {
                Some(current) if current.version == d.job_version && !current.stop => Some(job),
                _ => {
                    tracing::info!(deployment_id = %d.id, "job moved on since the deployment; revert dropped");
                    None
                }
            },
            None => None,
        };
        if let Some(job) = revert_to {
            self.upsert_job(job)?;
            self.refresh_job_status(&job.id)?;
            let stored = read::job(self.tx, &job.id)?;
            let mut evals = evals.to_vec();
            for e in evals.iter_mut().filter(|e| e.job_id == job.id) {
                if let Some(stored) = &stored {
                    e.job_modify_index = stored.job_modify_index;
                }
            }
            return self.upsert_evals(&evals);
        }
        self.upsert_evals(evals)
    }

    /// A deployment of `version` succeeded: the version (and the job, when that is
    /// still its version) becomes stable.
    fn mark_version_stable(&mut self, job_id: &JobId, version: u64) -> Result<(), StateError> {
        if let Some(mut v) = read::job_version(self.tx, job_id, version)? {
            if !v.stable {
                v.stable = true;
                self.write_job_version(&v)?;
            }
        }
        if let Some(mut job) = read::job(self.tx, job_id)? {
            if job.version == version && !job.stable {
                job.stable = true;
                job.modify_index = self.index;
                self.write_job(&job)?;
            }
        }
        Ok(())
    }

    /// Recomputes the counters of the deployments whose allocations this command
    /// wrote, from those allocations: placed, healthy and unhealthy instances and the
    /// canaries placed. An instance newly healthy moves the progress deadline. An
    /// ended deployment keeps the counts it ended with: its allocations keep its id for
    /// the rest of their lives, and every later status report of theirs would
    /// otherwise read all of the job's allocations again.
    fn refresh_deployments(&mut self) -> Result<(), StateError> {
        let ids = std::mem::take(&mut self.deployments_touched);
        let mut by_job: HashMap<JobId, Vec<Allocation>> = HashMap::new();
        for id in ids {
            let Some(mut d) = read::deployment(self.tx, &id)? else {
                continue;
            };
            if !d.status.is_active() {
                continue;
            }
            if !by_job.contains_key(&d.job_id) {
                let allocs = read::allocs_by_job(self.tx, &d.job_id)?;
                by_job.insert(d.job_id.clone(), allocs);
            }
            let allocs = &by_job[&d.job_id];
            let before = d.clone();
            for (name, g) in d.task_groups.iter_mut() {
                let mine: Vec<&Allocation> = allocs
                    .iter()
                    .filter(|a| &a.group == name && a.deployment_id.as_ref() == Some(&id))
                    .collect();
                let healthy = mine
                    .iter()
                    .filter(|a| a.deployment_health() == Some(true))
                    .count() as u32;
                if healthy > g.healthy_allocs && !g.progress_deadline.is_zero() {
                    g.require_progress_by = Some(progress_by(self.now, g.progress_deadline));
                }
                g.placed_allocs = mine.len() as u32;
                g.healthy_allocs = healthy;
                g.unhealthy_allocs = mine
                    .iter()
                    .filter(|a| a.deployment_health() == Some(false))
                    .count() as u32;
                for a in mine.iter().filter(|a| a.is_canary()) {
                    if !g.placed_canaries.contains(&a.id) {
                        g.placed_canaries.push(a.id.clone());
                    }
                }
            }
            if d != before {
                d.modify_index = self.index;
                d.modify_time = self.now;
                self.write_deployment(&d)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ garbage

    /// Garbage collection. Each object is checked again against the state this
    /// command sees (the collector decided on an older snapshot): an allocation must
    /// be terminal on its client, an evaluation terminal, a job dead with nothing
    /// pending or running, a node down with nothing pending or running on it. What is
    /// gone already, or no longer qualifies, is skipped. Terminal allocations hold no
    /// resources, so the per-node sums do not change.
    fn reap(
        &mut self,
        jobs: &[JobId],
        evals: &[EvalId],
        allocs: &[AllocId],
        nodes: &[NodeId],
        log_before: u64,
    ) -> Result<(), StateError> {
        for id in allocs {
            let Some(seq) = self.seq_of(id) else { continue };
            let Some(alloc) = read::alloc_at(self.tx, seq)? else {
                continue;
            };
            if !alloc.client_status.is_terminal() {
                tracing::warn!(alloc_id = %id, "not collecting an allocation that is not terminal");
                continue;
            }
            self.exec("DELETE FROM allocs WHERE seq = ?1", [seq])
                .ctx(|| format!("deleting allocation {:?}", id.as_str()))?;
            self.removed.push(RowRemoval {
                id: id.clone(),
                node_id: alloc.node_id,
                seq,
            });
            self.touched.insert(Table::Allocs);
        }
        for id in evals {
            let Some(eval) = read::eval(self.tx, id)? else {
                continue;
            };
            if !eval.status.is_terminal() {
                tracing::warn!(eval_id = %id, "not collecting an evaluation that is not terminal");
                continue;
            }
            self.exec("DELETE FROM evals WHERE id = ?1", [id])
                .ctx(|| format!("deleting evaluation {:?}", id.as_str()))?;
            self.touched.insert(Table::Evals);
        }
        for id in jobs {
            let Some(job) = read::job(self.tx, id)? else {
                continue;
            };
            let (_, live) = read::job_alloc_counts(self.tx, id)?;
            if job.status != JobStatus::Dead || live > 0 || read::job_has_open_evals(self.tx, id)? {
                tracing::warn!(job_id = %id, "not collecting a job that is not dead");
                continue;
            }
            // One line per table that belongs to a job.
            for sql in [
                "DELETE FROM jobs WHERE id = ?1",
                "DELETE FROM job_versions WHERE job_id = ?1",
                "DELETE FROM deployments WHERE job_id = ?1",
            ] {
                self.exec(sql, [id])
                    .ctx(|| format!("deleting job {:?}", id.as_str()))?;
            }
            self.touched.insert(Table::Jobs);
            self.touched.insert(Table::Deployments);
        }
        for id in nodes {
            let Some(node) = read::node(self.tx, id)? else {
                continue;
            };
            let live = self.rows.node_rows(id).iter().any(|r| r.live);
            if node.status != NodeStatus::Down || live {
                tracing::warn!(node_id = %id, "not collecting a node that is not down and empty");
                continue;
            }
            self.exec("DELETE FROM nodes WHERE id = ?1", [id])
                .ctx(|| format!("deleting node {:?}", id.as_str()))?;
            self.touched.insert(Table::Nodes);
        }
        if log_before > 0 {
            self.exec(
                "DELETE FROM command_log WHERE idx < ?1",
                [log_before as i64],
            )
            .ctx(|| format!("dropping command log entries before index {log_before}"))?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ nodes

    fn upsert_acl_policy(&mut self, submitted: &AclPolicy) -> Result<(), StateError> {
        let mut policy = submitted.clone();
        policy.create_index =
            read::acl_policy(self.tx, &policy.name)?.map_or(self.index, |p| p.create_index);
        policy.modify_index = self.index;
        let json = encode("ACL policy", &policy.name, &policy)?;
        self.exec(
            "INSERT INTO acl_policies (name, create_index, modify_index, json) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE SET \
                 modify_index = excluded.modify_index, json = excluded.json",
            params![
                policy.name,
                policy.create_index as i64,
                policy.modify_index as i64,
                json
            ],
        )
        .ctx(|| format!("writing ACL policy {:?}", policy.name))?;
        Ok(())
    }

    fn upsert_acl_token(&mut self, submitted: &AclToken) -> Result<(), StateError> {
        let mut token = submitted.clone();
        token.create_index =
            read::acl_token(self.tx, &token.accessor_id)?.map_or(self.index, |t| t.create_index);
        token.modify_index = self.index;
        let json = encode("ACL token", &token.accessor_id, &token)?;
        self.exec(
            "INSERT INTO acl_tokens (accessor_id, secret_hash, create_index, modify_index, \
                 json) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (accessor_id) DO UPDATE SET \
                 secret_hash = excluded.secret_hash, modify_index = excluded.modify_index, \
                 json = excluded.json",
            params![
                token.accessor_id,
                token.secret_hash,
                token.create_index as i64,
                token.modify_index as i64,
                json
            ],
        )
        .ctx(|| format!("writing ACL token {:?}", token.accessor_id))?;
        Ok(())
    }

    fn write_node(&mut self, node: &Node) -> Result<(), StateError> {
        let json = encode("node", &node.id, node)?;
        self.exec(
            "INSERT INTO nodes (id, name, status, create_index, modify_index, json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 status = excluded.status, create_index = excluded.create_index, \
                 modify_index = excluded.modify_index, json = excluded.json",
            params![
                node.id,
                node.name,
                enum_str(&node.status),
                node.create_index as i64,
                node.modify_index as i64,
                json
            ],
        )
        .ctx(|| format!("writing node {:?}", node.id.as_str()))?;
        self.touched.insert(Table::Nodes);
        Ok(())
    }

    /// Replaces the scheduler configuration; it keeps its first create index.
    fn set_scheduler_config(&mut self, config: &SchedulerConfiguration) -> Result<(), StateError> {
        let mut config = config.clone();
        config.create_index = match read::scheduler_config(self.tx)?.create_index {
            0 => self.index,
            first => first,
        };
        config.modify_index = self.index;
        let json = encode("scheduler configuration", "scheduler_config", &config)?;
        self.exec(
            "INSERT INTO scheduler_config (id, create_index, modify_index, json) \
                 VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET modify_index = excluded.modify_index, \
                 json = excluded.json",
            params![config.create_index as i64, config.modify_index as i64, json],
        )
        .ctx(|| "writing the scheduler configuration".to_string())?;
        Ok(())
    }

    /// Registers or re-fingerprints a node; an existing node keeps its eligibility
    /// (an operator's choice) and create index.
    fn upsert_node(&mut self, submitted: &Node) -> Result<(), StateError> {
        let mut node = submitted.clone();
        match read::node(self.tx, &node.id)? {
            Some(existing) => {
                node.create_index = existing.create_index;
                // Set by users and the drainer, not by the client's fingerprint.
                node.eligibility = existing.eligibility;
                node.drain = existing.drain;
                node.last_drain = existing.last_drain;
                if node.status != existing.status {
                    node.status_updated_at = self.now;
                } else if node.status_updated_at == 0 {
                    node.status_updated_at = existing.status_updated_at;
                }
            }
            None => {
                node.create_index = self.index;
                if node.status_updated_at == 0 {
                    node.status_updated_at = self.now;
                }
            }
        }
        node.modify_index = self.index;
        self.write_node(&node)
    }

    fn update_node(
        &mut self,
        node_id: &NodeId,
        change: impl FnOnce(&mut Node, u64),
    ) -> Result<(), StateError> {
        let Some(mut node) = read::node(self.tx, node_id)? else {
            tracing::warn!(
                node_id = %node_id,
                index = self.index,
                "update for an unknown node"
            );
            return Ok(());
        };
        change(&mut node, self.now);
        node.modify_index = self.index;
        self.write_node(&node)
    }
}
