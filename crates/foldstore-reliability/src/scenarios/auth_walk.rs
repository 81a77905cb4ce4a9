//! Authorization walk: every operation of the server's own `/openapi.json`, called
//! with tokens limited by stream prefix (`acct-`) and by scope (read only, write
//! only) and with no token, naming streams and categories inside and outside the
//! prefix. A leak is any of: a 2xx for a request the token's scopes do not allow; a
//! 2xx for a request that names a stream, or asks for a `prefix`, outside the token's
//! prefixes (these must be refused); a 2xx answer to the prefix-limited token that
//! names, or carries data of, a stream outside its prefixes, or counts more streams
//! than it may see (a category outside the prefixes may be narrowed to nothing rather
//! than refused, so only its answer is judged); a 2xx without a token on a route that
//! is not public.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::Api;
use crate::error::HarnessError;
use crate::report::Report;
use crate::scenarios::{BackendKind, Env};
use crate::server::{Server, ServerSpec};

/// Options of the authorization walk.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: BackendKind,
}

/// What the prefix-limited token may see.
const INSIDE: &str = "acct-";
/// Names and markers it must never see.
const OUTSIDE_MARKERS: [&str; 3] = ["bank-1", "secret-1", "LEAKMARK"];

struct Token {
    role: &'static str,
    secret: Option<String>,
    read: bool,
    write: bool,
    admin: bool,
    prefix_limited: bool,
}

fn make_token(
    env: &Env,
    file: &std::path::Path,
    scopes: &str,
    prefix: Option<&str>,
) -> Result<String, HarnessError> {
    let mut c = Command::new(&env.foldstore);
    c.args(["token", "create", "--scopes", scopes, "--append-to"])
        .arg(file);
    if let Some(p) = prefix {
        c.args(["--prefix", p]);
    }
    let out = c
        .output()
        .map_err(|e| HarnessError::io("run `foldstore token create`", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .filter(|t| t.starts_with("fst_"))
        .map(str::to_owned)
        .ok_or_else(|| {
            HarnessError::request(
                "foldstore token create",
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
}

/// One request of the walk.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Names a stream or asks for a prefix outside `acct-`: must be refused.
    outside: bool,
    subscribe: bool,
}

/// Runs the walk.
pub async fn run(env: &Env, o: &Options) -> Result<Report, HarnessError> {
    let fresh = env.fresh(o.backend)?;
    let dir = env.scratch_dir()?;
    let tokens_file = dir.path().join("tokens");
    let admin = make_token(env, &tokens_file, "admin", None)?;
    let tokens = vec![
        Token {
            role: "prefix acct- read,write",
            secret: Some(make_token(env, &tokens_file, "read,write", Some(INSIDE))?),
            read: true,
            write: true,
            admin: false,
            prefix_limited: true,
        },
        Token {
            role: "read only",
            secret: Some(make_token(env, &tokens_file, "read", None)?),
            read: true,
            write: false,
            admin: false,
            prefix_limited: false,
        },
        Token {
            role: "write only",
            secret: Some(make_token(env, &tokens_file, "write", None)?),
            read: false,
            write: true,
            admin: false,
            prefix_limited: false,
        },
        Token {
            role: "no token",
            secret: None,
            read: false,
            write: false,
            admin: false,
            prefix_limited: false,
        },
    ];
    let mut spec = ServerSpec::new(&env.foldstore, fresh.backend())?;
    spec.extra = vec!["--tokens-file".into(), tokens_file.display().to_string()];
    let server = Server::start(&spec).await?;
    let base = spec.url();
    let api = Api::new(Duration::from_secs(10));
    let admin_api = api.with_token(&admin);
    for stream in ["acct-1", "bank-1", "secret-1"] {
        let marker = if stream == "acct-1" {
            "visible"
        } else {
            "LEAKMARK"
        };
        let events = [json!({"type": "Opened", "data": {"marker": marker}})];
        admin_api.append(&base, stream, json!("any"), &events).await;
    }
    let doc = admin_api.get_json(&format!("{base}/openapi.json")).await?;
    let calls = plan(&doc);
    let mut leaks = Vec::new();
    let mut requests = 0u64;
    let mut operations = 0u64;
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, i)| i)
    {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                operations += 1;
            }
        }
    }
    for call in &calls {
        // A public route answers 2xx without a token.
        let public = {
            let (status, _) = send(&api, &base, call).await;
            (200..300).contains(&status)
        };
        for t in &tokens {
            requests += 1;
            let client = match &t.secret {
                Some(s) => api.with_token(s),
                None => api.clone(),
            };
            let (status, body) = send(&client, &base, call).await;
            if !(200..300).contains(&status) {
                continue;
            }
            let what = format!("{} {} {} -> {status}", t.role, call.method, call.path);
            let allowed = public
                || match call.method {
                    Method::GET => t.read,
                    Method::POST => t.write,
                    _ => t.admin,
                };
            if !allowed {
                leaks.push(format!("scope: {what}"));
                continue;
            }
            if t.prefix_limited && call.outside {
                leaks.push(format!("prefix: {what}"));
                continue;
            }
            if t.prefix_limited || (public && t.secret.is_none()) {
                if let Some(m) = OUTSIDE_MARKERS.iter().find(|m| body.contains(*m)) {
                    leaks.push(format!("body names {m:?}: {what}"));
                    continue;
                }
                if call.path.starts_with("/api/stats")
                    && let Ok(v) = serde_json::from_str::<Value>(&body)
                    && v["streams"].as_u64().unwrap_or(0) > 1
                {
                    leaks.push(format!(
                        "count: {what} counts {} streams, the token sees 1",
                        v["streams"]
                    ));
                }
            }
        }
    }
    server.stop().await;
    let mut r = Report::new("auth-walk", spec.backend.name());
    r.figure("operations", operations);
    r.figure("tokens", tokens.len() as u64);
    r.figure("requests", requests);
    r.check(
        "every documented operation was walked",
        operations > 0 && calls.len() as u64 >= operations,
        format!("{} calls for {operations} operations", calls.len()),
    );
    let shown: Vec<String> = leaks.iter().take(10).cloned().collect();
    r.zero("leaks", leaks.len() as u64, &shown);
    drop(dir);
    drop(fresh);
    Ok(r)
}

