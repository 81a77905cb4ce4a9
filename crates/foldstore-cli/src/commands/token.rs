//! `foldstore token create`: a fresh bearer token and its tokens-file line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use foldstore_server::auth::{Scope, token_line};
use rand::RngCore;

use crate::error::CliError;

/// `foldstore token ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a new random token; print it once, with the line for the tokens file.
    #[command(after_help = "Examples:
  foldstore token create --scopes read,write --prefix account-
  foldstore token create --name ops --scopes admin --append-to /etc/foldstore/tokens
  foldstore serve --bind 0.0.0.0 --tokens-file /etc/foldstore/tokens --tls-cert cert.pem --tls-key key.pem

Standard output gets two lines: the token (shown only now: the file keeps only its
SHA-256), then the tokens-file line. With --append-to the line is added to that file
(created readable by its owner only). Clients send the token as
`Authorization: Bearer <token>`; the CLI takes --token or FOLDSTORE_TOKEN.

Scopes: read (reads, subscriptions), write (appends), admin (deletes, metadata writes,
/metrics; implies read and write). --prefix limits the token to streams whose name
starts with it (repeat for several); it also filters $all, categories and
subscriptions.")]
    Create(CreateArgs),
}

/// Options of `foldstore token create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Comma-separated scopes: read, write, admin.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
    pub(crate) scopes: Vec<Scope>,
    /// Limit the token to streams starting with this; repeat for several.
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub(crate) prefixes: Vec<String>,
    /// A name for the token, shown in the server's logs (never the token itself).
    #[arg(long, default_value = "token")]
    pub(crate) name: String,
    /// Append the line to this tokens file.
    #[arg(long, value_name = "FILE")]
    pub(crate) append_to: Option<PathBuf>,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text).ok_or_else(|| format!("{text:?} is not a scope: use read, write or admin"))
}

/// A new token: `fst_` and 32 random bytes in hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::from("fst_");
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// Runs `foldstore token`.
pub(crate) fn run(command: TokenCommand) -> Result<(), CliError> {
    let TokenCommand::Create(args) = command;
    if args.name.is_empty() || args.name.contains(char::is_whitespace) || args.name.contains('#') {
        return Err(CliError::Usage(
            "--name must be one word without spaces or #".to_owned(),
        ));
    }
    if let Some(bad) = args
        .prefixes
        .iter()
        .find(|p| p.is_empty() || p.contains([',', '#']) || p.contains(char::is_whitespace))
    {
        return Err(CliError::Usage(format!(
            "--prefix {bad:?}: a prefix is part of a stream name, without spaces, commas or #"
        )));
    }
    let token = new_token();
    let line = token_line(&args.name, &token, &args.scopes, &args.prefixes);
    if let Some(path) = &args.append_to {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| CliError::io(format!("could not open {}", path.display()), e))?;
        writeln!(file, "{line}")
            .map_err(|e| CliError::io(format!("could not write {}", path.display()), e))?;
        eprintln!(
            "token: added {:?} to {} (restart the server to load it)",
            args.name,
            path.display()
        );
    } else {
        eprintln!("token: add the second line to the server's tokens file");
    }
    eprintln!("token: the token is shown only now; keep it secret");
    println!("{token}");
    println!("{line}");
    Ok(())
}
