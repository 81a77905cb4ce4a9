//! Where the store is: `--data-dir` and `--database` turned into a database location.

use std::path::{Path, PathBuf};

/// The database file inside a data directory.
pub(crate) const DATABASE_FILE: &str = "foldstore.db";

/// A database the CLI can be pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DatabaseLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A schema in a PostgreSQL database.
    Postgres {
        /// The `postgres://` URL.
        url: String,
        /// The schema holding foldstore's tables (`--pg-schema`, default `foldstore`).
        schema: String,
        /// Connection settings (`--pg-pool-size`, `--pg-statement-timeout-ms`).
        tuning: PgTuning,
    },
}

/// Connection settings of a PostgreSQL store; `None` keeps the store's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PgTuning {
    /// The most connections the store opens (`--pg-pool-size`).
    pub(crate) pool_size: Option<usize>,
    /// `statement_timeout` in milliseconds, 0 for the server's own setting
    /// (`--pg-statement-timeout-ms`).
    pub(crate) statement_timeout_ms: Option<u64>,
}

/// A `--database` value that names no usable database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DatabaseUrlError {
    /// The value was empty.
    #[error("the database URL is empty: use sqlite:///path/to/foldstore.db or a plain path")]
    Empty,
    /// `sqlite://` with nothing after it.
    #[error("{0:?} names no file: use sqlite:///absolute/path.db or sqlite://relative/path.db")]
    NoPath(String),
    /// A scheme the CLI does not know.
    #[error(
        "unsupported database scheme {scheme:?} in {url:?}: use sqlite:///path, a plain path, or postgres://"
    )]
    UnsupportedScheme {
        /// The scheme before `://`.
        scheme: String,
        /// The whole value.
        url: String,
    },
    /// `--pg-schema` with a SQLite database.
    #[error("--pg-schema is for PostgreSQL databases: drop it, or pass --database postgres://...")]
    SchemaWithoutPostgres,
    /// `--pg-pool-size` or `--pg-statement-timeout-ms` with a SQLite database.
    #[error(
        "--pg-pool-size and --pg-statement-timeout-ms are for PostgreSQL databases: drop them (and FOLDSTORE_PG_POOL_SIZE, FOLDSTORE_PG_STATEMENT_TIMEOUT_MS), or pass --database postgres://..."
    )]
    TuningWithoutPostgres,
    /// Query parameters, which the CLI does not interpret.
    #[error("{0:?} has query parameters, which foldstore does not read: drop everything from `?`")]
    QueryParameters(String),
}

impl DatabaseLocation {
    /// The location given by `--database`, else the database file in `data_dir`;
    /// `pg_schema` (`--pg-schema`) replaces the default PostgreSQL schema and `tuning`
    /// the default connection settings.
    pub(crate) fn resolve(
        database: Option<&str>,
        data_dir: &Path,
        pg_schema: Option<&str>,
        tuning: PgTuning,
    ) -> Result<Self, DatabaseUrlError> {
        let location = match database {
            Some(url) => Self::parse(url)?,
            None => Self::Sqlite(data_dir.join(DATABASE_FILE)),
        };
        match location {
            Self::Postgres { url, schema, .. } => Ok(Self::Postgres {
                url,
                schema: pg_schema.map_or(schema, str::to_owned),
                tuning,
            }),
            Self::Sqlite(_) if pg_schema.is_some() => Err(DatabaseUrlError::SchemaWithoutPostgres),
            Self::Sqlite(_) if tuning != PgTuning::default() => {
                Err(DatabaseUrlError::TuningWithoutPostgres)
            }
            location => Ok(location),
        }
    }

