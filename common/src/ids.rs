//! Identifiers: the typed ids of the model's aggregates (`JobId`, `NodeId`, `AllocId`,
//! `EvalId`, `DeploymentId`), random UUIDs for new ones, id-prefix display, and the clock
//! in milliseconds that timestamps them.
//!
//! An id is a string on the wire and in SQLite (`#[serde(transparent)]`), so typing them
//! changes no stored or served byte; in code a `JobId` cannot be passed where a `NodeId`
//! is meant. Each derefs to `str` (ids are read as text everywhere: prefixes, tables,
//! SQL parameters) and borrows as `str`, so maps keyed by an id are looked up by `&str`.
//! With the `sqlite` feature (the server's) an id is a SQLite text value, read and written.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// A new random id (UUID v4, hyphenated, lower case).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The first 8 characters of an id, as shown in tables.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Declares a string id type with the conversions and comparisons every id needs.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new random id.
            pub fn generate() -> Self {
                $name(new_id())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }

            /// The first 8 characters, as shown in tables.
            pub fn short(&self) -> &str {
                short(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Like the string it is (`"web"`), so messages that quote an id read as before.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name(s.clone())
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        #[cfg(feature = "sqlite")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                String::column_result(value).map($name)
            }
        }
    };
}

string_id!(
    /// A job's id: the name its spec gives (`id = "web"`), unique in the cluster.
    JobId
);
string_id!(
    /// A client node's id: a UUID the client generates once and keeps in its data dir.
    NodeId
);
string_id!(
    /// An allocation's id (a UUID).
    AllocId
);
string_id!(
    /// An evaluation's id (a UUID).
    EvalId
);
string_id!(
    /// A deployment's id (a UUID).
    DeploymentId
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn new_ids_are_unique_and_shortenable() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), 8);
        assert_eq!(short("abc"), "abc");
        assert_eq!(AllocId::generate().short().len(), 8);
    }

    #[test]
    fn a_typed_id_is_a_plain_string_on_the_wire() {
        let id = JobId::from("web");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"web\"");
        let back: JobId = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(back, "web");
        assert_eq!(id.to_string(), "web");
        assert_eq!(format!("{id:?}"), "\"web\"");
    }

    #[test]
    fn maps_keyed_by_an_id_are_looked_up_by_str() {
        let mut m: BTreeMap<NodeId, u32> = BTreeMap::new();
        m.insert(NodeId::from("n1"), 1);
        assert_eq!(m.get("n1"), Some(&1));
        assert!("n1bc".starts_with(&*NodeId::from("n1")));
    }
}
