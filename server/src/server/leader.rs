//! Leadership: the loops only the Raft leader runs (plan applier, scheduler workers
//! and their reaper, heartbeat expiry, drainer, deployment watcher, garbage
//! collector, autopilot), started when this server becomes leader and stopped the moment it is
//! not. Workers run on the leader only: the plan applier serialises every plan there
//! anyway, and a worker elsewhere would pay a round trip per evaluation and per plan
//! for CPU a 2-core server rarely lacks (one server places 1M allocations in ~28 s).
//!
//! ```text
//!  metrics watch ─► leader of term T, caught up (ensure_linearizable)
//!      └─► on the state writer, between two commands: broker.enable(pending +
//!          blocked evals), heartbeats.restart_from(state) (every node a fresh TTL:
//!          a leader change never marks a healthy node down) ─► start the loops
//!  metrics watch ─► not leader (or a new term) ─► stop=true, await every loop
//!      └─► broker.disable() (on the writer: it ignores what applies after)
//! ```

use std::sync::Arc;
use std::time::Duration;

use orch_common::supervise::{self, Health, Restart};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::EvalBroker;
use crate::config::ServerConfig;
use crate::deployment;
use crate::drainer;
use crate::gc::Collector;
use crate::heartbeat::Heartbeats;
use crate::plan_apply::PlanApplier;
use crate::raft::cluster;
use crate::raft::view::Contacts;
use crate::raft::Raft;
use crate::state::{CommandLog, StateStore};
use crate::worker;

/// What the leader's loops are made of.
#[derive(Clone)]
pub(crate) struct LeaderParts {
    pub num_schedulers: usize,
    pub store: StateStore,
    pub log: CommandLog,
    pub broker: Arc<EvalBroker>,
    pub heartbeats: Heartbeats,
    pub collector: Arc<Collector>,
    pub health: Health,
    /// For autopilot (`raft::cluster::autopilot`).
    pub raft: Raft,
    pub contacts: Contacts,
    pub dead_server_cleanup: Duration,
    pub min_voters: usize,
}

impl LeaderParts {
    pub fn new(
        cfg: &ServerConfig,
        log: &CommandLog,
        broker: &Arc<EvalBroker>,
        heartbeats: &Heartbeats,
        collector: &Arc<Collector>,
        raft: &Raft,
        contacts: &Contacts,
    ) -> LeaderParts {
        LeaderParts {
            num_schedulers: cfg.num_schedulers,
            store: log.store().clone(),
            log: log.clone(),
            broker: broker.clone(),
            heartbeats: heartbeats.clone(),
            collector: collector.clone(),
            health: cfg.health.clone(),
            raft: raft.clone(),
            contacts: contacts.clone(),
            dead_server_cleanup: cfg.raft.dead_server_cleanup,
            min_voters: cfg.bootstrap_expect as usize,
        }
    }
}