    /// Where the data is, for the logs: the SQLite file, or the PostgreSQL user, hosts,
    /// database and schema (never the password).
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres { url, schema, .. } => match url.parse::<tokio_postgres::Config>() {
                Ok(config) => {
                    let hosts: Vec<String> = config
                        .get_hosts()
                        .iter()
                        .enumerate()
                        .map(|(i, host)| {
                            let host = match host {
                                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                            };
                            match config.get_ports().get(i).or(config.get_ports().first()) {
                                Some(port) => format!("{host}:{port}"),
                                None => host,
                            }
                        })
                        .collect();
                    format!(
                        "postgres://{}@{}/{} schema {schema}",
                        config.get_user().unwrap_or(""),
                        hosts.join(","),
                        config.get_dbname().unwrap_or(""),
                    )
                }
                Err(_) => format!("postgres (schema {schema})"),
            },
        }
    }

    /// Parses `sqlite:///abs/path`, `sqlite://rel/path`, `sqlite:path`, a plain path, or
    /// `postgres://...` / `postgresql://...`.
    pub(crate) fn parse(url: &str) -> Result<Self, DatabaseUrlError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "sqlite" => Self::sqlite_path(url, rest),
                "postgres" | "postgresql" => Ok(Self::Postgres {
                    url: url.to_owned(),
                    schema: foldstore_postgres::DEFAULT_SCHEMA.to_owned(),
                    tuning: PgTuning::default(),
                }),
                _ => Err(DatabaseUrlError::UnsupportedScheme {
                    scheme: scheme.to_owned(),
                    url: url.to_owned(),
                }),
            };
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            return Self::sqlite_path(url, rest);
        }
        Ok(Self::Sqlite(PathBuf::from(url)))
    }

    fn sqlite_path(url: &str, path: &str) -> Result<Self, DatabaseUrlError> {
        if path.contains('?') {
            return Err(DatabaseUrlError::QueryParameters(url.to_owned()));
        }
        if path.is_empty() {
            return Err(DatabaseUrlError::NoPath(url.to_owned()));
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(p: &str) -> Result<DatabaseLocation, DatabaseUrlError> {
        Ok(DatabaseLocation::Sqlite(PathBuf::from(p)))
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            DatabaseLocation::parse("sqlite:///var/lib/fs.db"),
            sqlite("/var/lib/fs.db")
        );
        assert_eq!(
            DatabaseLocation::parse("sqlite://data/fs.db"),
            sqlite("data/fs.db")
        );
        assert_eq!(DatabaseLocation::parse("sqlite:fs.db"), sqlite("fs.db"));
        assert_eq!(DatabaseLocation::parse("SQLite:///x.db"), sqlite("/x.db"));
    }

    #[test]
    fn plain_paths() {
        assert_eq!(DatabaseLocation::parse("/tmp/a.db"), sqlite("/tmp/a.db"));
        assert_eq!(DatabaseLocation::parse("rel/a.db"), sqlite("rel/a.db"));
        assert_eq!(DatabaseLocation::parse(" a.db "), sqlite("a.db"));
    }

    #[test]
    fn postgres_is_recognised() {
        for url in ["postgres://u@h/db", "postgresql://localhost/x"] {
            assert_eq!(
                DatabaseLocation::parse(url),
                Ok(DatabaseLocation::Postgres {
                    url: url.to_owned(),
                    schema: "foldstore".to_owned(),
                    tuning: PgTuning::default(),
                })
            );
        }
        let tuning = PgTuning {
            pool_size: Some(40),
            statement_timeout_ms: Some(0),
        };
        assert_eq!(
            DatabaseLocation::resolve(Some("postgres://h/db"), Path::new("d"), Some("s1"), tuning),
            Ok(DatabaseLocation::Postgres {
                url: "postgres://h/db".to_owned(),
                schema: "s1".to_owned(),
                tuning,
            })
        );
        assert_eq!(
            DatabaseLocation::resolve(None, Path::new("d"), Some("s1"), PgTuning::default()),
            Err(DatabaseUrlError::SchemaWithoutPostgres)
        );
        assert_eq!(
            DatabaseLocation::resolve(None, Path::new("d"), None, tuning),
            Err(DatabaseUrlError::TuningWithoutPostgres)
        );
    }

    #[test]
    fn a_postgres_description_has_no_password() {
        let d = DatabaseLocation::parse("postgres://app:s3cret@db.internal:5433/events")
            .unwrap()
            .describe();
        assert_eq!(d, "postgres://app@db.internal:5433/events schema foldstore");
    }

    #[test]
    fn bad_urls() {
        assert_eq!(DatabaseLocation::parse(""), Err(DatabaseUrlError::Empty));
        assert!(matches!(
            DatabaseLocation::parse("sqlite://"),
            Err(DatabaseUrlError::NoPath(_))
        ));
        assert!(matches!(
            DatabaseLocation::parse("mysql://h/db"),
            Err(DatabaseUrlError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            DatabaseLocation::parse("sqlite:///a.db?mode=ro"),
            Err(DatabaseUrlError::QueryParameters(_))
        ));
    }

    #[test]
    fn data_dir_default() {
        assert_eq!(
            DatabaseLocation::resolve(None, Path::new("d"), None, PgTuning::default()),
            sqlite("d/foldstore.db")
        );
        assert_eq!(
            DatabaseLocation::resolve(
                Some("sqlite:///x.db"),
                Path::new("d"),
                None,
                PgTuning::default()
            ),
            sqlite("/x.db")
        );
    }
}
