//! Output for people and scripts: aligned tables, key/value blocks, times ("5s ago",
//! "2024-05-01T10:00:00Z") and pretty JSON for `--json`.

use std::fmt::Write as _;

use serde::Serialize;

/// Columns separated by two spaces, each as wide as its widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(self.rows.iter()) {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == cols {
                    s.push_str(cell);
                } else {
                    let _ = write!(s, "{cell:<w$}  ");
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Key = value` lines with the keys padded to one width.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let _ = writeln!(out, "{k:<w$} = {v}");
    }
    out
}

/// "5s ago", "3m ago", "2h ago", "4d ago" (or "in 5s" for a future time); "-" for 0.
pub fn relative_time(ms: u64, now_ms: u64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    let (delta, future) = if now_ms >= ms {
        (now_ms - ms, false)
    } else {
        (ms - now_ms, true)
    };
    let secs = delta / 1000;
    let text = if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// UTC RFC 3339 time of a millisecond timestamp, e.g. `2024-05-01T10:00:00Z`.
pub fn timestamp(ms: u64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// `HH:MM:SS` (UTC) of a millisecond timestamp, for progress and event lines.
pub fn clock(ms: u64) -> String {
    let secs = (ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The short (8 character) form of an id, as shown in tables.
pub fn short(id: &str) -> String {
    orch_common::ids::short(id).to_string()
}

/// Memory in MiB for people: "512 MiB", "2.0 GiB".
pub fn mib(m: u64) -> String {
    if m >= 1024 {
        format!("{:.1} GiB", m as f64 / 1024.0)
    } else {
        format!("{m} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut t = Table::new(&["ID", "STATUS"]);
        t.row(vec!["abcdef12".into(), "running".into()]);
        t.row(vec!["a".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "ID        STATUS\nabcdef12  running\na         x\n"
        );
    }

    #[test]
    fn relative_times_pick_the_largest_unit() {
        let now = 1_000_000_000;
        assert_eq!(relative_time(now - 5_000, now), "5s ago");
        assert_eq!(relative_time(now - 180_000, now), "3m ago");
        assert_eq!(relative_time(now - 7_200_000, now), "2h ago");
        assert_eq!(relative_time(now + 5_000, now), "in 5s");
        assert_eq!(relative_time(0, now), "-");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(1_714_557_600_000), "2024-05-01T10:00:00Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(clock(1_714_557_661_000), "10:01:01");
    }

    #[test]
    fn key_values_pad_keys() {
        assert_eq!(
            key_values(&[("ID", "x".into()), ("Status", "y".into())]),
            "ID     = x\nStatus = y\n"
        );
    }
}