/// The loops of one term of leadership.
struct LeaderLoops {
    stop: watch::Sender<bool>,
    applier: PlanApplier,
    loops: Vec<(&'static str, JoinHandle<()>)>,
}

impl LeaderParts {
    /// Loads the broker and the heartbeat timers from the state (between two
    /// commands), then starts every loop.
    async fn take_over(&self) -> Option<LeaderLoops> {
        let (broker, heartbeats) = (self.broker.clone(), self.heartbeats.clone());
        let loaded = self
            .log
            .between_commands(move |store| {
                let evals = store.evals_non_terminal()?;
                let count = evals.len();
                broker.enable(evals);
                let nodes = heartbeats.restart_from(store)?;
                Ok::<_, crate::state::StateError>((count, nodes))
            })
            .await;
        match loaded {
            Ok(Ok((evals, nodes))) => {
                tracing::info!(evals, nodes, "leader: broker and heartbeat timers loaded");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "leader: loading the broker failed");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "leader: the state writer is gone");
                return None;
            }
        }
        Some(self.spawn_loops())
    }

    // Every loop is supervised (docs/operations.md, "Background loops"): a panic is
    // logged with the loop's name and shown by /v1/agent/health. The plan applier
    // and the workers are required (a panic stops the agent); the loops that keep
    // nothing a fresh run cannot rebuild from the store or from the shared heartbeat
    // timers are restarted with backoff.
    fn spawn_loops(&self) -> LeaderLoops {
        let (stop, stop_rx) = watch::channel(false);
        let health = &self.health;
        let applier = PlanApplier::spawn_with(
            self.store.clone(),
            self.log.clone(),
            stop_rx.clone(),
            |run| supervise::spawn_required(health, "server.plan-applier", run),
        );
        let mut loops: Vec<(&'static str, JoinHandle<()>)> = worker::spawn_workers(
            self.num_schedulers,
            self.broker.clone(),
            self.store.clone(),
            self.log.clone(),
            applier.sender(),
            stop_rx.clone(),
            health,
        )
        .into_iter()
        .map(|h| ("scheduler worker", h))
        .collect();
        let restarting = Restart::default();
        let (log, rx) = (self.log.clone(), stop_rx.clone());
        loops.push((
            "drainer",
            supervise::spawn_restarting(
                health,
                "server.drainer",
                restarting,
                stop_rx.clone(),
                move || drainer::run(log.clone(), rx.clone()),
            ),
        ));
        let (log, rx) = (self.log.clone(), stop_rx.clone());
        loops.push((
            "deployment watcher",
            supervise::spawn_restarting(
                health,
                "server.deployment-watcher",
                restarting,
                stop_rx.clone(),
                move || deployment::run(log.clone(), rx.clone()),
            ),
        ));
        let (timers, log, rx) = (self.heartbeats.clone(), self.log.clone(), stop_rx.clone());
        loops.push((
            "heartbeat loop",
            supervise::spawn_restarting(
                health,
                "server.heartbeat",
                restarting,
                stop_rx.clone(),
                move || timers.run(log.clone(), rx.clone()),
            ),
        ));
        loops.push((
            "autopilot",
            tokio::spawn(cluster::autopilot(
                self.raft.clone(),
                self.contacts.clone(),
                self.dead_server_cleanup,
                self.min_voters,
                stop_rx.clone(),
            )),
        ));
        let (collector, rx) = (self.collector.clone(), stop_rx.clone());
        loops.push((
            "garbage collector",
            supervise::spawn_restarting(health, "server.gc", restarting, stop_rx, move || {
                collector.clone().run(rx.clone())
            }),
        ));
        LeaderLoops {
            stop,
            applier,
            loops,
        }
    }

    /// Stops the loops of a term and empties the broker.
    async fn step_down(&self, loops: LeaderLoops) {
        loops.stop.send_replace(true);
        for (name, handle) in loops.loops {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "{name} failed");
            }
        }
        loops.applier.join().await;
        let broker = self.broker.clone();
        if self
            .log
            .between_commands(move |_| broker.disable())
            .await
            .is_err()
        {
            // The writer is gone (shutting down): nothing applies any more.
            self.broker.disable();
        }
    }
}

/// Whether the leader has heard, within `within`, from enough voters to make a
/// majority with itself. (openraft's `millis_since_quorum_ack` is only refreshed
/// when its metrics change, which a leader cut off from everyone does not see.)
fn hears_a_majority(
    parts: &LeaderParts,
    m: &openraft::RaftMetrics<crate::raft::ServerId, crate::raft::ServerNode>,
    within: Duration,
) -> bool {
    let voters: Vec<crate::raft::ServerId> = m.membership_config.membership().voter_ids().collect();
    let needed = voters.len() / 2; // peers that, with this server, are a majority
    let heard = voters
        .iter()
        .filter(|id| **id != m.id)
        .filter(|id| parts.contacts.since(**id).is_some_and(|d| d <= within))
        .count();
    heard >= needed
}

