//! Placement rules of a job or group: constraints (hard), affinities and spreads (soft).

use serde::{Deserialize, Serialize};

/// `[[constraint]]`: a placement must satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// `${attr.x}`, `${node.class}`, `${meta.rack}`; empty for `distinct_hosts`.
    #[serde(default)]
    pub attribute: String,
    #[serde(default = "default_operator")]
    pub operator: String,
    #[serde(default)]
    pub value: String,
}

fn default_operator() -> String {
    "=".to_string()
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.attribute, self.operator, self.value)
    }
}

/// `[[affinity]]`: a soft preference, weight -100..=100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    pub attribute: String,
    #[serde(default = "default_operator")]
    pub operator: String,
    pub value: String,
    #[serde(default = "default_affinity_weight")]
    pub weight: i8,
}

fn default_affinity_weight() -> i8 {
    50
}

/// `[[spread]]`: spread instances over the values of an attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    pub attribute: String,
    #[serde(default = "default_spread_weight")]
    pub weight: u8,
    #[serde(default)]
    pub targets: Vec<SpreadTarget>,
}

fn default_spread_weight() -> u8 {
    50
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadTarget {
    pub value: String,
    pub percent: u8,
}
