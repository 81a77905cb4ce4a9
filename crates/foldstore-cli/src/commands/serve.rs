//! `foldstore serve`: the HTTP API of `foldstore-server`, and KurrentDB's gRPC
//! protocol (`foldstore-grpc`) on the same port, over the store the global options
//! point at, with its persistent subscriptions, until Ctrl-C (or SIGTERM).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::EventStore;
use foldstore_core::persistent::{LockFactory, PersistentSubscriptions};
use foldstore_core::projection::RunnerLock;
use foldstore_postgres::projection::AdvisoryLock;
use foldstore_server::ServerConfig;
use foldstore_server::auth::{Scope, Tokens};

use super::{Access, open_store};
use crate::backend::{self, Store};
use crate::cli::{ServeArgs, StoreArgs};
use crate::database_url::DatabaseLocation;
use crate::error::CliError;
use crate::logging::{self, LogFormat};

/// Runs `foldstore serve`.
pub(crate) async fn run(
    store_args: &StoreArgs,
    log_format: LogFormat,
    args: ServeArgs,
) -> Result<(), CliError> {
    #[cfg(feature = "otlp")]
    let (export, traces) = match &args.otlp_endpoint {
        Some(endpoint) => {
            let (export, layer) = crate::otlp::Export::start(endpoint)?;
            (Some(export), Some(layer))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let traces = match &args.otlp_endpoint {
        Some(_) => {
            return Err(CliError::Usage(
                "--otlp-endpoint: this foldstore was built without the `otlp` feature".to_owned(),
            ));
        }
        None => None,
    };
    logging::init(log_format, "info", traces)?;
    let tokens = match &args.tokens_file {
        Some(path) => Some(foldstore_server::auth::Tokens::load(path)?),
        None => None,
    };
    if !args.bind.is_loopback() && !args.insecure && tokens.is_none() {
        return Err(CliError::Usage(format!(
            "refusing to serve on {} without tokens: anyone who can reach it could read and write every stream. Bind to loopback (the default, 127.0.0.1), give --tokens-file (make tokens with `foldstore token create`), or pass --insecure if that is what you want",
            args.bind
        )));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(foldstore_server::TlsConfig::from_pem_files(cert, key)?),
        _ => None,
    };
    let body_limit = args
        .body_limit_mib
        .checked_mul(1024 * 1024)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--body-limit-mib {} is too large",
                args.body_limit_mib
            ))
        })?;
    let address = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::io(format!("could not listen on {address}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::io("could not read the listening address", e))?;

    let store = match open_store(store_args, Access::Create).await {
        Ok(store) => store,
        Err(e) => {
            // Operators read the server's log: the cause goes there, once. With error
            // lines filtered out of the log, `main` prints it instead.
            if !tracing::enabled!(tracing::Level::ERROR) {
                return Err(e);
            }
            tracing::error!(error = %e, "foldstore serve: could not open the store; stopping");
            return Err(CliError::Logged(Box::new(e)));
        }
    };
    let dyn_store: Arc<dyn EventStore> = match &store {
        Store::Sqlite(s) => Arc::new(s.clone()),
        Store::Postgres(p) => Arc::new(p.clone()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "foldstore serving the {} store on {scheme}://{local}/ (Ctrl-C stops)",
        store.backend_name()
    );
    let slow_request =
        (args.slow_request_ms > 0).then(|| Duration::from_millis(args.slow_request_ms));
    let mut config = ServerConfig::default()
        .body_limit(body_limit)
        .slow_request(slow_request);
    let data = DatabaseLocation::resolve(
        store_args.database.as_deref(),
        &store_args.data_dir,
        store_args.pg_schema.as_deref(),
        store_args.pg_tuning(),
    )
    .map_or_else(|_| "?".to_owned(), |l| l.describe());
    let auth = match (&tokens, &args.tokens_file) {
        (Some(_), Some(file)) => format!("tokens from {}", file.display()),
        _ if args.insecure => "none (--insecure)".to_owned(),
        _ => "none (loopback only)".to_owned(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        backend = store.backend_name(),
        address = %format_args!("{scheme}://{local}/"),
        auth,
        data,
        body_limit_bytes = config.body_limit,
        sse_buffer_events = config.sse_buffer,
        slow_client_timeout_ms = config.slow_client_timeout.as_millis(),
        heartbeat_ms = config.heartbeat.as_millis(),
        slow_request_ms = args.slow_request_ms,
        otlp_endpoint = args.otlp_endpoint.as_deref(),
        "foldstore serving"
    );
    if tokens.is_none() && args.insecure && !args.bind.is_loopback() {
        tracing::warn!(
            "--insecure: no authentication, anyone who can reach {local} can read and write"
        );
    }
    if tokens.is_some() && tls.is_none() && !args.bind.is_loopback() {
        tracing::warn!(
            "tokens cross the network in clear text without TLS: give --tls-cert and --tls-key"
        );
    }
    // One set of persistent subscriptions per process, for every protocol; on
    // PostgreSQL each group's advisory lock lets one `foldstore serve` deliver it.
    let persistent = match open_persistent(&store, dyn_store.clone()).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            drop(dyn_store);
            let _ = backend::close(store).await;
            return Err(e);
        }
    };
    config = config.persistent(persistent.clone());
    let mut grpc = foldstore_grpc::Services::new(dyn_store.clone()).persistent(persistent.clone());
    if let Some(tokens) = &tokens {
        grpc = grpc.authenticator(Arc::new(GrpcTokens(tokens.clone())));
    }
    config = config.grpc(grpc.router());
    if let Some(tokens) = tokens {
        config = config.tokens(tokens);
    }
    let served = match tls {
        Some(tls) => {
            foldstore_server::serve_tls(listener, tls, dyn_store, config, shutdown_signal()).await
        }
        None => foldstore_server::serve(listener, dyn_store, config, shutdown_signal()).await,
    };
    // The server has stopped: write each group's checkpoint, then finish queued
    // writes and close.
    persistent.shutdown().await;
    drop(persistent);
    let closed = backend::close(store).await;
    served.map_err(|e| CliError::io("the server failed", e))?;
    #[cfg(feature = "otlp")]
    if let Some(export) = export {
        export.shutdown().await;
    }
    closed?;
    tracing::info!("foldstore stopped");
    Ok(())
}

/// The persistent subscriptions of `store`, served by this process: with in-process
/// locks on SQLite (one process per file), with a PostgreSQL advisory lock per group
/// (named with the schema, so two schemas of one database do not share locks) on
/// PostgreSQL, so that several servers over one database never deliver one event to
/// two consumers of a group at once.
async fn open_persistent(
    store: &Store,
    events: Arc<dyn EventStore>,
) -> Result<PersistentSubscriptions, CliError> {
    let Store::Postgres(pg) = store else {
        return Ok(PersistentSubscriptions::open(events).await?);
    };
    let (url, schema) = (pg.options().url.clone(), pg.options().schema.clone());
    let locks: LockFactory = Arc::new(move |name: String| {
        let (url, name) = (url.clone(), format!("{schema}:{name}"));
        Box::pin(async move {
            let lock = AdvisoryLock::connect(&url, &name).await?;
            Ok(Box::new(lock) as Box<dyn RunnerLock>)
        })
    });
    Ok(PersistentSubscriptions::open_with_locks(events, locks).await?)
}

/// The tokens file, for the gRPC clients' credentials: a bearer token is a token; basic
/// credentials are the token's name (its first field in the tokens file) as the user
/// name and the token as the password.
struct GrpcTokens(Tokens);

impl foldstore_grpc::Authenticator for GrpcTokens {
    fn authenticate(
        &self,
        credentials: foldstore_grpc::Credentials<'_>,
    ) -> Option<foldstore_grpc::Grant> {
        let entry = match credentials {
            foldstore_grpc::Credentials::Bearer(token) => self.0.authenticate(token)?,
            foldstore_grpc::Credentials::Basic { username, password } => {
                let entry = self.0.authenticate(password)?;
                (entry.name() == username).then_some(entry)?
            }
        };
        Some(foldstore_grpc::Grant {
            read: entry.has(Scope::Read),
            write: entry.has(Scope::Write),
            admin: entry.has(Scope::Admin),
            prefixes: entry.prefixes().to_vec(),
        })
    }
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
