//! Configuration of a [`crate::PostgresStore`].

use std::time::Duration;

use foldstore_core::Limits;

/// The schema foldstore uses when none is configured.
pub const DEFAULT_SCHEMA: &str = "foldstore";

/// How to connect to PostgreSQL and how the store behaves.
///
/// ```
/// use std::time::Duration;
/// use foldstore_postgres::PostgresOptions;
///
/// let options = PostgresOptions::new("postgres://app@db.internal:5432/events")
///     .schema("billing")
///     .pool_size(32)
///     .statement_timeout(Some(Duration::from_secs(10)));
/// assert_eq!(options.schema, "billing");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The database URL, `postgres://user:password@host:port/database` (or a libpq
    /// key-value string).
    pub url: String,
    /// The PostgreSQL schema holding foldstore's tables, created and migrated on
    /// connect. Lower-case letters, digits and `_`, starting with a letter or `_`, at
    /// most 40 bytes. Default `foldstore`.
    pub schema: String,
    /// The most pooled connections this store opens (appends, reads and the poller
    /// share them). Besides the pool, one connection listens for commit hints and two
    /// read pages of the global order and DCB queries (opened on first use; reads go
    /// to the pool while both are busy). Default 16.
    pub pool_size: usize,
    /// How many group-commit writers run transactions at once, each on its own
    /// connection. Default 2. On the 2-core development machine 1 to 4 writers all
    /// gave 6,600-11,000 single-event appends per second at concurrency 64 (release
    /// build, `tests/throughput.rs`, machine shared with other builds): the server's
    /// CPU, not commit latency, is the limit there. More writers help when commits
    /// (WAL flushes) dominate, as on network storage.
    pub writers: usize,
    /// The most appends one group-commit transaction carries. Default 256.
    pub max_batch: usize,
    /// PostgreSQL's `statement_timeout` for every statement this store runs; `None`
    /// leaves the server's setting. Default 30 s.
    pub statement_timeout: Option<Duration>,
    /// How long to wait for a new connection before an operation fails with
    /// `Unavailable`. Default 2 s.
    pub connect_timeout: Duration,
    /// Limits applied to every append.
    pub limits: Limits,
    /// How often the poller looks for new events while they keep coming. Default 5 ms.
    pub poll_interval: Duration,
    /// The longest pause between two polls when nothing changes (the poller doubles its
    /// pause up to this). Default 50 ms.
    pub idle_poll_interval: Duration,
    /// Whether to send a coalesced `NOTIFY` after commits (outside the append
    /// transactions) and `LISTEN` for other processes' hints, which wakes pollers
    /// early. Default on.
    pub notify: bool,
    /// How long `read_all`, `read_category` and `head_position` wait for this store's
    /// own acknowledged appends to become visible in the global order (they are hidden
    /// while an older transaction anywhere in the cluster is still running). After
    /// this the read returns what is visible, without them. Default 10 s.
    pub read_your_writes_timeout: Duration,
    /// How long a subscription keeps retrying reads while PostgreSQL is unreachable
    /// before it ends with the error (resume it with `After`). Default 60 s.
    pub subscription_retry: Duration,
    /// Test hook: hold each append transaction open for a random time up to this
    /// before `COMMIT`, so that transactions commit out of sequence order.
    #[doc(hidden)]
    pub test_commit_delay: Option<Duration>,
}

impl PostgresOptions {
    /// Options with defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 16,
            writers: 2,
            max_batch: 256,
            statement_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(2),
            limits: Limits::default(),
            poll_interval: Duration::from_millis(5),
            idle_poll_interval: Duration::from_millis(50),
            notify: true,
            read_your_writes_timeout: Duration::from_secs(10),
            subscription_retry: Duration::from_secs(60),
            test_commit_delay: None,
        }
    }

    /// Sets the schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the pool size.
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Sets the number of group-commit writers.
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers;
        self
    }

    /// Sets the statement timeout (`None`: the server's setting).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the append limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}
