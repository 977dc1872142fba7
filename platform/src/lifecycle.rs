//! One lifecycle for every role (start, ready, drain, stop), and the small HTTP port on which
//! roles without a gateway answer `/health`, `/ready` and `/metrics`.
//!
//! A role reports what it is doing through its [`RoleState`]: starting and waiting for something
//! named (the topic, the relay lead, a partition assignment), ready, draining, stopped.
//! `/ready` is the conjunction of the role states and real checks of the dependencies the
//! process uses, and says which of them is not there yet; `/health` is liveness only, answering
//! while the process still works, with the same role states for the curious.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::health::{Dependency, Readiness, Report};
use crate::Settings;

/// Where a role is in its life.
/// Ordered: a role only moves forward, apart from a starting role becoming ready and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Ready,
    Draining,
    Stopped,
}

/// What one role reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleReport {
    pub role: &'static str,
    pub phase: Phase,
    /// What the role waits for, in words (`"the relay lead, held by another relay"`); a ready
    /// role may still wait (a standby), a starting one always says for what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// A role's shared, cheaply cloned state.
#[derive(Debug, Clone)]
pub struct RoleState(Arc<Mutex<RoleReport>>);

impl RoleState {
    pub fn new(role: &'static str) -> Self {
        Self(Arc::new(Mutex::new(RoleReport {
            role,
            phase: Phase::Starting,
            waiting_for: Some("start-up".to_owned()),
        })))
    }

    fn set(&self, phase: Phase, waiting_for: Option<String>) {
        let mut report = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Draining and stopped are final: a loop finishing its last step must not look ready.
        if matches!(report.phase, Phase::Draining | Phase::Stopped) && phase < Phase::Draining {
            return;
        }
        if report.phase != phase || report.waiting_for != waiting_for {
            tracing::debug!(role = report.role, ?phase, ?waiting_for, "role state");
        }
        report.phase = phase;
        report.waiting_for = waiting_for;
    }

    /// Not ready: waiting for `what`.
    pub fn waiting(&self, what: impl Into<String>) {
        self.set(Phase::Starting, Some(what.into()));
    }

    /// Doing its work.
    pub fn ready(&self) {
        self.set(Phase::Ready, None);
    }

    /// Ready, as a standby that waits for `what` before it has work.
    pub fn standing_by(&self, what: impl Into<String>) {
        self.set(Phase::Ready, Some(what.into()));
    }

    /// Stopping: no new work, finishing what is in flight.
    pub fn draining(&self) {
        self.set(Phase::Draining, None);
    }

    pub fn stopped(&self) {
        self.set(Phase::Stopped, None);
    }

    pub fn report(&self) -> RoleReport {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_ready(&self) -> bool {
        self.report().phase == Phase::Ready
    }
}

/// The answer of `/ready` and `/health` on a role's own port: the dependencies' checks and
/// every role of the process.
#[derive(Debug, Serialize)]
pub struct ProcessReport {
    #[serde(flatten)]
    pub dependencies: Report,
    pub roles: Vec<RoleReport>,
}

/// The answer of `/health`: alive until a role of the process has stopped, with what each is
/// doing.
pub fn liveness(roles: &[RoleState]) -> (bool, serde_json::Value) {
    let roles: Vec<RoleReport> = roles.iter().map(RoleState::report).collect();
    let live = roles.iter().all(|r| r.phase != Phase::Stopped);
    let status = if live { "ok" } else { "stopped" };
    (live, serde_json::json!({"status": status, "roles": roles}))
}

/// Ready when every role is and every dependency answers.
pub async fn readiness(readiness: &Readiness, roles: &[RoleState]) -> ProcessReport {
    let mut dependencies = readiness.check().await;
    let roles: Vec<RoleReport> = roles.iter().map(RoleState::report).collect();
    dependencies.ready &= roles.iter().all(|r| r.phase == Phase::Ready);
    ProcessReport {
        dependencies,
        roles,
    }
}

/// Serves `/metrics`, `/health` and `/ready` on `settings.metrics_listen` until `stop`, for
/// processes that run no gateway; `/ready` asks the dependencies in `uses`.
///
/// # Errors
/// The address is not one, or cannot be bound.
pub async fn serve_ops(
    settings: &Settings,
    uses: &[Dependency],
    roles: Vec<RoleState>,
    stop: CancellationToken,
) -> Result<(), OpsError> {
    crate::metrics::install();
    let listen = &settings.metrics_listen;
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| OpsError::Address(listen.clone()))?;
    let checks = Arc::new(Readiness::new(settings.database.pool()?, settings, uses));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| OpsError::Bind(listen.clone(), e))?;
    tracing::info!(address = %listener.local_addr().map_err(|e| OpsError::Bind(listen.clone(), e))?, "metrics listening");
    let roles = Arc::new(roles);
    let metrics = warp::path!("metrics").map(|| crate::metrics::render().into_response());
    let health = warp::path!("health").map({
        let roles = roles.clone();
        move || {
            let roles: Vec<RoleReport> = roles.iter().map(RoleState::report).collect();
            let live = roles.iter().all(|r| r.phase != Phase::Stopped);
            let status = if live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body =
                serde_json::json!({"status": if live { "ok" } else { "stopped" }, "roles": roles});
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        }
    });
    let ready = warp::path!("ready").then(move || {
        let (checks, roles) = (checks.clone(), roles.clone());
        async move {
            let report = readiness(&checks, &roles).await;
            let status = if report.dependencies.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&report), status).into_response()
        }
    });
    let upkeep = tokio::spawn(crate::metrics::upkeep(stop.clone()));
    let routes = metrics.or(health).unify().or(ready).unify();
    warp::serve(warp::get().and(routes))
        .incoming(listener)
        .graceful(async move { stop.cancelled().await })
        .run()
        .await;
    let _ = upkeep.await;
    Ok(())
}

/// Why the operations port could not be served.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("metrics_listen {0:?} is not an address")]
    Address(String),
    #[error("cannot listen on {0} for metrics: {1}")]
    Bind(String, #[source] std::io::Error),
    #[error(transparent)]
    Settings(#[from] crate::SettingsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_says_what_it_waits_for_and_never_looks_ready_once_draining() {
        let role = RoleState::new("relay");
        assert_eq!(role.report().phase, Phase::Starting);
        role.waiting("the events topic");
        assert_eq!(
            role.report().waiting_for.as_deref(),
            Some("the events topic")
        );
        assert!(!role.is_ready());
        role.standing_by("the relay lead, held by another relay");
        assert!(role.is_ready());
        role.ready();
        assert_eq!(role.report().waiting_for, None);
        role.draining();
        role.ready();
        assert_eq!(role.report().phase, Phase::Draining);
        role.stopped();
        assert_eq!(role.report().phase, Phase::Stopped);
        let json = serde_json::to_value(role.report()).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"role": "relay", "phase": "stopped"})
        );
    }
}
