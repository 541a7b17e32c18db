//! A private `redis-server` for cluster tests: an ephemeral loopback port,
//! no persistence, killed with the test. `.ci/run` installs Debian's
//! `redis-server`; without it a test fails under `CI=true` and is skipped
//! (saying why) otherwise.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{within, DEADLINE};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Start one, or `None` (after saying why) when `redis-server` is missing outside CI.
    pub async fn start_or_skip() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = "cluster tests need `redis-server` (Debian package redis-server; .ci/run installs it)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = Self { child: None, port };
        r.restart().await;
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Start (again, empty) on the same port and wait until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        wait_answers(&self.url()).await;
    }

    /// Kill it (SIGKILL: no goodbye to its clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A connection for the test's own look at the data.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let c = redis::Client::open(self.url().as_str()).expect("client");
        tokio::time::timeout(DEADLINE, c.get_multiplexed_async_connection())
            .await
            .expect("connect in time")
            .expect("connect")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until the Redis at `url` (with its credentials, if any) answers `PING`.
pub async fn wait_answers(url: &str) {
    within("redis-server answers", async {
        loop {
            if let Ok(c) = redis::Client::open(url) {
                if let Ok(mut conn) = c.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A TCP proxy in front of Redis that can cut the link without a reset
/// (a partition: bytes go nowhere, no FIN, no RST) and restore it (the
/// connections held during the cut are then closed, as a healed
/// partition's dead connections would be).
pub struct Cutter {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cutter {
    pub async fn start(to: u16) -> Self {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(false);
        let state = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    // Held silently during a cut, then closed.
                    let hold = |mut cut: tokio::sync::watch::Receiver<bool>| async move {
                        let _ = cut.wait_for(|c| !*c).await.is_ok();
                    };
                    let is_cut = *cut.borrow_and_update();
                    if is_cut {
                        hold(cut).await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = async { cut.wait_for(|c| *c).await.is_ok() } => hold(cut).await,
                    }
                    let _ = client.shutdown().await;
                });
            }
        });
        Self { port, cut, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
