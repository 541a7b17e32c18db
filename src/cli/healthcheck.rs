//! `pollcast --healthcheck [URL]`: the container health check, built into the
//! binary so a distroless image needs neither a shell nor curl.
//!
//! This module owns finding the health URL of a running pollcast from its
//! config and asking it once over plain HTTP/1.1. It must never start
//! anything: it is a client of another pollcast process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use pollcast::config::Config;

/// Connect, send and receive the response head within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the health check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("`{0}` is not an http:// URL with a host and port")]
    Url(String),
    #[error(
        "the listener at {0} uses TLS; give [admin] listen a plain-HTTP address or pass an http:// URL"
    )]
    Tls(SocketAddr),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}: {1}")]
    Http(String, hyper::Error),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} answered {1}")]
    Status(String, StatusCode),
}

/// The `/healthz` URL of the pollcast that `config` describes: the admin
/// listener when there is one, else the main listener; a wildcard listen
/// address (`0.0.0.0`, `::`) is reached through loopback.
pub fn url_for(config: &Config) -> Result<String, HealthError> {
    let (addr, tls) = match config.admin.listen {
        Some(a) => (a, false),
        None => (config.server.listen, config.server.tls.is_some()),
    };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, addr.port());
    if tls {
        return Err(HealthError::Tls(addr));
    }
    Ok(format!("http://{addr}{}/healthz", config.admin.prefix))
}

/// `GET url`; `Ok` only for a 2xx answer within [`TIMEOUT`].
pub async fn probe(url: &str) -> Result<StatusCode, HealthError> {
    match tokio::time::timeout(TIMEOUT, exchange(url)).await {
        Ok(r) => r,
        Err(_) => Err(HealthError::Timeout(url.to_owned(), TIMEOUT)),
    }
}

async fn exchange(url: &str) -> Result<StatusCode, HealthError> {
    let bad = || HealthError::Url(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.clone();
    let port = authority.port_u16().ok_or_else(bad)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| HealthError::Connect(authority.to_string(), e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HealthError::Http(url.to_owned(), e))?;
    // The connection task ends with this function (the runtime is dropped).
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::USER_AGENT, "pollcast-healthcheck")
        .body(Empty::<Bytes>::new())
        .map_err(|_| bad())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| HealthError::Http(url.to_owned(), e))?;
    match resp.status() {
        s if s.is_success() => Ok(s),
        s => Err(HealthError::Status(url.to_owned(), s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollcast::config::UpstreamUrl;

    fn config() -> Config {
        Config::new(
            UpstreamUrl::parse("http://127.0.0.1:3000").expect("url"),
            vec![],
        )
    }

    #[test]
    fn url_follows_the_listeners_and_the_prefix() {
        let mut c = config();
        // The default: the loopback admin listener.
        assert_eq!(
            url_for(&c).expect("url"),
            "http://127.0.0.1:9090/_pollcast/healthz"
        );
        c.admin.listen = None;
        c.server.listen = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(
            url_for(&c).expect("url"),
            "http://127.0.0.1:8080/_pollcast/healthz"
        );
        c.admin.listen = Some("[::]:9090".parse().expect("addr"));
        c.admin.prefix = "/ops".into();
        assert_eq!(url_for(&c).expect("url"), "http://[::1]:9090/ops/healthz");
        c.admin.listen = None;
        c.server.tls = Some(pollcast::config::TlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        assert!(matches!(url_for(&c), Err(HealthError::Tls(_))));
    }
}
