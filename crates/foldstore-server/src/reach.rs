//! Which streams the caller reaches: every stream, or only those whose names start
//! with one of its token's prefixes.
//!
//! The token check ([`crate::auth`]) puts a [`Reach`] into every request it lets
//! through; handlers that name or count streams across the store (the streams
//! listing, the dashboard's figures) take it as an extractor and narrow what they
//! answer to it. A request that carries none (a server without tokens) reaches
//! every stream; a public route on a server with tokens is [`Reach::Anonymous`].

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The streams a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every stream: no tokens, or a token without prefixes.
    Everything,
    /// No stream: a public route called on a server that needs tokens, which may
    /// answer but must not tell anything about the streams.
    Anonymous,
    /// Only streams starting with one of these, for the token of this name. Never
    /// empty, and no prefix starts with another (see [`Reach::limited`]).
    Prefixes {
        /// The token's name, for messages.
        token: String,
        /// The prefixes.
        prefixes: Vec<String>,
    },
}

impl Reach {
    /// The reach of token `token` with `prefixes`; empty means every stream. A
    /// prefix that another one covers (`acct-1` beside `acct-`) is dropped, so that
    /// listing each prefix names every stream once.
    pub(crate) fn limited(token: &str, prefixes: &[String]) -> Self {
        if prefixes.is_empty() {
            return Reach::Everything;
        }
        let mut kept: Vec<String> = prefixes
            .iter()
            .filter(|p| {
                !prefixes
                    .iter()
                    .any(|q| q.len() < p.len() && p.starts_with(q.as_str()))
            })
            .cloned()
            .collect();
        kept.sort();
        kept.dedup();
        Reach::Prefixes {
            token: token.to_owned(),
            prefixes: kept,
        }
    }

    /// Whether the caller reaches every stream.
    pub(crate) fn is_everything(&self) -> bool {
        matches!(self, Reach::Everything)
    }

    /// The prefixes to list or count streams under, for a request that asked for
    /// `asked` (`None`: no filter). Every stream the answer names starts with
    /// `asked` and is reachable; a request that asked for something wholly outside
    /// the reach is refused with 403 `stream_forbidden`.
    ///
    /// - reaches everything: `asked`, or `""` for every stream;
    /// - `asked` starts with one of the prefixes: `asked` itself;
    /// - `asked` is broader than some prefixes: those prefixes;
    /// - no `asked`: every prefix.
    pub(crate) fn prefixes_for(&self, asked: Option<&str>) -> Result<Vec<String>, ApiError> {
        let (token, prefixes) = match self {
            Reach::Everything => return Ok(vec![asked.unwrap_or("").to_owned()]),
            Reach::Anonymous => return Ok(Vec::new()),
            Reach::Prefixes { token, prefixes } => (token, prefixes),
        };
        let Some(asked) = asked else {
            return Ok(prefixes.clone());
        };
        if prefixes.iter().any(|p| asked.starts_with(p.as_str())) {
            return Ok(vec![asked.to_owned()]);
        }
        let narrower: Vec<String> = prefixes
            .iter()
            .filter(|p| p.starts_with(asked))
            .cloned()
            .collect();
        if narrower.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "stream_forbidden",
                format!(
                    "token {token:?} only reaches streams starting with {}: prefix {asked:?} is outside them",
                    prefixes.join(", ")
                ),
            ));
        }
        Ok(narrower)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Reach {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Reach>()
            .cloned()
            .unwrap_or(Reach::Everything))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(prefixes: &[&str]) -> Reach {
        let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
        Reach::limited("t", &prefixes)
    }

    #[test]
    fn covered_prefixes_are_dropped() {
        assert_eq!(reach(&[]), Reach::Everything);
        let Reach::Prefixes { prefixes, .. } = reach(&["acct-1", "order-", "acct-", "acct-"])
        else {
            panic!("limited");
        };
        assert_eq!(prefixes, ["acct-", "order-"]);
    }

    #[test]
    fn asked_prefixes_are_kept_narrowed_or_refused() {
        let r = reach(&["acct-", "order-"]);
        assert_eq!(r.prefixes_for(None).unwrap(), ["acct-", "order-"]);
        assert_eq!(r.prefixes_for(Some("acct-12")).unwrap(), ["acct-12"]);
        assert_eq!(r.prefixes_for(Some("acct")).unwrap(), ["acct-"]);
        assert_eq!(r.prefixes_for(Some("")).unwrap(), ["acct-", "order-"]);
        let refused = r.prefixes_for(Some("bank")).unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.code(), "stream_forbidden");
        assert_eq!(
            Reach::Everything.prefixes_for(Some("bank")).unwrap(),
            ["bank"]
        );
        assert_eq!(Reach::Everything.prefixes_for(None).unwrap(), [""]);
    }
}
