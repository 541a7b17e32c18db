//! Traces as a collector sees them: pollcast (the real binary) exports over
//! OTLP/HTTP to an in-process receiver that decodes each
//! `ExportTraceServiceRequest`; a real upstream records the `traceparent`
//! headers it receives. Asserted: the spans of a poll and of a pass-through
//! request, their parent links and attributes, the trace context sent
//! upstream, and `trace_id`/`span_id` on JSON log lines inside a span.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::{json, Value};

use common::child::{config_file, Pollcast};
use common::{wait_until, Mode, Sse, TestUpstream};

/// One exported span, flattened, ids in hex.
#[derive(Clone, Debug)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    service: String,
    attrs: Vec<(String, String)>,
    error: bool,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP/HTTP receiver on an ephemeral loopback port.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sink = sink.clone();
                        async move { Ok::<_, hyper::Error>(receive(req, &sink).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, spans }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Wait until a span matching `pred` has arrived, and return it.
    async fn wait_span(&self, what: &str, pred: impl Fn(&Got) -> bool) -> Got {
        wait_until(what, || self.spans().iter().any(&pred)).await;
        self.spans()
            .into_iter()
            .find(|s| pred(s))
            .expect("just seen")
    }
}

async fn receive(req: Request<Incoming>, sink: &Mutex<Vec<Got>>) -> Response<Full<Bytes>> {
    let ok_path = req.uri().path() == "/v1/traces";
    let protobuf = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = req.into_body().collect().await.expect("body").to_bytes();
    assert!(ok_path && protobuf, "not an OTLP/HTTP protobuf export");
    let export = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
    let mut got = sink.lock().unwrap();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    service: service.clone(),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    error: s
                        .status
                        .is_some_and(|st| st.code == StatusCode::Error as i32),
                });
            }
        }
    }
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .expect("response")
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `(trace id, parent span id)` of a W3C `traceparent` value.
fn traceparent(v: &str) -> (String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v}");
    assert_eq!(parts[0], "00", "traceparent version in {v}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn config_text(up: &TestUpstream, trace: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{}"
timeout = "2s"
[log]
format = "json"
{trace}
[[feeds]]
name = "jobs"
poll = "/api/jobs"
interval = "50ms"
backoff_max = "100ms"
linger = "100ms"
"#,
        up.addr
    )
}

/// Traces on, with batches sent every 50ms so the test waits on arrivals.
fn traced(up: &TestUpstream, rx: &Receiver) -> String {
    config_text(
        up,
        &format!(
            "[trace]\notlp_endpoint = \"http://{}\"\nservice_name = \"pollcast-test\"\nexport_interval = \"50ms\"",
            rx.addr
        ),
    )
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn pass_through_with_traceparent(addr: SocketAddr) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/echo/x?status=201"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .expect("pass-through")
        .status()
        .as_u16()
}

#[tokio::test]
async fn polls_and_pass_through_are_exported_with_their_links_and_continue_upstream() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let rx = Receiver::start().await;
    let f = config_file(&traced(&up, &rx));
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    let addr = p.addr().await;

    // Pass-through continues the client's trace.
    assert_eq!(pass_through_with_traceparent(addr).await, 201);
    let pt = rx
        .wait_span("the pass-through span", |s| s.name == "pass-through")
        .await;
    assert_eq!(pt.trace_id, CLIENT_TRACE, "continues the client's trace");
    assert_eq!(pt.parent, CLIENT_SPAN, "the client's span is its parent");
    assert_eq!(pt.service, "pollcast-test");
    assert_eq!(pt.attr("http.request.method"), Some("GET"));
    assert_eq!(pt.attr("url.path"), Some("/echo/x"));
    assert_eq!(pt.attr("http.response.status_code"), Some("201"));
    // ...and the upstream request is its child, in the client's trace.
    let seen = up.seen("/echo/x");
    assert_eq!(seen.len(), 1);
    let sent = seen[0]
        .headers
        .get("traceparent")
        .expect("the upstream got a traceparent")
        .to_str()
        .expect("ascii");
    assert_eq!(
        traceparent(sent),
        (CLIENT_TRACE.to_owned(), pt.span_id.clone()),
        "upstream's parent is pollcast's pass-through span"
    );

    // A feed polls: each poll is a root with its phases as children.
    let mut sse = Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    sse.next_named("snapshot").await;
    let first = up.seen("/api/jobs").into_iter().next().expect("a poll");
    let (poll_trace, request_id) = traceparent(
        first
            .headers
            .get("traceparent")
            .expect("polls carry a traceparent")
            .to_str()
            .expect("ascii"),
    );
    let request = rx
        .wait_span("the first poll's request span", |s| s.span_id == request_id)
        .await;
    assert_eq!(request.name, "request");
    assert_eq!(request.trace_id, poll_trace);
    assert_eq!(request.attr("http.request.method"), Some("GET"));
    assert_eq!(request.attr("http.route"), Some("/api/jobs"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    let poll = rx
        .wait_span("the first poll's span", |s| s.span_id == request.parent)
        .await;
    assert_eq!(poll.name, "poll");
    assert_eq!(poll.parent, "", "a poll starts its own trace");
    assert_eq!(poll.trace_id, poll_trace);
    assert_ne!(poll.trace_id, CLIENT_TRACE);
    assert_eq!(poll.attr("pollcast.feed"), Some("jobs"));
    for phase in ["extract", "diff", "publish"] {
        let child = rx
            .wait_span(&format!("the first poll's {phase} span"), |s| {
                s.name == phase && s.parent == poll.span_id
            })
            .await;
        assert_eq!(
            child.trace_id, poll.trace_id,
            "{phase} is in the poll's trace"
        );
    }
    // Every poll is a trace of its own.
    up.set("/api/jobs", json!([{"id": 1}, {"id": 2}]));
    sse.next_named("added").await;
    let polls = || {
        rx.spans()
            .into_iter()
            .filter(|s| s.name == "poll")
            .map(|s| s.trace_id)
            .collect::<std::collections::HashSet<_>>()
    };
    wait_until("a second poll trace", || polls().len() >= 2).await;
    drop(sse);
    p.stop().await;
}

#[tokio::test]
async fn json_log_lines_inside_a_span_carry_its_trace_and_span_ids() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let rx = Receiver::start().await;
    let f = config_file(&traced(&up, &rx));
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    let addr = p.addr().await;
    let mut sse = Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    sse.next_named("snapshot").await;
    up.mode(Mode::Status(503));
    sse.next_named("stale").await;

    // Logged inside the failed poll's span.
    let line = p.wait_line(&["poll failed"]).await;
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    let trace_id = v["trace_id"].as_str().expect("trace_id").to_owned();
    let span_id = v["span_id"].as_str().expect("span_id").to_owned();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["feed"], "jobs");
    let poll = rx
        .wait_span("the failed poll's span", |s| s.span_id == span_id)
        .await;
    assert_eq!(poll.name, "poll");
    assert_eq!(poll.trace_id, trace_id);
    assert!(poll.error, "a failed poll has an error status");
    // Outside any span: no ids.
    let listening = p.wait_line(&["pollcast listening"]).await;
    let v: Value = serde_json::from_str(&listening).expect("a JSON line");
    assert!(v.get("trace_id").is_none(), "{listening}");
    drop(sse);
    p.stop().await;
}

