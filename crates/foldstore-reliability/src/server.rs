//! `foldstore serve` as a child process: started on a fixed loopback port (so that a
//! restarted server has the same URL), watched until healthy, killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::HarnessError;

/// Where the store lives, as `foldstore` options.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite store in this directory (`--data-dir`).
    Sqlite(PathBuf),
    /// A PostgreSQL database and schema (`--database`, `--pg-schema`).
    Postgres {
        /// The database URL.
        url: String,
        /// The schema holding the store.
        schema: String,
    },
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            Backend::Postgres { url, schema } => vec![
                "--database".into(),
                url.clone(),
                "--pg-schema".into(),
                schema.clone(),
            ],
        }
    }
}

/// How to start one server: the binary, the store, the port and extra options.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The `foldstore` binary.
    pub binary: PathBuf,
    /// The store.
    pub backend: Backend,
    /// The loopback port, kept across restarts.
    pub port: u16,
    /// More `serve` options (such as `--tokens-file`).
    pub extra: Vec<String>,
    /// A command that runs the server (`unshare ... sh -c '...; exec "$0" "$@"'`):
    /// the server's command line is appended to it.
    pub wrapper: Vec<String>,
}

impl ServerSpec {
    /// A server of `binary` on `backend` on a free port.
    pub fn new(binary: &Path, backend: Backend) -> Result<Self, HarnessError> {
        Ok(Self {
            binary: binary.to_owned(),
            backend,
            port: free_port()?,
            extra: Vec::new(),
            wrapper: Vec::new(),
        })
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A free loopback port.
pub fn free_port() -> Result<u16, HarnessError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("find a free port", e))
}

/// A running `foldstore serve`, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The base URL.
    pub url: String,
    /// The server's process id.
    pub pid: u32,
    /// From spawn to the first healthy answer.
    pub startup: Duration,
}

impl Server {
    /// Starts the server and waits (up to 60 s) until `/health` answers 200.
    pub async fn start(spec: &ServerSpec) -> Result<Self, HarnessError> {
        let started = Instant::now();
        let mut command = match spec.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&spec.binary);
                c
            }
            None => Command::new(&spec.binary),
        };
        for var in [
            "FOLDSTORE_DATA_DIR",
            "FOLDSTORE_DATABASE_URL",
            "FOLDSTORE_SERVER",
            "FOLDSTORE_TOKEN",
            "FOLDSTORE_TOKENS_FILE",
            "FOLDSTORE_PORT",
            "FOLDSTORE_BIND",
        ] {
            command.env_remove(var);
        }
        command
            .args(spec.backend.args())
            .args(["serve", "--port", &spec.port.to_string()])
            .args(&spec.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| HarnessError::Start(format!("{}: {e}", spec.binary.display())))?;
        let pid = child.id().unwrap_or(0);
        // Drain stdout so the server never blocks on a full pipe.
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(_)) = lines.next_line().await {}
            });
        }
        let url = spec.url();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| HarnessError::Start(e.to_string()))?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HarnessError::Start(format!("the server exited: {status}")));
            }
            if let Ok(r) = client.get(format!("{url}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill().await;
                return Err(HarnessError::Start(format!(
                    "{url}/health did not answer 200 within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            child,
            url,
            pid,
            startup: started.elapsed(),
        })
    }

    /// Kills the server with SIGKILL and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the server with SIGINT (graceful) and waits up to 30 s, then kills it.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's resident set size (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid)
    }
}

/// The resident set size (VmRSS) of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
