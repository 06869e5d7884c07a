//! `Table`: the tables blocking queries wait on, and the names of the `indexes` rows
//! that record the last index that touched each of them.

/// The `indexes` row holding the index of the last command that deleted allocations.
pub(crate) const ALLOC_GC_INDEX: &str = "alloc_gc";

/// The `indexes` row holding the index at which ACLs were bootstrapped (once).
pub(crate) const ACL_BOOTSTRAP_INDEX: &str = "acl_bootstrap";

/// A table that blocking queries can wait on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Table {
    /// Jobs and their versions (spec changes and status changes).
    Jobs,
    Evals,
    Allocs,
    Nodes,
    Deployments,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Jobs,
        Table::Evals,
        Table::Allocs,
        Table::Nodes,
        Table::Deployments,
    ];

    /// The name used in the `indexes` table.
    pub fn name(&self) -> &'static str {
        match self {
            Table::Jobs => "jobs",
            Table::Evals => "evals",
            Table::Allocs => "allocs",
            Table::Nodes => "nodes",
            Table::Deployments => "deployments",
        }
    }

    pub(super) fn slot(&self) -> usize {
        match self {
            Table::Jobs => 0,
            Table::Evals => 1,
            Table::Allocs => 2,
            Table::Nodes => 3,
            Table::Deployments => 4,
        }
    }
}
