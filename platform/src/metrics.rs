//! The process-wide Prometheus recorder: every role records through the `metrics` macros, and
//! whichever serves `/metrics` (the gateway, or the metrics listener of other roles) renders it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (several gateways in one test process share it).
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .ok()?;
        match builder.install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!("metrics recorder not installed: {e}");
                None
            }
        }
    });
}

pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Drains histogram samples even when nobody scrapes `/metrics`, so memory stays bounded.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return;
    };
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => handle.run_upkeep(),
        }
    }
}
