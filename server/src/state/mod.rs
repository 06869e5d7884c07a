//! The SQLite state store (being built).

pub mod command;