#[tokio::test]
async fn with_traces_off_nothing_is_added_and_a_client_traceparent_passes_unchanged() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    let f = config_file(&config_text(&up, ""));
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    let addr = p.addr().await;
    assert_eq!(pass_through_with_traceparent(addr).await, 201);
    let seen = up.seen("/echo/x");
    assert_eq!(
        seen[0].headers.get("traceparent").map(|v| v.as_bytes()),
        Some(format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01").as_bytes())
    );
    let mut sse = Sse::connect(&format!("http://{addr}/sse/jobs")).await;
    sse.next_named("snapshot").await;
    for s in up.seen("/api/jobs") {
        assert!(s.headers.get("traceparent").is_none(), "{:?}", s.headers);
    }
    up.mode(Mode::Status(503));
    sse.next_named("stale").await;
    let line = p.wait_line(&["poll failed"]).await;
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    assert!(v.get("trace_id").is_none(), "{line}");
    drop(sse);
    p.stop().await;
}

#[tokio::test]
async fn an_admission_check_continues_the_subscribers_trace() {
    let up = TestUpstream::start().await;
    up.set("/api/jobs", json!([{"id": 1}]));
    up.set("/api/me", json!({"ok": true}));
    let rx = Receiver::start().await;
    let text = traced(&up, &rx).replace(
        "linger = \"100ms\"",
        "linger = \"100ms\"\nauth = \"check\"\ncheck = \"/api/me\"\nquery = []",
    );
    let f = config_file(&text);
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    let addr = p.addr().await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let mut sse =
        Sse::connect_with(&format!("http://{addr}/sse/jobs"), &[("traceparent", &tp)]).await;
    sse.next_named("snapshot").await;
    let check = rx.wait_span("the check span", |s| s.name == "check").await;
    assert_eq!(check.trace_id, CLIENT_TRACE);
    assert_eq!(check.parent, CLIENT_SPAN);
    assert_eq!(check.attr("pollcast.feed"), Some("jobs"));
    let seen = up.seen("/api/me");
    let sent = seen[0]
        .headers
        .get("traceparent")
        .expect("the check request carries a traceparent")
        .to_str()
        .expect("ascii");
    assert_eq!(traceparent(sent), (CLIENT_TRACE.to_owned(), check.span_id));
    drop(sse);
    p.stop().await;
}

#[tokio::test]
async fn spans_still_in_the_batch_are_sent_on_shutdown() {
    let up = TestUpstream::start().await;
    let rx = Receiver::start().await;
    // A batch that would wait an hour: only the shutdown flush sends it.
    let text = traced(&up, &rx).replace("export_interval = \"50ms\"", "export_interval = \"1h\"");
    let f = config_file(&text);
    let p = Pollcast::spawn(&["--config", f.path().to_str().expect("path")], &[]);
    let addr = p.addr().await;
    assert_eq!(pass_through_with_traceparent(addr).await, 201);
    assert!(
        rx.spans().is_empty(),
        "nothing is sent before the batch is due"
    );
    assert!(p.stop().await.success());
    let spans = rx.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.name == "pass-through" && s.trace_id == CLIENT_TRACE),
        "the pass-through span was flushed before exit: {spans:?}"
    );
}
