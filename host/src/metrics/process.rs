//! The process's own figures, read from `/proc/self` when scraped (Linux; absent elsewhere).

/// Clock ticks per second of `/proc/self/stat`'s times (`USER_HZ`, 100 on every Linux ABI the
/// host builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` tells of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
}

/// This process's figures, or `None` without `/proc`.
pub fn read() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let (cpu_seconds, threads) = parse_stat(&stat)?;
    let resident_bytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    Some(ProcessFigures { cpu_seconds, resident_bytes, open_fds, threads })
}

/// CPU seconds and threads from `/proc/self/stat`: the fields after the command's closing
/// parenthesis (the command may hold spaces and parentheses), `utime` and `stime` being the
/// 12th and 13th of them and `num_threads` the 18th.
fn parse_stat(stat: &str) -> Option<(f64, u64)> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<u64>().ok());
    let cpu = (ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND;
    Some((cpu, ticks(17)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the stat line is read after the command, whatever the command holds.
    #[test]
    fn the_stat_line_is_read_after_the_command() {
        let stat = "4242 (hong bao) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 100 1000 10";
        assert_eq!(parse_stat(stat), Some((3.0, 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

    // Proves this process's own figures are read (the test runs on Linux).
    #[test]
    fn this_process_reads_its_own_figures() {
        let figures = read().expect("/proc");
        assert!(figures.resident_bytes > 0 && figures.open_fds > 0 && figures.threads > 0, "{figures:?}");
    }
}
