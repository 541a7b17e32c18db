//! The export pipeline: a tracer provider whose batch processor sends
//! finished spans to an OTLP/HTTP receiver as protobuf.
//!
//! This module owns the exporter's settings (which endpoint and service
//! name win), its HTTP client, and its background thread's life: the
//! [`Pipeline`] is that thread's owner and [`Pipeline::shutdown`] its end
//! (flushing what is left). It must never send anything when traces are off.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config::TraceConfig;

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest receiver answer read (it is only a status and a small message).
const MAX_ANSWER: usize = 64 * 1024;

/// Why the export pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("traces need a Tokio runtime to send from")]
    NoRuntime,
}

/// Where spans go and what they are called, after the environment had its say.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Full URL spans are posted to (`.../v1/traces`).
    pub endpoint: String,
    pub service_name: String,
}

impl Settings {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (verbatim), else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `[trace] otlp_endpoint` (both base
    /// URLs, `/v1/traces` appended); `OTEL_SERVICE_NAME`, else
    /// `[trace] service_name`. Empty variables count as unset. `None`: off.
    pub fn resolve(cfg: &TraceConfig, env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let endpoint = match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(full) => full,
            None => {
                let base = env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .or_else(|| Some(cfg.otlp_endpoint.clone()).filter(|e| !e.is_empty()))?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
        };
        Some(Self {
            endpoint,
            service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| cfg.service_name.clone()),
        })
    }
}

/// The running exporter: owns the batch processor's thread.
pub struct Pipeline {
    provider: SdkTracerProvider,
    pub settings: Settings,
}

impl Pipeline {
    /// Build the exporter when traces are configured; `Ok(None)` when off.
    /// Must be called inside the Tokio runtime the exports will run on.
    pub fn new(cfg: &TraceConfig) -> Result<Option<Self>, TraceError> {
        let Some(settings) = Settings::resolve(cfg, |k| std::env::var(k).ok()) else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(OnRuntime::new(runtime))
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(cfg.export_interval)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Some(Self { provider, settings }))
    }

    /// The tracer the `tracing` layer records spans with.
    pub(crate) fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer("pollcast")
    }

    /// Send every span still waiting, then stop the batch thread. Blocks
    /// (the SDK waits on its thread), so it runs on a blocking thread while
    /// the runtime still turns for the last export.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "could not flush the last spans");
        }
    }
}

/// The exporter's HTTP client. The SDK's batch thread is no Tokio thread,
/// so each export is spawned onto the runtime pollcast runs on and awaited
/// from there; it reuses hyper (already pollcast's client), plain HTTP.
#[derive(Debug, Clone)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl OnRuntime {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        let client = {
            // hyper's pool spawns its connection tasks: inside the runtime.
            let _in = runtime.enter();
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(EXPORT_TIMEOUT));
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector)
        };
        Self { runtime, client }
    }
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let resp = client.request(request.map(Full::new)).await?;
            let (head, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(head, body))
        };
        let sent = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await });
        match sent.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(format!("no answer within {EXPORT_TIMEOUT:?}").into()),
            Err(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(endpoint: &str, env: &[(&str, &str)]) -> Option<Settings> {
        let cfg = TraceConfig {
            otlp_endpoint: endpoint.to_owned(),
            ..TraceConfig::default()
        };
        Settings::resolve(&cfg, |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn off_unless_an_endpoint_is_configured() {
        assert_eq!(resolve("", &[]), None);
        assert_eq!(resolve("", &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), None);
    }

    #[test]
    fn the_standard_variables_win_over_the_file() {
        let s = resolve("http://file:4318/", &[]).unwrap();
        assert_eq!(s.endpoint, "http://file:4318/v1/traces");
        assert_eq!(s.service_name, "pollcast");
        let s = resolve(
            "http://file:4318",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_SERVICE_NAME", "orders-sidecar"),
            ],
        )
        .unwrap();
        assert_eq!(s.endpoint, "http://env:4318/v1/traces");
        assert_eq!(s.service_name, "orders-sidecar");
        let s = resolve(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
            ],
        )
        .unwrap();
        assert_eq!(s.endpoint, "http://t:4318/custom");
    }
}
