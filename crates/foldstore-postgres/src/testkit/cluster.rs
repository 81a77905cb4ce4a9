//! A PostgreSQL cluster of a test's own: initialised in a temporary directory, served
//! on a free loopback port, so that a test can crash and restart a real server without
//! touching the shared one.

use std::path::{Path, PathBuf};

/// The environment variable naming the directory of the PostgreSQL server binaries
/// (`initdb`, `pg_ctl`) to use; without it they are found on `PATH`. `.ci/postgres-versions`
/// installs portable builds whose `bin` directory can be given here.
pub const BIN_VAR: &str = "FOLDSTORE_PG_BIN";

/// A private PostgreSQL cluster, crashed (`pg_ctl stop -m immediate`) and its
/// directory removed when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: Option<PathBuf>,
}

impl PrivateCluster {
    /// Initialises and starts a cluster with the binaries of [`BIN_VAR`] (or `PATH`),
    /// or says why it can't (no PostgreSQL server binaries on this machine, running as
    /// root without a `postgres` user).
    pub fn start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("foldstore-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        // PostgreSQL refuses to run as root: hand the directory to `postgres` then.
        if running_as_root() {
            let (uid, gid) = postgres_ids().ok_or("running as root and no `postgres` user")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown: {e}"))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let bin = std::env::var_os(BIN_VAR)
            .filter(|b| !b.is_empty())
            .map(PathBuf::from);
        let cluster = Self { dir, port, bin };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "--auth=trust",
                "--username=root",
                "--no-sync",
            ],
        )?;
        cluster.up()?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The cluster's directory (its `server.log` is there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of the database `postgres` as the superuser `root`.
    pub fn url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn up(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        )
    }

    /// Stops the server the way a crash does: no checkpoint, no clean shutdown; the
    /// next start runs crash recovery from the WAL.
    pub fn crash(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let program = match &self.bin {
            Some(bin) => bin.join(program).display().to_string(),
            None => program.to_owned(),
        };
        let mut command = if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            std::process::Command::new(&program)
        };
        let out = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}
