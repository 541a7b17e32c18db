//! pollcast as a child process, the way an operator runs it: real binary,
//! real config file, real environment, real signals; stderr captured line
//! by line so tests can wait for (and assert on) what it logs.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use super::{wait_until, DEADLINE};

/// A config file that lives as long as the test needs it.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp");
    f.write_all(text.as_bytes()).expect("write");
    f
}

/// Replace a config file's content in place (for reload tests).
pub fn rewrite(f: &tempfile::NamedTempFile, text: &str) {
    std::fs::write(f.path(), text).expect("rewrite config");
}

pub struct Pollcast {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Pollcast {
    /// Start `pollcast <args>` with `env` added to the environment.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_via(&[], args, env)
    }

    /// The same, run through `wrapper` (e.g. `["taskset", "-c", "0"]`).
    pub fn spawn_via(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_pollcast");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The admin listener's default port (9090) would clash between tests
        // running at once: an ephemeral one unless the test chose.
        if !env.iter().any(|(k, _)| *k == "POLLCAST_ADMIN_LISTEN") {
            cmd.env("POLLCAST_ADMIN_LISTEN", "127.0.0.1:0");
        }
        // The developer's own RUST_LOG must not change what tests see.
        cmd.env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pollcast");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// Wait for the `n`th (1-based) line containing every one of `parts`.
    pub async fn wait_line_n(&self, parts: &[&str], n: usize) -> String {
        let matching = || {
            self.lines()
                .into_iter()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .nth(n - 1)
        };
        let what = format!("log line #{n} with {parts:?}");
        let mut found = None;
        let start = tokio::time::Instant::now();
        while found.is_none() {
            found = matching();
            if found.is_none() {
                if start.elapsed() > DEADLINE {
                    panic!("timed out waiting for {what}; log so far:\n{}", self.log());
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        found.unwrap_or_default()
    }

    pub async fn wait_line(&self, parts: &[&str]) -> String {
        self.wait_line_n(parts, 1).await
    }

    /// The address logged on the line containing `message` (`addr=...` in
    /// text logs, `"addr":"..."` in JSON logs).
    pub async fn addr_of(&self, message: &str) -> SocketAddr {
        let line = self.wait_line(&[message]).await;
        let text = line
            .split("addr=")
            .nth(1)
            .or_else(|| line.split("\"addr\":\"").nth(1))
            .unwrap_or_else(|| panic!("no addr in {line}"));
        let end = text
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(text.len());
        text[..end]
            .parse()
            .unwrap_or_else(|e| panic!("bad addr in {line}: {e}"))
    }

    /// The main listener's address, once it is listening.
    pub async fn addr(&self) -> SocketAddr {
        self.addr_of("pollcast listening").await
    }

    /// The admin listener's address (operator endpoints), once it listens.
    pub async fn admin_addr(&self) -> SocketAddr {
        self.addr_of("admin listening").await
    }

    /// Send `signal` (e.g. `libc::SIGHUP`) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Wait for the process to exit.
    pub async fn exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until("pollcast to exit", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        })
        .await;
        status.expect("status")
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.exit().await
    }
}

impl Drop for Pollcast {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
