//! `foldstore subscriptions ...`: manage the persistent subscription groups of a
//! running server (`--server`), through its `/subscriptions` routes.
//!
//! Groups are served by a server process (it holds their consumers, leases and
//! checkpoints), so these commands always talk to one: there is no local mode.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::cli::RemoteArgs;
use crate::error::CliError;
use crate::remote::{Remote, segment};

/// Examples in `foldstore subscriptions --help`.
const EXAMPLES: &str = "Examples:
  foldstore --server http://127.0.0.1:2113 subscriptions create account-42 mailer
  foldstore --server http://127.0.0.1:2113 subscriptions create '$all' audit --category account --start-from end
  foldstore --server http://127.0.0.1:2113 subscriptions list
  foldstore --server http://127.0.0.1:2113 subscriptions info account-42 mailer
  foldstore --server http://127.0.0.1:2113 subscriptions update account-42 mailer --message-timeout-ms 60000
  foldstore --server http://127.0.0.1:2113 subscriptions replay-parked account-42 mailer
  foldstore --server http://127.0.0.1:2113 subscriptions delete account-42 mailer

A group shares the events of one stream, or of `$all` (quote it in shells), among
competing consumers: they poll POST /subscriptions/{stream}/{group}/messages and ack
by key (see the HTTP API). Each command prints the server's JSON answer on one line.
Creating, updating, deleting and replaying need a token with the admin scope; list
and info need read.";

/// `foldstore subscriptions ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionsCommand {
    /// List the groups, of every stream or of one (`$all` for the groups on `$all`).
    List {
        /// Only the groups of this stream, or of `$all`.
        #[arg(value_name = "STREAM|$all")]
        stream: Option<String>,
    },
    /// Create a group; it is served at once.
    Create(SettingsArgs),
    /// Change the given settings of a group (the others keep their value).
    Update(SettingsArgs),
    /// Show a group: settings, consumers, events in flight, parked count, checkpoint.
    Info(GroupArgs),
    /// Delete a group (its checkpoint and parked events stay).
    Delete(GroupArgs),
    /// Deliver a group's parked events again.
    ReplayParked(GroupArgs),
}

/// The examples, for the subcommand's `after_help`.
pub(crate) fn examples() -> &'static str {
    EXAMPLES
}

/// A group.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// The stream the group reads, or `$all`.
    #[arg(value_name = "STREAM|$all")]
    stream: String,
    /// The group's name.
    #[arg(value_name = "GROUP")]
    group: String,
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StartFrom {
    /// The first event.
    Start,
    /// After the last event now.
    End,
}

/// How a group picks the consumer of an event.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Strategy {
    /// Each event to the next consumer with room.
    RoundRobin,
    /// Every event to the first consumer with room.
    DispatchToSingle,
    /// A stream's events to one consumer.
    Pinned,
}

/// A group and the settings to give it.
#[derive(Debug, Args)]
pub(crate) struct SettingsArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Where the group starts when it has no checkpoint.
    #[arg(long, value_enum, conflicts_with = "start_after")]
    start_from: Option<StartFrom>,
    /// Start after this revision (stream group) or position (`$all` group).
    #[arg(long, value_name = "N")]
    start_after: Option<u128>,
    /// An event not acked within this many milliseconds is delivered again.
    #[arg(long, value_name = "MS")]
    message_timeout_ms: Option<u64>,
    /// An event delivered again more often than this is parked.
    #[arg(long, value_name = "N")]
    max_retry_count: Option<u32>,
    /// How many read, unfinished events the group holds at most.
    #[arg(long, value_name = "N")]
    live_buffer_size: Option<usize>,
    /// The buffer of a consumer that does not give one.
    #[arg(long, value_name = "N")]
    consumer_buffer_size: Option<usize>,
    /// How consumers are chosen.
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// `$all` groups: only streams of this category.
    #[arg(long, value_name = "CATEGORY")]
    category: Option<String>,
    /// `$all` groups: only streams whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// `$all` groups: only events of this type; repeat for several.
    #[arg(long = "type", value_name = "TYPE")]
    event_types: Vec<String>,
}

impl SettingsArgs {
    /// The settings body: the fields given, and no others.
    fn body(&self) -> Value {
        let mut body = Map::new();
        let mut put = |key: &str, value: Value| {
            body.insert(key.to_owned(), value);
        };
        if let Some(s) = self.start_from {
            put(
                "start_from",
                json!(match s {
                    StartFrom::Start => "start",
                    StartFrom::End => "end",
                }),
            );
        }
        if let Some(n) = self.start_after {
            put("start_after", json!(n.to_string()));
        }
        if let Some(ms) = self.message_timeout_ms {
            put("message_timeout_ms", json!(ms));
        }
        if let Some(n) = self.max_retry_count {
            put("max_retry_count", json!(n));
        }
        if let Some(n) = self.live_buffer_size {
            put("live_buffer_size", json!(n));
        }
        if let Some(n) = self.consumer_buffer_size {
            put("consumer_buffer_size", json!(n));
        }
        if let Some(s) = self.strategy {
            put(
                "strategy",
                json!(match s {
                    Strategy::RoundRobin => "round_robin",
                    Strategy::DispatchToSingle => "dispatch_to_single",
                    Strategy::Pinned => "pinned",
                }),
            );
        }
        if self.category.is_some() || self.prefix.is_some() || !self.event_types.is_empty() {
            let mut filter = Map::new();
            if let Some(c) = &self.category {
                filter.insert("category".into(), json!(c));
            }
            if let Some(p) = &self.prefix {
                filter.insert("prefix".into(), json!(p));
            }
            if !self.event_types.is_empty() {
                filter.insert("types".into(), json!(self.event_types));
            }
            put("filter", Value::Object(filter));
        }
        Value::Object(body)
    }
}

fn group_path(g: &GroupArgs) -> String {
    format!(
        "/subscriptions/{}/{}",
        segment(&g.stream),
        segment(&g.group)
    )
}

/// Runs `foldstore subscriptions ...`.
pub(crate) async fn run(
    remote: &RemoteArgs,
    command: SubscriptionsCommand,
) -> Result<(), CliError> {
    let Some(url) = &remote.server else {
        return Err(CliError::Usage(
            "persistent subscriptions live in a running server: give --server URL (or FOLDSTORE_SERVER), such as the one `foldstore serve` prints".to_owned(),
        ));
    };
    let server = Remote::new(url, remote.token.clone(), remote.ca_cert.as_deref())?;
    use reqwest::Method;
    let answer = match &command {
        SubscriptionsCommand::List { stream } => {
            let path = match stream {
                Some(s) => format!("/subscriptions/{}", segment(s)),
                None => "/subscriptions".to_owned(),
            };
            server.call(Method::GET, &path, None).await?
        }
        SubscriptionsCommand::Create(args) => {
            server
                .call(Method::PUT, &group_path(&args.group), Some(args.body()))
                .await?
        }
        SubscriptionsCommand::Update(args) => {
            server
                .call(Method::POST, &group_path(&args.group), Some(args.body()))
                .await?
        }
        SubscriptionsCommand::Info(g) => server.call(Method::GET, &group_path(g), None).await?,
        SubscriptionsCommand::Delete(g) => {
            server.call(Method::DELETE, &group_path(g), None).await?;
            Some(json!({"stream": g.stream, "group": g.group, "deleted": true}))
        }
        SubscriptionsCommand::ReplayParked(g) => {
            let path = format!("{}/replay-parked", group_path(g));
            server.call(Method::POST, &path, None).await?
        }
    };
    if let Some(answer) = answer {
        println!("{answer}");
    }
    Ok(())
}
