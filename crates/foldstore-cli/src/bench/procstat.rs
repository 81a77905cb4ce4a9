//! CPU time per thread group and resident memory, from `/proc` (Linux; `None`
//! elsewhere): how the HTTP workloads split the machine between the load generator and
//! the server they share it with.

use std::collections::HashMap;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) of `stat` text (`/proc/<pid>/stat` or a task's).
fn cpu_of_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the command: state (field 3), ..., utime (14), stime (15).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

/// CPU seconds of each live thread of this process, by thread id.
pub(crate) fn threads() -> HashMap<String, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(cpu) = cpu_of_stat(&stat)
        {
            out.insert(tid, cpu);
        }
    }
    out
}

/// CPU seconds used between two [`threads`] snapshots by threads whose name starts
/// with `prefix`, and by the others. Threads that ended in between are not counted.
pub(crate) fn split_since(
    before: &HashMap<String, (String, f64)>,
    after: &HashMap<String, (String, f64)>,
    prefix: &str,
) -> (f64, f64) {
    let (mut matching, mut others) = (0.0, 0.0);
    for (tid, (name, cpu)) in after {
        let start = before.get(tid).map_or(0.0, |(_, c)| *c);
        let used = (cpu - start).max(0.0);
        if name.starts_with(prefix) {
            matching += used;
        } else {
            others += used;
        }
    }
    (matching, others)
}

/// CPU seconds of a whole process.
pub(crate) fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_of_stat(&stat).map(|(_, cpu)| cpu)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MB.
pub(crate) fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let stat = "4242 (fs-load (1)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        let (name, cpu) = cpu_of_stat(stat).unwrap();
        assert_eq!(name, "fs-load (1)");
        assert!((cpu - 3.0).abs() < 1e-9);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_visible() {
        assert!(!threads().is_empty());
        assert!(process_cpu(std::process::id()).is_some());
        assert!(status_mb(std::process::id(), "VmRSS").unwrap() > 0.0);
    }
}
