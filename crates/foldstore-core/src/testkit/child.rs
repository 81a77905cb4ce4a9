//! Crash tests' common part: run one test of the current test binary as a child
//! process, wait until it says it is working, kill it with SIGKILL, keep what it
//! printed.
//!
//! A crash test is one `#[test]` that plays two roles. Started by `cargo test`, it is
//! the parent: it starts copies of its own binary with an environment variable set,
//! kills them at random moments and checks the store after each kill. Started with
//! that variable, it is the child: it works on the store and prints a marker line when
//! it has started (and whatever else the parent needs, such as acknowledgements).
//!
//! ```no_run
//! use std::time::Duration;
//! use foldstore_core::testkit::child::ChildTest;
//!
//! const CHILD_ENV: &str = "MY_CRASH_CHILD";
//!
//! #[test]
//! fn survives_sigkill() {
//!     if std::env::var_os(CHILD_ENV).is_some() {
//!         println!("started");
//!         // ... append until killed ...
//!         return;
//!     }
//!     for _ in 0..100 {
//!         let child = ChildTest::spawn("survives_sigkill", &[(CHILD_ENV, "store.db")], "started");
//!         assert!(child.wait_for_marker(Duration::from_secs(20)), "the child did not start");
//!         std::thread::sleep(Duration::from_millis(10));
//!         let printed = child.kill();
//!         // ... check the store against what `printed` says was acknowledged ...
//!     }
//! }
//! ```

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// One run of a test of the current binary as a child process.
#[derive(Debug)]
pub struct ChildTest {
    child: Child,
    output: JoinHandle<String>,
    marker_seen: Receiver<()>,
}

impl ChildTest {
    /// Starts the current test binary running only `test` (one thread, output not
    /// captured), with `envs` set and its standard output read by a thread that
    /// watches for the first `marker`.
    ///
    /// # Panics
    ///
    /// When the binary cannot be found or started.
    pub fn spawn<V: AsRef<OsStr>>(test: &str, envs: &[(&str, V)], marker: &str) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the child test");
        let mut stdout = child.stdout.take().expect("the child's stdout");
        let marker = marker.as_bytes().to_vec();
        let (seen, marker_seen) = channel();
        let output = std::thread::spawn(move || {
            let mut text = Vec::new();
            let mut chunk = [0u8; 8192];
            let mut told = false;
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
                if !told && text.windows(marker.len()).any(|w| w == marker) {
                    told = true;
                    let _ = seen.send(());
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        });
        Self {
            child,
            output,
            marker_seen,
        }
    }

    /// Waits at most `timeout` for the marker; `false` if it did not come (the child
    /// is slow to start or died).
    pub fn wait_for_marker(&self, timeout: Duration) -> bool {
        self.marker_seen.recv_timeout(timeout).is_ok()
    }

    /// Kills the child with SIGKILL, reaps it, and returns everything it printed
    /// (the last line may be cut off by the kill).
    ///
    /// # Panics
    ///
    /// When the child cannot be killed or reaped.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
        self.output.join().unwrap_or_default()
    }
}