/// The calls for every operation of the document: path parameters filled inside and
/// outside the prefix, and `prefix`/`category` query parameters where documented.
fn plan(doc: &Value) -> Vec<Call> {
    let mut calls = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        if path.starts_with("/auth/") {
            continue;
        }
        for (method, op) in item.as_object().into_iter().flatten() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&method.as_str()) {
                continue;
            }
            let query: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            let subscribe = path.ends_with("/subscribe");
            let body = |stream: &str| match (method.as_str(), path.as_str()) {
                ("POST", "/streams/{stream}") => Some(json!({
                    "expected_revision": "any",
                    "events": [{"type": "Walked", "data": {"to": stream}}]
                })),
                ("PUT", _) => Some(json!({})),
                _ => None,
            };
            for (stream, category, outside) in [("acct-1", "acct", false), ("bank-1", "bank", true)]
            {
                let named = path.contains('{');
                let filled = path
                    .replace("{stream}", stream)
                    .replace("{category}", category);
                if named || !outside {
                    calls.push(Call {
                        method: method.clone(),
                        path: filled.clone(),
                        body: body(stream),
                        outside: outside && path.contains("{stream}"),
                        subscribe,
                    });
                }
                let prefix = if outside { "bank" } else { INSIDE };
                for (param, value) in [("prefix", prefix), ("category", category)] {
                    if query.iter().any(|q| q == param) {
                        calls.push(Call {
                            method: method.clone(),
                            path: format!("{filled}?{param}={value}"),
                            body: body(stream),
                            outside: outside && (param == "prefix" || path.contains("{stream}")),
                            subscribe,
                        });
                    }
                }
            }
        }
    }
    calls
}

/// Sends a call; the status and up to 256 KiB of the body (a subscription is read for
/// half a second).
async fn send(api: &Api, base: &str, call: &Call) -> (u16, String) {
    let mut request = api.request(call.method.clone(), &format!("{base}{}", call.path));
    if let Some(b) = &call.body {
        request = request.json(b);
    }
    let Ok(response) = request.send().await else {
        return (0, String::new());
    };
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let limit = if call.subscribe {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() > 256 * 1024 {
                break;
            }
        }
    })
    .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}
