//! Identifiers: random UUIDs for jobs' objects, and id-prefix matching.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_unique_and_shortenable() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), 8);
        assert_eq!(short("abc"), "abc");
    }
}
