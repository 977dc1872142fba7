//! The Chat4All gateway: the HTTP API and WebSocket push in front of the engine.
//!
//! Requests are authenticated with bearer JWTs, turned into commands for the write side
//! (`chat4all-commands`), and answered with the event store position of what they caused. Errors
//! are rendered in one place ([`problem::recover`]) as problem+json.
#![forbid(unsafe_code)]

pub mod auth;
mod body;
mod codes;
mod error;
mod filters;
mod idempotency;
mod limits;
mod metrics;
pub mod problem;
pub mod push;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat4all_commands::{CommandService, Limits};
use chat4all_platform::health::{Dependency, Readiness};
use chat4all_platform::lifecycle::RoleState;
use chat4all_platform::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::GatewayError;
pub use routes::RouteSpec;

use crate::auth::{KeyRing, TokenService};

/// How often every instance re-reads the signing keys, so rotations and expiries reach all.
pub const KEY_REFRESH: Duration = Duration::from_secs(60);
/// How often idempotency keys past their 24 h are deleted (any instance may do it).
const IDEMPOTENCY_EXPIRY: Duration = Duration::from_secs(600);

/// Everything a request handler may use.
pub struct AppState {
    pub commands: CommandService,
    pub queries: chat4all_projections::Queries,
    /// Bounds concurrent client secret checks (see `routes::auth`).
    pub secret_checks: tokio::sync::Semaphore,
    pub tokens: TokenService,
    pub pool: sqlx::PgPool,
    pub readiness: Readiness,
    /// The gateway's own state first, then those of the other roles of this process.
    pub roles: Vec<RoleState>,
    pub push: Arc<push::Push>,
    pub rate_limiter: limits::RateLimiter,
    pub auth_throttle: limits::AuthThrottle,
    pub refresh_ttl_secs: u64,
}

