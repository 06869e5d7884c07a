//! What `/proc` says about a pid: whether it still runs, and when it started (to tell
//! it from a later process that reused the pid).

/// True while `pid` exists and is not a zombie (a dead process nobody reaped yet).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// A process's start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_of_this_process_are_known() {
        let me = std::process::id() as i32;
        assert!(proc_start_ticks(me).is_some());
        assert_eq!(proc_start_ticks(me), proc_start_ticks(me));
    }
}
