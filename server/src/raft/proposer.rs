//! How the leader proposes: `CommandLog::submit` hands each command to the
//! `RaftProposer`, whose one task passes them to openraft in call order (so
//! `submit_later` keeps its promise that commands commit in the order they were
//! queued). Each proposal carries a random id under which its submitter waits
//! (`Waiting`); the state writer answers it as soon as the entry is applied here. A
//! server that is not the leader answers `NotLeader` with the leader's HTTP address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot};

use super::{Proposal, Raft};
use crate::state::{ApplyOutcome, Command, LogError, Proposer, StateError};

type Reply = oneshot::Sender<Result<ApplyOutcome, LogError>>;

/// Submitters waiting for their proposals, by proposal id; shared with the state
/// machine, which answers them once their entry is applied.
#[derive(Clone, Default)]
pub struct Waiting {
    replies: Arc<Mutex<HashMap<u64, Reply>>>,
}

impl Waiting {
    fn insert(&self, id: u64, reply: Reply) {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, reply);
    }

    fn take(&self, id: u64) -> Option<Reply> {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }

    /// Answers the submitter of proposal `id`, if it waits here (the proposal was
    /// made by this server since it started).
    pub fn answer(&self, id: u64, result: Result<ApplyOutcome, StateError>) {
        if id == 0 {
            return;
        }
        if let Some(reply) = self.take(id) {
            let _ = reply.send(result.map_err(|e| {
                if e.is_storage_failure() {
                    LogError::Apply(e)
                } else {
                    LogError::Failed(e.to_string())
                }
            }));
        }
    }

    fn fail(&self, id: u64, error: LogError) {
        if let Some(reply) = self.take(id) {
            let _ = reply.send(Err(error));
        }
    }
}

/// Proposes commands to the local Raft instance, in order.
pub struct RaftProposer {
    queue: mpsc::UnboundedSender<(Command, Reply)>,
}

impl RaftProposer {
    /// Starts the proposing task; a write not committed and applied within
    /// `commit_timeout` (no quorum) is answered with a `Replication` error (it may
    /// still commit later, as with any consensus system when the answer is lost).
    pub fn spawn(raft: Raft, waiting: Waiting, commit_timeout: Duration) -> RaftProposer {
        let (queue, mut rx) = mpsc::unbounded_channel::<(Command, Reply)>();
        tokio::spawn(async move {
            while let Some((command, reply)) = rx.recv().await {
                // Never 0 (no id: an entry from before ids, or a test's).
                let id = (uuid::Uuid::new_v4().as_u64_pair().0).max(1);
                waiting.insert(id, reply);
                let proposal = Proposal {
                    time_ms: orch_common::ids::now_ms(),
                    command,
                    id,
                };
                match raft.client_write_ff(proposal).await {
                    Ok(answer) => {
                        let waiting = waiting.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(commit_timeout, answer).await {
                                Err(_) => waiting.fail(
                                    id,
                                    LogError::Replication(format!(
                                        "not committed within {commit_timeout:?}: a majority \
                                         of servers did not answer"
                                    )),
                                ),
                                Ok(Err(_)) => waiting.fail(
                                    id,
                                    LogError::Replication(
                                        "the Raft engine stopped before answering".to_string(),
                                    ),
                                ),
                                Ok(Ok(Err(ClientWriteError::ForwardToLeader(to)))) => waiting.fail(
                                    id,
                                    LogError::NotLeader {
                                        leader: to.leader_node.map(|n| n.http_addr),
                                    },
                                ),
                                Ok(Ok(Err(e))) => {
                                    waiting.fail(id, LogError::Replication(e.to_string()))
                                }
                                // Applied: the state writer answers (or has answered).
                                Ok(Ok(Ok(_))) => {}
                            }
                        });
                    }
                    Err(fatal) => waiting.fail(
                        id,
                        LogError::Replication(format!("the Raft engine stopped: {fatal}")),
                    ),
                }
            }
        });
        RaftProposer { queue }
    }
}

impl Proposer for RaftProposer {
    fn propose(&self, cmd: Command, reply: Reply) {
        if let Err(mpsc::error::SendError((_, reply))) = self.queue.send((cmd, reply)) {
            let _ = reply.send(Err(LogError::Closed));
        }
    }
}
