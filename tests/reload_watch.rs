//! Reload without a signal (`[reload] watch`), with a real child process and
//! files laid out the way the kubelet mounts a ConfigMap or Secret: the
//! visible file is a symlink through `..data`, itself a symlink to a
//! `..<timestamp>` directory, and an update is an atomic rename of `..data`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::child::Pollcast;
use common::{data, within, Sse, TestUpstream};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A directory the kubelet way: `..data` -> `..<n>`, and each file a
/// symlink `name` -> `..data/name`.
struct Mount {
    dir: PathBuf,
    version: usize,
}

impl Mount {
    fn new(dir: PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut m = Self { dir, version: 0 };
        m.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), m.dir.join(name))
                .expect("file symlink");
        }
        m
    }

    /// What the kubelet does on an update: write a new version directory,
    /// point a temporary symlink at it, rename that over `..data`
    /// (atomic), remove the old version.
    fn swap(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let new = format!("..2026_11_30_{:02}", self.version);
        std::fs::create_dir(self.dir.join(&new)).expect("version dir");
        for (name, text) in files {
            std::fs::write(self.dir.join(&new).join(name), text).expect("write");
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("tmp symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("atomic rename");
        if self.version > 1 {
            let old = format!("..2026_11_30_{:02}", self.version - 1);
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old version");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn feed(name: &str) -> String {
    format!("[[feeds]]\nname = \"{name}\"\npoll = \"/api/{name}\"\ninterval = \"50ms\"\nlinger = \"100ms\"\n")
}

fn config(up: &TestUpstream, feeds: &[&str]) -> String {
    let feeds: String = feeds.iter().map(|f| feed(f)).collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n[upstream]\nurl = \"http://{}\"\n[reload]\ndebounce = \"50ms\"\n{feeds}",
        up.addr
    )
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_applied_and_a_broken_one_keeps_the_running_config() {
    let up = TestUpstream::start().await;
    for f in ["a", "b", "c"] {
        up.set(&format!("/api/{f}"), json!([{ "id": f }]));
    }
    let root = tempfile::tempdir().expect("tempdir");
    let mut mount = Mount::new(
        root.path().join("config"),
        &[("pollcast.toml", &config(&up, &["a"]))],
    );
    let file = mount.path("pollcast.toml");
    let p = Pollcast::spawn(&["--config", file.to_str().expect("path")], &[]);
    let addr = p.addr().await;
    p.wait_line(&["watching the config files"]).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let mut a = Sse::connect(&url("/sse/a")).await;
    a.next_named("snapshot").await;

    // A new feed arrives by symlink swap alone: no signal is sent.
    mount.swap(&[("pollcast.toml", &config(&up, &["a", "b"]))]);
    let line = p.wait_line(&["config reloaded"]).await;
    assert!(line.contains(r#"added=["b"]"#), "{line}");
    assert!(p.log().contains("trigger=\"file change\""), "{}", p.log());
    let mut b = Sse::connect(&url("/sse/b")).await;
    assert_eq!(data(&b.next_named("snapshot").await)["items"][0]["id"], "b");

    // A broken version: rejected with file, line and key; the running
    // config (with both feeds) stays, and so do the streams.
    let broken = config(&up, &["a", "b"]).replace("interval = \"50ms\"", "intervall = \"1s\"");
    mount.swap(&[("pollcast.toml", &broken)]);
    let line = p.wait_line(&["config reload rejected"]).await;
    let located = format!("{}:", file.display());
    assert!(line.contains(&located), "{line}");
    assert!(line.contains("intervall"), "{line}");
    up.set("/api/b", json!([{ "id": "b" }, { "id": "b2" }]));
    assert_eq!(data(&b.next_named("added").await)["id"], "b2");

    // The watch goes on after a rejected version: the next one applies.
    mount.swap(&[("pollcast.toml", &config(&up, &["a", "b", "c"]))]);
    let line = p.wait_line_n(&["config reloaded"], 2).await;
    assert!(line.contains(r#"added=["c"]"#), "{line}");
    let mut c = Sse::connect(&url("/sse/c")).await;
    c.next_named("snapshot").await;
    assert!(p.stop().await.success());
}

#[tokio::test]
async fn a_file_edited_in_place_is_applied_and_watch_false_turns_the_watch_off() {
    let up = TestUpstream::start().await;
    up.set("/api/a", json!([{ "id": "a" }]));
    up.set("/api/b", json!([{ "id": "b" }]));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pollcast.toml");
    std::fs::write(&file, config(&up, &["a"])).expect("write");
    let p = Pollcast::spawn(&["--config", file.to_str().expect("path")], &[]);
    p.addr().await;
    p.wait_line(&["watching the config files"]).await;
    std::fs::write(&file, config(&up, &["a", "b"])).expect("rewrite");
    let line = p.wait_line(&["config reloaded"]).await;
    assert!(line.contains(r#"added=["b"]"#), "{line}");
    assert!(p.stop().await.success());

    // Off: a change is applied only by the signal that follows it.
    let off =
        |feeds: &[&str]| config(&up, feeds).replace("[reload]\n", "[reload]\nwatch = false\n");
    std::fs::write(&file, off(&["a"])).expect("write");
    let p = Pollcast::spawn(&["--config", file.to_str().expect("path")], &[]);
    p.addr().await;
    std::fs::write(&file, off(&["a", "b"])).expect("rewrite");
    p.signal(libc::SIGHUP);
    let line = p.wait_line(&["config reloaded"]).await;
    assert!(line.contains(r#"added=["b"]"#), "{line}");
    assert!(
        !p.log().contains("watching the config files"),
        "{}",
        p.log()
    );
    assert!(!p.log().contains("file change"), "{}", p.log());
    assert!(p.stop().await.success());
}

/// A self-signed certificate for `localhost`: (DER, cert PEM, key PEM).
fn test_cert() -> (Vec<u8>, String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    (
        ck.cert.der().to_vec(),
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
    )
}

/// Whether a TLS handshake with `addr` succeeds for a client trusting only `der`.
async fn handshake_trusting(addr: std::net::SocketAddr, der: &[u8]) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(der.to_vec().into()).expect("root");
    let cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    within(
        "a TLS handshake",
        TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .is_ok()
}

fn tls_config(up: &TestUpstream, secret: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n[upstream]\nurl = \"http://{}\"\n[reload]\ndebounce = \"50ms\"\n",
        secret.join("tls.crt").display(),
        secret.join("tls.key").display(),
        up.addr
    )
}

#[tokio::test]
async fn a_secret_symlink_swap_serves_the_new_certificate() {
    let up = TestUpstream::start().await;
    let root = tempfile::tempdir().expect("tempdir");
    let (old_der, old_cert, old_key) = test_cert();
    let mut secret = Mount::new(
        root.path().join("tls"),
        &[("tls.crt", &old_cert), ("tls.key", &old_key)],
    );
    let file = root.path().join("pollcast.toml");
    std::fs::write(&file, tls_config(&up, &secret.dir)).expect("write");
    let p = Pollcast::spawn(&["--config", file.to_str().expect("path")], &[]);
    let addr = p.addr().await;
    p.wait_line(&["watching the config files"]).await;
    assert!(handshake_trusting(addr, &old_der).await);

    // cert-manager renews, the kubelet swaps the Secret's ..data.
    let (new_der, new_cert, new_key) = test_cert();
    secret.swap(&[("tls.crt", &new_cert), ("tls.key", &new_key)]);
    p.wait_line(&["TLS certificate and key reloaded"]).await;
    assert!(handshake_trusting(addr, &new_der).await);
    assert!(!handshake_trusting(addr, &old_der).await);

    // A broken certificate: the one in use stays.
    secret.swap(&[("tls.crt", "not a certificate\n"), ("tls.key", &new_key)]);
    let line = p.wait_line(&["config reload rejected"]).await;
    assert!(line.contains("server.tls.cert"), "{line}");
    assert!(handshake_trusting(addr, &new_der).await);
    assert!(p.stop().await.success());
}
