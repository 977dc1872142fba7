//! Running the real `chat4all` binary: environment in, JSON log lines out.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_chat4all");

/// A running `chat4all` process whose log lines (JSON) can be waited for.
pub struct Process {
    pub child: Child,
    logs: Receiver<serde_json::Value>,
    pub seen: Vec<serde_json::Value>,
}

impl Process {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("CHAT4ALL_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str(&line) {
                    let _ = tx.send(entry);
                }
            }
        });
        Self {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line matching `predicate` (one seen earlier counts too).
    pub fn wait_for_log(
        &mut self,
        deadline: Duration,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        if let Some(hit) = self.seen.iter().find(|e| predicate(e)) {
            return Some(hit.clone());
        }
        let until = Instant::now() + deadline;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(entry) => {
                    self.seen.push(entry.clone());
                    if predicate(&entry) {
                        return Some(entry);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Everything logged so far.
    pub fn drain(&mut self) -> &[serde_json::Value] {
        self.seen.extend(self.logs.try_iter());
        &self.seen
    }

    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    /// SIGKILL: no shutdown, no goodbye, as in a crash.
    pub fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "the process did not exit in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `message` of a log line.
pub fn message(entry: &serde_json::Value) -> &str {
    entry["fields"]["message"].as_str().unwrap_or_default()
}

/// Sends `signal` (`-TERM`, `-STOP`, `-CONT`, ...) to `child`.
pub fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
}
