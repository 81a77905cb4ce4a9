//! The HTTP calls the scenarios make, and how an append's answer is classified:
//! acknowledged, failed (nothing written) or unknown (written whole or not at all).

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::HarnessError;

/// What an append request came to, as the client saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A 2xx answer: the events are stored.
    Ok {
        /// The position of the last event.
        position: u128,
        /// The stream's revision after the append.
        next_expected_revision: u64,
    },
    /// Nothing was written: the connection was refused before the request was sent,
    /// or a 4xx answer.
    Failed {
        /// The status (0 when no connection was made).
        status: u16,
        /// The problem's `code`, or the transport error.
        code: String,
    },
    /// The request was sent but no answer said what happened (a reset, a timeout, a
    /// 5xx): the append is stored whole or not at all.
    Unknown {
        /// The status (0 when there was none).
        status: u16,
        /// The problem's `code`, or the transport error.
        code: String,
    },
}

/// An event as a read returned it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The event id.
    pub id: String,
    /// The stream.
    pub stream: String,
    /// The event type.
    pub event_type: String,
    /// The revision in its stream.
    pub revision: u64,
    /// The position in `$all`.
    pub position: u128,
    /// The data.
    pub data: Value,
}

impl Stored {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v["id"].as_str()?.to_owned(),
            stream: v["stream"].as_str()?.to_owned(),
            event_type: v["type"].as_str()?.to_owned(),
            revision: v["revision"].as_u64()?,
            position: v["position"].as_str()?.parse().ok()?,
            data: v["data"].clone(),
        })
    }
}

/// An HTTP client with an optional bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
            token: None,
        }
    }

    /// The same client sending `token`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            http: self.http.clone(),
            token: Some(token.to_owned()),
        }
    }

    /// The underlying client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request with the token set.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// `POST /streams/{stream}` with `expected_revision` and `events` (JSON objects
    /// with `id`, `type`, `data`).
    pub async fn append(
        &self,
        base: &str,
        stream: &str,
        expected: Value,
        events: &[Value],
    ) -> Outcome {
        let body = json!({"expected_revision": expected, "events": events});
        let sent = self
            .request(reqwest::Method::POST, &format!("{base}/streams/{stream}"))
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Outcome::Failed {
                    status: 0,
                    code: format!("connect: {e}"),
                };
            }
            Err(e) => {
                return Outcome::Unknown {
                    status: 0,
                    code: format!("transport: {e}"),
                };
            }
        };
        let status = response.status().as_u16();
        let body: Value = match response.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) if (200..300).contains(&status) => {
                return Outcome::Unknown {
                    status,
                    code: format!("answer cut: {e}"),
                };
            }
            Err(_) => Value::Null,
        };
        let code = body["code"].as_str().unwrap_or("").to_owned();
        if (200..300).contains(&status) {
            match (
                body["position"].as_str().and_then(|p| p.parse().ok()),
                body["next_expected_revision"].as_u64(),
            ) {
                (Some(position), Some(next_expected_revision)) => Outcome::Ok {
                    position,
                    next_expected_revision,
                },
                _ => Outcome::Unknown {
                    status,
                    code: format!("unreadable answer {body}"),
                },
            }
        } else if (400..500).contains(&status) {
            Outcome::Failed { status, code }
        } else {
            Outcome::Unknown { status, code }
        }
    }

    /// A GET answered with 2xx JSON, or an error naming the request.
    pub async fn get_json(&self, url: &str) -> Result<Value, HarnessError> {
        let r = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|e| HarnessError::request(format!("GET {url}"), e.to_string()))?;
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| HarnessError::request(format!("GET {url}"), e.to_string()))?;
        if !status.is_success() {
            return Err(HarnessError::request(
                format!("GET {url}"),
                format!("{status}: {text}"),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|e| HarnessError::request(format!("GET {url}"), format!("{e}: {text}")))
    }

    /// Every event of `$all`, in order, paging with `next`.
    pub async fn read_all(&self, base: &str) -> Result<Vec<Stored>, HarnessError> {
        self.read_pages(&format!("{base}/all?limit=1000"), true)
            .await
    }

    /// Every event of one stream, in order; empty when it does not exist.
    pub async fn read_stream(&self, base: &str, stream: &str) -> Result<Vec<Stored>, HarnessError> {
        self.read_pages(&format!("{base}/streams/{stream}?limit=1000"), false)
            .await
    }

    async fn read_pages(&self, first: &str, global: bool) -> Result<Vec<Stored>, HarnessError> {
        let mut out = Vec::new();
        let mut url = first.to_owned();
        loop {
            let page = match self.get_json(&url).await {
                Ok(p) => p,
                Err(HarnessError::Request { detail, .. })
                    if !global && detail.starts_with("404") =>
                {
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            for e in page["events"].as_array().into_iter().flatten() {
                out.push(Stored::from_json(e).ok_or_else(|| {
                    HarnessError::request(format!("GET {url}"), format!("unreadable event {e}"))
                })?);
            }
            let next = match &page["next"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Ok(out),
            };
            url = format!("{first}&from={next}");
        }
    }
}
