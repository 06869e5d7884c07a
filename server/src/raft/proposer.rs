//! How the leader proposes: `CommandLog::submit` hands each command to the
//! `RaftProposer`, whose one task passes them to openraft in call order (so
//! `submit_later` keeps its promise that commands commit in the order they were
//! queued) and answers each submitter once its entry is committed and applied here.
//! A server that is not the leader answers `NotLeader` with the leader's HTTP address.

use std::time::Duration;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot};

use super::{Applied, Proposal, Raft};
use crate::state::{ApplyOutcome, Command, LogError, Proposer};

type Reply = oneshot::Sender<Result<ApplyOutcome, LogError>>;

/// Proposes commands to the local Raft instance, in order.
pub struct RaftProposer {
    queue: mpsc::UnboundedSender<(Command, Reply)>,
}

impl RaftProposer {
    /// Starts the proposing task; a write not committed within `commit_timeout`
    /// (no quorum) is answered with a `Replication` error (it may still commit later,
    /// as with any consensus system when the answer is lost).
    pub fn spawn(raft: Raft, commit_timeout: Duration) -> RaftProposer {
        let (queue, mut rx) = mpsc::unbounded_channel::<(Command, Reply)>();
        tokio::spawn(async move {
            while let Some((command, reply)) = rx.recv().await {
                let proposal = Proposal {
                    time_ms: orch_common::ids::now_ms(),
                    command,
                };
                match raft.client_write_ff(proposal).await {
                    Ok(answer) => {
                        tokio::spawn(async move {
                            let outcome = match tokio::time::timeout(commit_timeout, answer).await {
                                Err(_) => Err(LogError::Replication(format!(
                                    "not committed within {commit_timeout:?}: a majority of \
                                     servers did not answer"
                                ))),
                                Ok(Err(_)) => Err(LogError::Replication(
                                    "the Raft engine stopped before answering".to_string(),
                                )),
                                Ok(Ok(answer)) => outcome_of(answer),
                            };
                            let _ = reply.send(outcome);
                        });
                    }
                    Err(fatal) => {
                        let _ = reply.send(Err(LogError::Replication(format!(
                            "the Raft engine stopped: {fatal}"
                        ))));
                    }
                }
            }
        });
        RaftProposer { queue }
    }
}

fn outcome_of(
    answer: Result<
        openraft::raft::ClientWriteResponse<super::OrchRaft>,
        ClientWriteError<super::ServerId, super::ServerNode>,
    >,
) -> Result<ApplyOutcome, LogError> {
    match answer {
        Ok(response) => match response.data {
            Applied::Command(outcome) => Ok(outcome),
            Applied::Failed(why) => Err(LogError::Failed(why)),
            Applied::Entry => Err(LogError::Failed(
                "a command's entry was applied as one without a command".to_string(),
            )),
        },
        Err(ClientWriteError::ForwardToLeader(to)) => Err(LogError::NotLeader {
            leader: to.leader_node.map(|n| n.http_addr),
        }),
        Err(e) => Err(LogError::Replication(e.to_string())),
    }
}

impl Proposer for RaftProposer {
    fn propose(&self, cmd: Command, reply: Reply) {
        if let Err(mpsc::error::SendError((_, reply))) = self.queue.send((cmd, reply)) {
            let _ = reply.send(Err(LogError::Closed));
        }
    }
}
