//! Creating and migrating foldstore's schema.
//!
//! Each migration is a `.sql` file applied in one transaction together with its row in
//! `schema_version`. The whole check-and-migrate runs under a transaction-scoped
//! advisory lock keyed by the schema name, so two processes starting at once take turns:
//! the second finds the schema already migrated.

use tokio_postgres::Client;

use crate::error::{ConnectError, Effect, backend};
use crate::pg::Xid8;

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../sql/0001_initial.sql"),
    include_str!("../sql/0002_dcb_and_snapshots.sql"),
    include_str!("../sql/0003_append_batch.sql"),
    include_str!("../sql/0004_transactions.sql"),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The oldest PostgreSQL this backend supports (`server_version_num`).
const MIN_SERVER_VERSION: i32 = 130_000;

/// Checks a schema name: lower-case ASCII letters, digits and `_`, not starting with a
/// digit, at most 40 bytes (so derived names such as the notification channel stay
/// within PostgreSQL's 63-byte identifiers).
pub(crate) fn check_schema_name(name: &str) -> Result<(), ConnectError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(ConnectError::InvalidSchemaName(name.to_owned()))
    }
}

/// The advisory-lock key of a schema's migrations: FNV-1a of a fixed prefix and the
/// schema name.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "foldstore-migrate:".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Creates the schema or migrates it to [`SCHEMA_VERSION`]; refuses a newer one.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), ConnectError> {
    let connect = |e| ConnectError::Setup {
        step: "reading the server's and the schema's versions",
        error: backend(e, Effect::None),
    };
    let server: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(connect)?;
    if server < MIN_SERVER_VERSION {
        return Err(ConnectError::ServerTooOld { found: server });
    }
    let current = client
        .query_one(
            "SELECT to_regclass(format('%I.schema_version', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
        .map_err(connect)?;
    if current {
        let version = stored_version(client, schema).await.map_err(connect)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
    }
    let failed = |version: i32| {
        move |e| ConnectError::Migration {
            schema: schema.to_owned(),
            version,
            source: backend(e, Effect::None),
        }
    };
    let tx = client.transaction().await.map_err(connect)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(connect)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS schema_version (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(failed(1))?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(connect)?;
    if found > SCHEMA_VERSION {
        return Err(ConnectError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(sql).await.map_err(failed(version))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(failed(version))?;
        tracing::info!(schema, version, "foldstore schema migrated");
    }
    tx.commit().await.map_err(failed(SCHEMA_VERSION))?;
    Ok(())
}

/// Refuses a log whose transaction ids are ahead of the cluster's (a logical restore
/// into another cluster): new events would sort before stored ones.
pub(crate) async fn check_transaction_ids(
    client: &Client,
    schema: &str,
) -> Result<(), ConnectError> {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT tx FROM \"{schema}\".events ORDER BY tx DESC, seq DESC LIMIT 1), \
                        pg_snapshot_xmax(pg_current_snapshot())"
            ),
            &[],
        )
        .await
        .map_err(|e| ConnectError::Setup {
            step: "checking the log's transaction ids",
            error: backend(e, Effect::None),
        })?;
    let decode = |e| ConnectError::Setup {
        step: "checking the log's transaction ids",
        error: backend(e, Effect::None),
    };
    let stored: Option<Xid8> = row.try_get(0).map_err(decode)?;
    let next: Xid8 = row.try_get(1).map_err(decode)?;
    match stored {
        Some(stored) if stored >= next => Err(ConnectError::TransactionIdsAhead {
            schema: schema.to_owned(),
            stored: stored.0,
            next: next.0,
        }),
        _ => Ok(()),
    }
}

async fn stored_version(client: &Client, schema: &str) -> Result<i32, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM \"{schema}\".schema_version"),
            &[],
        )
        .await?;
    row.try_get(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(check_schema_name("foldstore").is_ok());
        assert!(check_schema_name("foldstore_test_0a1b").is_ok());
        assert!(check_schema_name("_x").is_ok());
        for bad in ["", "1x", "Fold", "a-b", "a\"b", "pg_x", &"a".repeat(41)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}
