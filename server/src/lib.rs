//! The orch server: the SQLite state store written only through `Command`s, the
//! evaluation broker, scheduler workers, the plan applier, node heartbeats, the node
//! drainer, the deployment watcher, the service catalog (a view over allocations), the
//! endpoints (the rules of every write) and the HTTP API that decodes requests for
//! them. `Server::start` wires them together; `Server::shutdown` stops and awaits them.

pub mod broker;
pub mod catalog;
pub mod config;
pub mod deployment;
pub mod dns;
pub mod drainer;
pub mod endpoints;
pub mod gc;
pub mod heartbeat;
pub mod http;
pub mod plan_apply;
pub mod raft;
pub mod scheduler;
mod scheduler_state;
pub mod server;
pub mod state;
pub mod worker;
