//! A full disk: the SQLite store lives on a small tmpfs mounted in a private mount
//! namespace (`unshare --mount`), so only the server sees it. After some appends a
//! filler file takes the rest of the space. While the disk is full, appends must be
//! refused with a clear error (507 `insufficient_storage`), nothing half-written, and
//! reads still served; once the filler is removed, appends must succeed again
//! without a restart, and the oracle must find every acknowledged event.
//!
//! The harness reaches the server's tmpfs through `/proc/<pid>/root`, which resolves
//! paths in the server's mount namespace.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Api, Outcome};
use crate::error::HarnessError;
use crate::oracle::{self, Ledger, Request};
use crate::report::Report;
use crate::scenarios::Env;
use crate::server::{Backend, Server, ServerSpec};

/// Options of the disk-full scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The tmpfs size, in MiB.
    #[arg(long, default_value_t = 32)]
    pub size_mib: u64,
    /// Appends tried while the disk is full.
    #[arg(long, default_value_t = 50)]
    pub attempts: usize,
}

fn events(n: usize, tag: &str) -> Vec<(String, String, serde_json::Value)> {
    (0..n)
        .map(|i| {
            (
                uuid::Uuid::new_v4().to_string(),
                "Filled".to_owned(),
                json!({"tag": tag, "i": i, "pad": "y".repeat(1024)}),
            )
        })
        .collect()
}

async fn append(api: &Api, base: &str, ledger: &Ledger, stream: &str, tag: &str) -> Outcome {
    let evs = events(10, tag);
    let body: Vec<_> = evs
        .iter()
        .map(|(id, ty, data)| json!({"id": id, "type": ty, "data": data}))
        .collect();
    let outcome = api.append(base, stream, json!("any"), &body).await;
    ledger.record(Request {
        stream: stream.to_owned(),
        events: evs,
        outcome: outcome.clone(),
    });
    outcome
}

fn status_of(o: &Outcome) -> String {
    match o {
        Outcome::Ok { .. } => "200".to_owned(),
        Outcome::Failed { status, code } | Outcome::Unknown { status, code } => {
            format!(
                "{status} {}",
                if code.len() > 40 { &code[..40] } else { code }
            )
        }
    }
}

/// Runs the scenario (needs root, or unprivileged user namespaces, for `unshare`).
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let dir = env.scratch_dir()?;
    let path = dir.path().display().to_string();
    let mut spec = ServerSpec::new(&env.foldstore, Backend::Sqlite(dir.path().to_owned()))?;
    let script = format!(
        "mount -t tmpfs -o size={}m foldstore-full \"$FOLDSTORE_FULL_DIR\" && exec \"$0\" \"$@\"",
        o.size_mib
    );
    let mut wrapper = vec!["unshare".to_owned()];
    if !running_as_root() {
        wrapper.push("--map-root-user".to_owned());
    }
    wrapper.extend(
        ["--mount", "--propagation", "private", "env"]
            .iter()
            .map(|s| s.to_string()),
    );
    wrapper.push(format!("FOLDSTORE_FULL_DIR={path}"));
    wrapper.extend(["sh".to_owned(), "-c".to_owned(), script]);
    spec.wrapper = wrapper;
    let mut server = Server::start(&spec).await.map_err(|e| {
        HarnessError::Unavailable(format!(
            "{e} (the disk-full scenario needs `unshare --mount` and `mount -t tmpfs`)"
        ))
    })?;
    let base = spec.url();
    let api = Api::new(Duration::from_secs(10));
    let ledger = Arc::new(Ledger::default());
    for _ in 0..20 {
        append(&api, &base, &ledger, "full-1", "before").await;
    }
    // Fill the tmpfs, as the server sees it.
    let filler = format!("/proc/{}/root{path}/filler", server.pid);
    let mut file = std::fs::File::create(&filler)
        .map_err(|e| HarnessError::io(format!("create {filler}"), e))?;
    let chunk = vec![0u8; 1 << 20];
    let mut filled = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => filled += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(HarnessError::io("fill the tmpfs", e)),
        }
    }
    let _ = file.flush();
    drop(file);

    let mut while_full: BTreeMap<String, u64> = BTreeMap::new();
    let mut reads_ok = 0u64;
    for i in 0..o.attempts {
        let outcome = append(&api, &base, &ledger, &format!("full-{}", i % 4), "full").await;
        *while_full.entry(status_of(&outcome)).or_default() += 1;
        if api.get_json(&format!("{base}/all?limit=10")).await.is_ok() {
            reads_ok += 1;
        }
    }
    let health = api
        .http()
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);

    std::fs::remove_file(&filler).map_err(|e| HarnessError::io(format!("remove {filler}"), e))?;
    let freed = Instant::now();
    let mut recovered = None;
    while freed.elapsed() < Duration::from_secs(30) {
        if matches!(
            append(&api, &base, &ledger, "full-after", "after").await,
            Outcome::Ok { .. }
        ) {
            recovered = Some(freed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after_ok = 0u64;
    for _ in 0..20 {
        if matches!(
            append(&api, &base, &ledger, "full-after", "after").await,
            Outcome::Ok { .. }
        ) {
            after_ok += 1;
        }
    }
    let same_process = server.running();
    let verdict = oracle::check(&api, &base, &ledger.requests()).await?;
    server.stop().await;

    let mut r = Report::new("disk-full", "sqlite");
    r.figure("tmpfs_mib", o.size_mib);
    r.figure("filler_mib", filled >> 20);
    r.figure(
        "while_full",
        serde_json::to_value(&while_full).unwrap_or_default(),
    );
    r.figure("health_while_full", u64::from(health));
    let refused_507 = while_full
        .iter()
        .filter(|(k, _)| k.starts_with("507"))
        .map(|(_, v)| v)
        .sum::<u64>();
    let other_errors = while_full
        .iter()
        .filter(|(k, _)| !k.starts_with("507") && !k.starts_with("200"))
        .map(|(_, v)| v)
        .sum::<u64>();
    r.check(
        "appends on a full disk are refused with 507",
        refused_507 > 0 && other_errors == 0,
        format!("{while_full:?}"),
    );
    r.check(
        "reads are served while the disk is full",
        reads_ok == o.attempts as u64,
        format!("{reads_ok} of {}", o.attempts),
    );
    r.check(
        "appends succeed again without a restart once space returns",
        recovered.is_some() && after_ok == 20 && same_process,
        format!(
            "first success after {:?}, then {after_ok} of 20, same process: {same_process}",
            recovered
        ),
    );
    if let Some(t) = recovered {
        r.figure("recovery_ms", t.as_millis() as u64);
    }
    verdict.report(&mut r);
    drop(dir);
    Ok(r)
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}
