//! `serve --otlp-endpoint`: the server's spans exported as OpenTelemetry traces over
//! OTLP/HTTP (protobuf).
//!
//! The SDK's batch processor sends from a thread of its own; each send runs on the
//! server's tokio runtime through the CLI's HTTP client ([`RuntimeClient`]), so no
//! second client or runtime is started and the export never blocks a request.
//!
//! What is exported: foldstore's spans at every level up to `debug` (a span per
//! request, named for its method and route template such as `POST /streams/{stream}`,
//! and its children such as `sqlite.commit` or `postgres.commit`, the wait for the
//! group commit that carries an append), with foldstore's `info` and louder events
//! inside them. `RUST_LOG` filters the log lines only.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{Layer, Registry};

use crate::error::CliError;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the flush at shutdown may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The trace export: the layer for the log subscriber, and the provider to flush and
/// stop at shutdown.
pub(crate) struct Export {
    provider: SdkTracerProvider,
}

/// An HTTP client for the exporter that sends on the server's tokio runtime.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let answer = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = answer.await??;
        Ok(Response::builder().status(status).body(body)?)
    }
}

/// The URL spans are posted to: `endpoint` itself when it has a path, else
/// `endpoint` + `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
fn traces_url(endpoint: &str) -> Result<String, CliError> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| {
        CliError::Usage(format!(
            "--otlp-endpoint {endpoint:?} is not a URL ({e}): give the collector's OTLP/HTTP address, such as http://127.0.0.1:4318"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "--otlp-endpoint {endpoint:?}: the export speaks OTLP over HTTP, so the URL starts with http:// or https://"
        )));
    }
    Ok(if url.path() == "/" {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_owned()
    })
}

/// Whether the export takes this span or event: foldstore's spans up to `debug`, and
/// its events from `info` up.
fn exported(metadata: &Metadata<'_>) -> bool {
    metadata.target().starts_with("foldstore")
        && if metadata.is_span() {
            *metadata.level() <= Level::DEBUG
        } else {
            *metadata.level() <= Level::INFO
        }
}

impl Export {
    /// Starts exporting to `endpoint`; returns the export and its layer.
    pub(crate) fn start(
        endpoint: &str,
    ) -> Result<(Self, Box<dyn Layer<Registry> + Send + Sync>), CliError> {
        let url = traces_url(endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Usage(format!("could not make the OTLP HTTP client: {e}")))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeClient {
                client,
                runtime: tokio::runtime::Handle::current(),
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Usage(format!("--otlp-endpoint {endpoint:?}: {e}")))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("foldstore").build())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("foldstore"))
            .with_filter(filter_fn(exported))
            .boxed();
        Ok((Self { provider }, layer))
    }

    /// Sends the spans not yet exported, and stops.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the last traces were not exported"),
            Err(e) => tracing::warn!(error = %e, "the last traces were not exported"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint_only() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/custom/traces").unwrap(),
            "https://otel.example/custom/traces"
        );
        assert!(traces_url("127.0.0.1:4318").is_err());
        assert!(traces_url("grpc://127.0.0.1:4317").is_err());
    }
}
