//! Facts about the machine a benchmark ran on, read from `/proc`.

use std::path::Path;

use serde::Serialize;

/// Where and on what a benchmark ran.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// Logical CPUs available to this process.
    pub(crate) nproc: usize,
    /// The kernel release (`uname -r`).
    pub(crate) kernel: String,
    /// The CPU model, if `/proc/cpuinfo` names it.
    pub(crate) cpu: Option<String>,
    /// The filesystem type of the benchmark directory (ext4, xfs, overlay, ...).
    pub(crate) filesystem: String,
    /// The mount point holding the benchmark directory.
    pub(crate) mount_point: String,
    /// The 1-minute load average when the run started: other work on the machine
    /// skews the figures.
    pub(crate) loadavg_1m: Option<f64>,
}

impl Machine {
    /// Describes this machine, with the filesystem that holds `dir`.
    pub(crate) fn describe(dir: &Path) -> Self {
        let mount = filesystem_of(dir);
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            cpu: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            }),
            filesystem: mount
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |m| m.fstype.clone()),
            mount_point: mount.map_or_else(|| "unknown".to_owned(), |m| m.mount_point),
            loadavg_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        }
    }

    /// Whether the benchmark directory lives in memory, where fsync costs nothing.
    pub(crate) fn is_memory_filesystem(&self) -> bool {
        matches!(self.filesystem.as_str(), "tmpfs" | "ramfs")
    }
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Where it is mounted.
    pub(crate) mount_point: String,
    /// Its filesystem type.
    pub(crate) fstype: String,
}

/// The mount holding `path` (canonicalized first), from `/proc/mounts`.
pub(crate) fn filesystem_of(path: &Path) -> Option<Mount> {
    let path = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mount_for(&mounts, path.to_str()?)
}

/// The longest mount point in `mounts` (the text of `/proc/mounts`) containing `path`.
fn mount_for(mounts: &str, path: &str) -> Option<Mount> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = unescape_octal(fields.next()?);
            let fstype = fields.next()?.to_owned();
            Some(Mount {
                mount_point,
                fstype,
            })
        })
        .filter(|m| contains(&m.mount_point, path))
        // Later mounts over the same point hide earlier ones: keep the last longest.
        .fold(None, |best: Option<Mount>, m| match best {
            Some(b) if b.mount_point.len() > m.mount_point.len() => Some(b),
            _ => Some(m),
        })
}

/// Whether the directory `mount_point` contains `path`, component-wise.
fn contains(mount_point: &str, path: &str) -> bool {
    mount_point == "/"
        || path == mount_point
        || path
            .strip_prefix(mount_point)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\040`-style octal.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A field of `/proc/self/status` in megabytes (`VmHWM`, `VmRSS`).
pub(crate) fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The process's peak resident set size so far, in megabytes.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM")
}

/// The process's resident set size now, in megabytes.
pub(crate) fn rss_mb() -> Option<f64> {
    status_mb("VmRSS")
}

/// Resets the peak resident set size to the current one, so that a later
/// [`peak_rss_mb`] covers only what follows. Returns whether the kernel allowed it.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
overlay / overlay rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /dev/shm tmpfs rw 0 0
/dev/sda1 /work ext4 rw 0 0
/dev/sdb1 /work/my\\040disk xfs rw 0 0
tmpfs /work/ram tmpfs rw 0 0
";

    fn fstype(path: &str) -> String {
        mount_for(MOUNTS, path).unwrap().fstype
    }

    #[test]
    fn picks_the_longest_mount_point() {
        assert_eq!(fstype("/"), "overlay");
        assert_eq!(fstype("/etc"), "overlay");
        assert_eq!(fstype("/work"), "ext4");
        assert_eq!(fstype("/work/main/bench-1"), "ext4");
        assert_eq!(fstype("/work/ramp"), "ext4");
        assert_eq!(fstype("/work/ram/bench-1"), "tmpfs");
        assert_eq!(fstype("/work/my disk/x"), "xfs");
    }

    #[test]
    fn reads_own_status() {
        assert!(peak_rss_mb().unwrap() > 0.0);
        assert!(rss_mb().unwrap() > 0.0);
    }
}
