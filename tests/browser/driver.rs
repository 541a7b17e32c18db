//! The node driver (`tests/browser/drive.mjs`) around one Chromium page,
//! shared by the browser tests (`#[path = "browser/driver.rs"] mod driver;`).

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The node driver (`tests/browser/drive.mjs`) around one Chromium page.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    pub fn start(dir: &std::path::Path) -> Self {
        let mut child = Command::new("node")
            .arg(dir.join("drive.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node tests/browser/drive.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut b = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(b.line(), "ready", "chromium did not start");
        b
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("driver output");
        l.trim_end().to_owned()
    }

    /// Run one command; panics with the driver's reason on failure.
    pub fn cmd(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("driver input");
        let answer = self.line();
        match answer.strip_prefix("ok") {
            Some(rest) => rest.trim().to_owned(),
            None => panic!("browser: `{cmd}` failed: {answer}"),
        }
    }

    /// Wait (in the page, up to the driver's deadline) until `expr` is truthy.
    pub fn wait(&mut self, what: &str, expr: &str) {
        writeln!(self.stdin, "wait {expr}").expect("driver input");
        let answer = self.line();
        assert_eq!(answer, "ok", "browser: waiting for {what}: {answer}");
    }

    /// Evaluate `expr` in the page; its value as JSON.
    pub fn eval(&mut self, expr: &str) -> serde_json::Value {
        let out = self.cmd(&format!("eval {expr}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("eval {expr}: {e}: {out}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}