/// Makes this leader a follower. openraft 0.9 has no call for it (a leader ignores
/// an election trigger), so it is handed what Raft says makes any leader step down:
/// a vote request of a higher term, here for server 0, which no server is (ids
/// start at 1), claiming a log no shorter than its own so that it is granted (the
/// request is handled here only, never sent). The term moves on, nobody wins it, and
/// this server stands for election in the next (which it wins only once a majority
/// hears it).
async fn step_down(raft: &Raft) {
    let Ok(term) = raft
        .with_raft_state(|st| st.vote_ref().leader_id().term)
        .await
    else {
        return;
    };
    let last_log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(term + 1, 0), u64::MAX);
    let request =
        openraft::raft::VoteRequest::new(openraft::Vote::new(term + 1, 0), Some(last_log_id));
    match raft.vote(request).await {
        Ok(answer) if answer.vote_granted => {}
        Ok(answer) => tracing::warn!(vote = %answer.vote, "stepping down was refused"),
        Err(e) => tracing::error!(error = %e, "stepping down"),
    }
}

/// How long a new leader waits to have applied everything committed before it takes
/// over; it tries again on the next change of its metrics.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Follows Raft's view of the leadership and runs the leader's loops while this
/// server is leader, until `shutdown`. A leader that has not heard from a majority
/// for `step_down_after` (cut off with a minority) steps down: it stops its loops
/// and stands for election again, which it cannot win until it reaches a majority,
/// so no write is accepted there meanwhile (openraft 0.9 leaves that to us).
pub(crate) fn spawn(
    parts: LeaderParts,
    raft: Raft,
    step_down_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // The term our loops serve, and the loops.
        let mut running: Option<(u64, LeaderLoops)> = None;
        // When this server last became leader (a new leader has heard from nobody yet).
        let mut leading_since: Option<(u64, tokio::time::Instant)> = None;
        loop {
            let (leading_term, cut_off) = {
                let m = metrics.borrow_and_update().clone();
                let leading = m.current_leader == Some(m.id);
                if !leading {
                    leading_since = None;
                } else if leading_since.is_none_or(|(t, _)| t != m.current_term) {
                    leading_since = Some((m.current_term, tokio::time::Instant::now()));
                }
                let settled = leading_since.is_some_and(|(_, at)| at.elapsed() > step_down_after);
                let cut_off = leading && settled && !hears_a_majority(&parts, &m, step_down_after);
                ((leading && !cut_off).then_some(m.current_term), cut_off)
            };
            if cut_off {
                tracing::warn!(
                    after = ?step_down_after,
                    "no majority of servers answered: stepping down"
                );
                step_down(&raft).await;
            }
            match (&running, leading_term) {
                (Some((term, _)), Some(now)) if *term == now => {}
                (None, None) => {}
                _ => {
                    if let Some((term, loops)) = running.take() {
                        tracing::info!(term, "leadership lost: stopping the leader's loops");
                        parts.step_down(loops).await;
                    }
                    if let Some(term) = leading_term {
                        // Everything committed before this term must be applied here
                        // before the broker and timers are read from the state.
                        let caught_up =
                            tokio::time::timeout(CATCH_UP, raft.ensure_linearizable()).await;
                        match caught_up {
                            Ok(Ok(_)) => {
                                tracing::info!(
                                    term,
                                    "leadership gained: starting the leader's loops"
                                );
                                if let Some(loops) = parts.take_over().await {
                                    running = Some((term, loops));
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::info!(term, error = %e, "leadership gained and lost before taking over");
                            }
                            Err(_) => {
                                tracing::warn!(
                                    term,
                                    "leader: not caught up in {CATCH_UP:?}; retrying"
                                );
                            }
                        }
                        // Look again at once: the term may have moved meanwhile.
                        if running.is_none() {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                                _ = shutdown.changed() => {}
                            }
                            if *shutdown.borrow() {
                                break;
                            }
                            continue;
                        }
                    }
                }
            }
            // Also on a clock: a leader cut off from the others sees no metrics change.
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(step_down_after / 4) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        if let Some((_, loops)) = running.take() {
            parts.step_down(loops).await;
        }
    })
}