/// A built gateway, bound to its port but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    router: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    routes: Vec<RouteSpec>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Connects to Postgres, loads (or creates) the signing keys, and binds the listen address.
    ///
    /// # Errors
    /// Bad settings, an unreachable database, or an address that cannot be bound.
    pub async fn build(settings: &Settings) -> Result<Self, GatewayError> {
        Self::build_with_roles(settings, Vec::new()).await
    }

    /// [`Application::build`] for a process that runs further roles beside the gateway (`chat4all
    /// serve`): its `/health` and `/ready` report their states too.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_roles(
        settings: &Settings,
        others: Vec<RoleState>,
    ) -> Result<Self, GatewayError> {
        let role = RoleState::new("gateway");
        role.waiting("the listener to start serving");
        let mut roles = vec![role];
        roles.extend(others);
        let pool = settings.database.connect().await?;
        let keys = Arc::new(KeyRing::open(pool.clone()).await?);
        let commands = CommandService::new(
            pool.clone(),
            Limits {
                max_group_members: settings.max_group_members,
            },
        );
        let readiness = Readiness::new(
            pool.clone(),
            settings,
            &[Dependency::Postgres, Dependency::Redis, Dependency::Kafka],
        );
        let listener = bind(&settings.listen).await?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: settings.listen.clone(),
            source,
        })?;
        metrics::install();
        // Publishing (typing) shares one multiplexed connection, made on first use: start-up
        // does not wait for Redis, and a gateway started while Redis is down publishes once it
        // is back (sockets stay up meanwhile and resume from the read models).
        let redis = settings.redis.client()?;
        let publisher = redis::aio::ConnectionManager::new_lazy_with_config(
            redis.clone(),
            redis::aio::ConnectionManagerConfig::new(),
        )
        .ok();
        let tokens = TokenService::new(
            keys,
            settings.auth.issuer.clone(),
            settings.auth.audience.clone(),
            settings.auth.access_token_ttl_secs,
        )
        .with_revocations(auth::revocations::Revocations::new(
            publisher.clone(),
            &settings.topic_prefix,
        ));
        let tokens = match (
            settings.auth.algorithm.as_str(),
            &settings.auth.hs256_secret,
        ) {
            ("EdDSA", None) => tokens,
            ("HS256", Some(secret)) => tokens
                .with_hs256(secret.expose().as_bytes())
                .map_err(GatewayError::Config)?,
            ("EdDSA", Some(_)) => {
                return Err(GatewayError::Config(
                    "auth.hs256_secret is set but auth.algorithm is EdDSA".to_owned(),
                ))
            }
            ("HS256", None) => {
                return Err(GatewayError::Config(
                    "auth.algorithm HS256 needs auth.hs256_secret".to_owned(),
                ))
            }
            (other, _) => {
                return Err(GatewayError::Config(format!(
                    "auth.algorithm must be EdDSA or HS256, not {other:?}"
                )))
            }
        };
        let push_stop = CancellationToken::new();
        let hub = push::Hub::start(
            redis,
            publisher.clone(),
            settings.topic_prefix.clone(),
            push_stop.clone(),
        );
        let push = Arc::new(push::Push::new(
            hub,
            publisher.clone(),
            &settings.topic_prefix,
            chat4all_projections::Queries::new(pool.clone()),
            settings.push.clone(),
            push_stop,
        ));
        let state = Arc::new(AppState {
            commands,
            queries: chat4all_projections::Queries::new(pool.clone()),
            secret_checks: tokio::sync::Semaphore::new(routes::MAX_SECRET_CHECKS),
            tokens,
            pool,
            readiness,
            push,
            rate_limiter: limits::RateLimiter::new(
                publisher.clone(),
                &settings.topic_prefix,
                settings.rate_limit_per_minute,
            ),
            auth_throttle: limits::AuthThrottle::new(publisher, &settings.topic_prefix),
            refresh_ttl_secs: settings.auth.refresh_token_ttl_secs,
            roles,
        });
        let (router, routes) = routes::all(state.clone());
        Ok(Self {
            listener,
            addr,
            state,
            router,
            routes,
            shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
        })
    }

    /// Every operation the gateway serves, as its router declares them (see `routes::table`).
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets in-flight requests
    /// finish (bounded by the configured shutdown timeout).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        tracing::info!(address = %self.addr, "gateway listening");
        let directory = self.state.commands.directory().clone();
        let listener = tokio::spawn(directory.listen(shutdown.clone()));
        let state = self.state.clone();
        let stop = shutdown.clone();
        let keys = tokio::spawn(async move {
            state
                .tokens
                .keys()
                .refresh_periodically(KEY_REFRESH, stop)
                .await;
        });
        let upkeep = tokio::spawn(metrics::upkeep(shutdown.clone()));
        let pool = self.state.pool.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(IDEMPOTENCY_EXPIRY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                match idempotency::expire(&pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!("forgot {n} idempotency keys older than 24 h"),
                    Err(e) => tracing::warn!("forgetting old idempotency keys failed: {e}"),
                }
            }
        });
        let push = self.state.push.clone();
        let stop = shutdown.clone();
        // Sockets are closed with a close frame as the server shuts down.
        tokio::spawn(async move {
            stop.cancelled().await;
            push.shutdown();
        });
        let push = self.state.push.clone();
        tokio::spawn(async move { push.renew_leases().await });
        let role = self.state.roles[0].clone();
        let stop = shutdown.clone();
        tokio::spawn({
            let role = role.clone();
            async move {
                stop.cancelled().await;
                role.draining();
            }
        });
        let stop = shutdown.clone();
        role.ready();
        let server = warp::serve(self.router)
            .incoming(self.listener)
            .graceful(async move { stop.cancelled().await })
            .run();
        tokio::pin!(server);
        tokio::select! {
            () = &mut server => {}
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(self.shutdown_timeout).await;
            } => tracing::warn!("in-flight requests did not finish in time; stopping anyway"),
        }
        shutdown.cancel();
        let _ = tokio::join!(listener, keys, upkeep);
        role.stopped();
        tracing::info!("gateway stopped");
    }
}

async fn bind(listen: &str) -> Result<TcpListener, GatewayError> {
    // `:0` (no host) means all interfaces, any free port.
    let addr = if listen.starts_with(':') {
        format!("0.0.0.0{listen}")
    } else {
        listen.to_owned()
    };
    let addr: SocketAddr =
        addr.parse()
            .map_err(|e: std::net::AddrParseError| GatewayError::ListenAddress {
                addr: listen.to_owned(),
                reason: e.to_string(),
            })?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: listen.to_owned(),
            source,
        })
}
