//! The orch client: fingerprints the host, registers with the servers, heartbeats,
//! watches its allocations with blocking queries and runs them through drivers inside
//! cgroups, reporting status back in batches. (Being built: see the client brief.)
