//! A small built-in upstream for `--demo`: `GET /api/jobs` returns a list of
//! jobs that start, progress, finish and disappear over time, and
//! `POST /api/jobs` adds one. It exists so a newcomer sees pollcast work
//! without an API of their own; it must never be used by the real proxy path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Jobs {
    next_id: u64,
    tick: u64,
    list: Vec<Value>,
}

impl Jobs {
    fn add(&mut self, name: &str) -> Value {
        self.next_id += 1;
        let job = json!({"id": self.next_id, "name": name, "status": "queued", "progress": 0});
        self.list.push(job.clone());
        job
    }

    /// One step of the demo's little world.
    fn step(&mut self) {
        self.tick += 1;
        for job in &mut self.list {
            let status = job["status"].as_str().unwrap_or("queued").to_owned();
            let progress = job["progress"].as_u64().unwrap_or(0);
            match status.as_str() {
                "queued" => job["status"] = json!("running"),
                "running" if progress >= 100 => job["status"] = json!("done"),
                "running" => job["progress"] = json!((progress + 25).min(100)),
                _ => {}
            }
        }
        if self.tick % 3 == 0 {
            let n = self.next_id + 1;
            self.add(&format!("build #{n}"));
        }
        // Keep the list short: finished jobs leave after a while.
        if self.list.len() > 6 {
            if let Some(pos) = self.list.iter().position(|j| j["status"] == "done") {
                self.list.remove(pos);
            }
        }
    }
}

/// Start the demo upstream on `127.0.0.1:0`; it stops with `shutdown`.
pub async fn start(shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let jobs = Arc::new(Mutex::new(Jobs::default()));
    {
        let mut j = jobs.lock().unwrap_or_else(|e| e.into_inner());
        j.add("nightly backup");
        j.add("deploy web");
    }
    let ticker = jobs.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => ticker.lock().unwrap_or_else(|e| e.into_inner()).step(),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            let jobs = jobs.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(jobs.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    jobs: Arc<Mutex<Jobs>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let json_resp = |status: StatusCode, v: &Value| {
        let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    };
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/api/jobs") => {
            let list = Value::Array(jobs.lock().unwrap_or_else(|e| e.into_inner()).list.clone());
            Ok(json_resp(StatusCode::OK, &list))
        }
        (Method::POST, "/api/jobs") => {
            let body = req.into_body().collect().await?.to_bytes();
            let name = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "unnamed job".to_owned());
            let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).add(&name);
            Ok(json_resp(StatusCode::CREATED, &job))
        }
        _ => Ok(json_resp(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found"}),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_world_changes_and_stays_small() {
        let mut j = Jobs::default();
        j.add("a");
        let first = j.list.clone();
        for _ in 0..40 {
            j.step();
        }
        assert_ne!(j.list, first);
        assert!(j.list.len() <= 7, "{}", j.list.len());
    }
}
