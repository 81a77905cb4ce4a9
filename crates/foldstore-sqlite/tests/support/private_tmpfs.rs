//! A real, small, full-able disk for a test: a tmpfs mounted in a private mount
//! namespace, so that nothing outside the test sees it and nothing is left mounted.
//!
//! [`enter`] re-runs the calling test, alone, in a child of the test binary started
//! under `unshare --mount --propagation private`, after mounting a tmpfs of the given
//! size on a fresh directory. In the child, [`enter`] returns that directory; in the
//! parent it waits for the child, fails if the child failed, and returns `None`.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`). Where `unshare` or `mount` is missing or
//! not allowed, the test is skipped with a message saying why, unless
//! `FOLDSTORE_REQUIRE_PRIVILEGED=1` is set (as in CI), which makes it fail.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Set in the child: the directory the tmpfs is mounted on.
const CHILD_DIR: &str = "FOLDSTORE_PRIVATE_TMPFS_DIR";

/// In the child, the mounted directory; in the parent, `None` after the child passed
/// (or after a skip). `test` is the calling test's name as `cargo test` shows it, and
/// `size` a tmpfs size such as `"12m"`.
pub(crate) fn enter(test: &str, size: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        return Some(PathBuf::from(dir));
    }
    let outside = tempfile::tempdir().expect("a temporary directory");
    if let Err(why) = probe(&outside.path().to_string_lossy()) {
        let required = std::env::var("FOLDSTORE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "FOLDSTORE_REQUIRE_PRIVILEGED=1, but a private tmpfs cannot be mounted: {why}"
        );
        eprintln!(
            "skipping {test}: it needs a tmpfs in a private mount namespace (root, `unshare --mount` and `mount -t tmpfs`), which failed here: {why}"
        );
        return None;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size={size},mode=0700 foldstore-test \"$0\" && exec \"$@\""
        ))
        .arg(outside.path())
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, outside.path())
        .status()
        .expect("unshare runs");
    assert!(
        status.success(),
        "{test} failed on the private tmpfs ({status}); its output is above"
    );
    None
}

/// Whether a tmpfs can be mounted in a private mount namespace here.
fn probe(dir: &str) -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m foldstore-probe \"$0\"")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
