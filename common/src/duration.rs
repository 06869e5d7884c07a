//! Human durations ("500ms", "30s", "5m", "1h30m", "2d") as used in job specs, configs
//! and the API, with serde helpers that read and write them as strings.

use std::time::Duration;

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {input:?}: expected a number followed by a unit (ms, s, m, h, d), e.g. \"30s\" or \"1h30m\"")]
    Invalid { input: String },
    #[error("duration {input:?} is too large")]
    TooLarge { input: String },
}

/// The longest duration a job spec or a request may give (10 years): far beyond any
/// sensible timeout, and far enough below what a clock can add (`Instant + d`,
/// `now_ms + d`) that nothing derived from it overflows.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Whole milliseconds, `u64::MAX` for a duration too long for them (instead of the
/// silent truncation of `as_millis() as u64`).
pub fn millis_saturating(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parses "500ms", "30s", "5m", "1h30m", "2d", "1.5s". A bare "0" is zero.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid {
        input: input.to_string(),
    };
    let too_large = || DurationError::TooLarge {
        input: input.to_string(),
    };
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if num_len == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(invalid()),
        };
        // Checked at every step: a number no `Duration` holds is an error, never the
        // panic of `Duration::from_secs_f64` or a sum that wraps.
        let part =
            Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| too_large())?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration the way `parse` reads it: "1h30m", "5s", "250ms", "0s".
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("h", 3600u64), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// `#[serde(with = "orch_common::duration::human")]` for `Duration` fields.
pub mod human {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "orch_common::duration::human_opt")]` for `Option<Duration>` fields.
pub mod human_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse("30").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["1h30m", "5s", "250ms", "0s", "2m"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }

    #[test]
    fn a_number_too_large_for_a_duration_is_an_error_not_a_panic() {
        for s in [
            "99999999999999999999999999h",
            "1e400s",
            "200000000000000000000d",
            "18446744073709551616s",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
        // The largest sums still add up without wrapping.
        assert!(parse("200000000000000d200000000000000d").is_err());
    }
}
