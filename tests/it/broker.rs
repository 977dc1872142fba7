//! Apache Kafka brokers of a test's own, started by the same scripts as the development broker,
//! so that stopping, pausing or killing one disturbs no other test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::send_signal;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chat4all-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls until `address` accepts connections, or panics with the broker's log.
fn wait_for_port(address: &str, within: Duration, log: &Path) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "the test broker on {address} did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One single-node broker (broker and controller in one JVM), in a scratch directory.
pub struct Broker {
    child: Child,
    pub address: String,
    dir: PathBuf,
}

impl Broker {
    pub fn start() -> Self {
        let (port, controller) = (free_port(), free_port());
        let dir = scratch_dir("kafka");
        let log = dir.join("broker.log");
        let child = Command::new(format!("{ROOT}/ops/dev/kafka-broker"))
            .arg(dir.join("node"))
            .arg(port.to_string())
            .arg(controller.to_string())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ops/dev/kafka-broker: {e}"));
        let address = format!("127.0.0.1:{port}");
        wait_for_port(&address, Duration::from_secs(90), &log);
        Self {
            child,
            address,
            dir,
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the broker's JVM.
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three brokers with three KRaft controllers (`ops/dev/kafka-cluster`), on ports of their own.
pub struct Cluster {
    dir: PathBuf,
    base: u16,
    pub bootstrap: String,
}

impl Cluster {
    pub fn start() -> Self {
        let dir = scratch_dir("kafka-cluster");
        // Broker ports base..base+2, controllers base+100..: all six must be free.
        let base = loop {
            let base = 20_000 + (rand_u16() % 8_000);
            let ports = (0..3).flat_map(|i| [base + i, base + 100 + i]);
            if ports
                .into_iter()
                .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
            {
                break base;
            }
        };
        let mut cluster = Self {
            dir,
            base,
            bootstrap: String::new(),
        };
        let out = cluster.run(&["up"]);
        cluster.bootstrap = out
            .lines()
            .find_map(|l| l.strip_prefix("bootstrap="))
            .unwrap_or_else(|| panic!("`kafka-cluster up` printed no bootstrap line: {out}"))
            .to_owned();
        cluster
    }

    /// Runs `ops/dev/kafka-cluster ARGS` on this cluster; panics with its output if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(format!("{ROOT}/ops/dev/kafka-cluster"))
            .args(args)
            .env("CHAT4ALL_KAFKA_CLUSTER_DIR", &self.dir)
            .env("CHAT4ALL_KAFKA_CLUSTER_PORT", self.base.to_string())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kafka-cluster {args:?} failed: {text}"
        );
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=3 {
            let pid = std::fs::read_to_string(self.dir.join(format!("node{node}/pid")));
            if let Ok(pid) = pid {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}
