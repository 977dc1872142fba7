//! What every scenario leaves behind: `<scenario>.json` (the figures, the commit and the machine
//! they were measured on), `<scenario>.md` (the same as a table), and `summary.md` over every
//! result in the directory, so runs on different machines compare by their ratios.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

/// One scenario's result.
pub struct Report {
    pub scenario: &'static str,
    /// What the engine did, per second (messages, events, frames...).
    pub engine_per_s: f64,
    /// What the raw limit did in the same run, in the same unit.
    pub limit_per_s: Option<f64>,
    /// Engine over limit (for latency scenarios: limit latency over engine latency).
    pub ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Figures only this scenario has.
    pub details: Value,
    /// Throughput over the run: (seconds since start, per second).
    pub throughput: Vec<(f64, f64)>,
    /// Latency percentiles: (percentile, ms).
    pub percentiles: Vec<(f64, f64)>,
}

impl Report {
    pub fn new(scenario: &'static str, started_at: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            scenario,
            engine_per_s: 0.0,
            limit_per_s: None,
            ratio: None,
            p50_ms: None,
            p99_ms: None,
            started_at,
            details: json!({}),
            throughput: Vec::new(),
            percentiles: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "engine_per_s": self.engine_per_s,
            "limit_per_s": self.limit_per_s,
            "ratio": self.ratio,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "commit": commit(),
            "machine": machine(),
            "started_at": self.started_at.to_rfc3339(),
            "finished_at": chrono::Utc::now().to_rfc3339(),
            "details": self.details,
            "throughput": self.throughput.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
            "percentiles": self.percentiles.iter().map(|(p, v)| json!([p, v])).collect::<Vec<_>>(),
        })
    }

    /// Writes the JSON, its Markdown, the plots, and refreshes `summary.md` in `out`.
    ///
    /// # Errors
    /// The directory or a file cannot be written.
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let report = self.to_json();
        let json_path = out.join(format!("{}.json", self.scenario));
        std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
        std::fs::write(
            out.join(format!("{}.md", self.scenario)),
            markdown(std::slice::from_ref(&report)),
        )?;
        super::plots::draw(self, out)?;
        write_summary(out)?;
        println!(
            "written {} (and .md, plots, summary.md)",
            json_path.display()
        );
        Ok(())
    }
}

fn number(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// A Markdown table of `reports`.
pub fn markdown(reports: &[Value]) -> String {
    let mut text = String::from(
        "| scenario | engine/s | limit/s | ratio | p50 ms | p99 ms | commit | machine | started |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let machine = &r["machine"];
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} cores, {} GiB, {} | {} |\n",
            r["scenario"].as_str().unwrap_or("?"),
            number(&r["engine_per_s"], 0),
            number(&r["limit_per_s"], 0),
            number(&r["ratio"], 3),
            number(&r["p50_ms"], 2),
            number(&r["p99_ms"], 2),
            r["commit"].as_str().unwrap_or("?"),
            machine["cores"],
            machine["memory_kib"].as_u64().unwrap_or(0) / (1024 * 1024),
            machine["os"].as_str().unwrap_or("?"),
            r["started_at"].as_str().unwrap_or("?"),
        ));
    }
    text
}

/// `summary.md`: every `*.json` result in `out`, one row each.
fn write_summary(out: &Path) -> anyhow::Result<()> {
    let mut reports: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Ok(report) = serde_json::from_slice::<Value>(&std::fs::read(&path)?) {
                if report["scenario"].is_string() {
                    reports.push(report);
                }
            }
        }
    }
    reports.sort_by(|a, b| a["scenario"].as_str().cmp(&b["scenario"].as_str()));
    let text = format!(
        "# Benchmark results\n\nEach figure against the raw limit of the same machine, measured in \
         the same run (see BENCHMARKS.md for what each limit is).\n\n{}",
        markdown(&reports)
    );
    std::fs::write(out.join("summary.md"), text)?;
    Ok(())
}

/// The commit the binary was built from; without one, the current checkout's (`-dirty` with
/// uncommitted changes); `unknown` outside git.
pub fn commit() -> String {
    if let Some(built) = option_env!("CHAT4ALL_BUILD_COMMIT") {
        return built.to_owned();
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        None => "unknown".to_owned(),
    }
}

/// Cores, memory and OS of this machine.
pub fn machine() -> Value {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|r| {
            r.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_kib": memory_kib,
        "os": format!("{os} (Linux {kernel})"),
        "cpu": cpu_model(),
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The percentiles the latency plots show.
const PLOTTED: [f64; 7] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0];

/// Percentiles worth plotting, from a sorted sample.
pub fn percentile_curve(sorted_ms: &[f64]) -> Vec<(f64, f64)> {
    PLOTTED
        .iter()
        .filter_map(|&p| at(sorted_ms, p).map(|v| (p, v)))
        .collect()
}

/// The `p`th percentile of a sorted sample.
pub fn at<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)])
}

/// Percentiles worth plotting from an HDR histogram recorded in units of `per_ms` per ms.
pub fn hdr_percentiles(histogram: &hdrhistogram::Histogram<u64>, per_ms: f64) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    PLOTTED
        .iter()
        .map(|&p| (p, histogram.value_at_quantile(p / 100.0) as f64 / per_ms))
        .collect()
}
