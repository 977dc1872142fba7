//! A running gateway per test and the requests tests make against it.

use chat4all_gateway::auth::{NewClient, Scope};
use chat4all_gateway::problem::ErrorCode;
use chat4all_gateway::{Application, RouteSpec};
use chat4all_platform::Settings;
use chat4all_testsupport::database::fresh_database;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{ConnectOptions, PgPool};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    /// The relay behind this gateway, when running.
    relay: Option<Worker>,
    /// The projector behind this gateway, when running.
    projector: Option<Worker>,
    database_url: String,
    /// The deployment prefix (Kafka topics, Redis keys and channels) of this test alone.
    pub prefix: String,
    /// Settings of this app on top of the defaults, shared by its other instances.
    env: Vec<(String, String)>,
    pub pool: PgPool,
    pub http: reqwest::Client,
    /// What the gateway's router declares it serves.
    pub routes: Vec<RouteSpec>,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
        for worker in [self.relay.take(), self.projector.take()]
            .into_iter()
            .flatten()
        {
            worker.handle.abort();
        }
    }
}

/// A task of the pipeline and what stops it.
struct Worker {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// An answer: status, headers and the body parsed as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer with `status` and `code`, and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {:?}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{:?}",
            self.body
        );
        assert_eq!(
            self.body["code"], code,
            "unexpected problem: {:?}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["type"].is_string());
        assert_eq!(
            ErrorCode::parse(code).map(|c| c.status().as_u16()),
            Some(status),
            "{code} is not an ErrorCode answered with {status}"
        );
        self
    }

    /// The fields named in a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The test broker, with the partitioning of the tests' topics.
fn test_kafka() -> chat4all_platform::KafkaSettings {
    chat4all_testsupport::kafka::settings(4)
}

impl TestApp {
    /// A gateway of its own, without a rate limit (tests of the limit turn it on).
    pub async fn spawn() -> Self {
        Self::spawn_with(&[("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0")]).await
    }

    /// A gateway with `env` on top of the default settings.
    pub async fn spawn_with(env: &[(&str, &str)]) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            chat4all_platform::init_telemetry();
        }
        let (options, pool) = fresh_database().await;
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start(options.to_url_lossy().to_string(), pool, prefix, env).await
    }

    /// A gateway with the rest of the engine behind it: a relay and a projector on the test
    /// broker, under a deployment prefix of their own, the projector announcing on Redis for
    /// the gateway's sockets.
    pub async fn spawn_with_pipeline() -> Self {
        let mut app = Self::spawn().await;
        app.start_relay();
        let topic = chat4all_platform::KafkaSettings::events_topic(&app.prefix);
        let redis_url = app
            .env
            .iter()
            .find(|(k, _)| k == "REDIS_URL")
            .map_or("redis://127.0.0.1:6379", |(_, v)| v.as_str());
        let announcer = redis::aio::ConnectionManager::new_lazy_with_config(
            redis::Client::open(redis_url).unwrap(),
            redis::aio::ConnectionManagerConfig::new(),
        )
        .unwrap();
        let projector = chat4all_projections::Projector::new(
            app.pool.clone(),
            chat4all_projections::ProjectorConfig {
                topic,
                group_id: format!("{}-projections", app.prefix),
                prefix: app.prefix.clone(),
                kafka: test_kafka(),
            },
            Some(announcer),
        );
        let stop = app.stop.child_token();
        let run = stop.clone();
        let handle = tokio::spawn(async move { projector.run(run).await });
        app.projector = Some(Worker { stop, handle });
        app
    }

    /// Starts the relay of this app (again after [`Self::stop_relay`]: it goes on from its
    /// checkpoint, so everything stored meanwhile reaches the broker, and the projector,
    /// together).
    pub fn start_relay(&mut self) {
        assert!(self.relay.is_none(), "the relay is already running");
        let options: sqlx::postgres::PgConnectOptions = self.database_url.parse().unwrap();
        let relay = chat4all_testsupport::engine::relay(
            &self.pool,
            options,
            &self.prefix,
            test_kafka(),
            500,
        );
        let stop = self.stop.child_token();
        let run = stop.clone();
        let handle = tokio::spawn(async move { relay.run(run).await });
        self.relay = Some(Worker { stop, handle });
    }

    /// Stops the relay and waits until it has: what is stored from now on stays unpublished
    /// (so unprojected and unannounced) until [`Self::start_relay`].
    pub async fn stop_relay(&mut self) {
        if let Some(worker) = self.relay.take() {
            worker.stop.cancel();
            worker.handle.await.unwrap();
        }
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Answer {
        Answer::from(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Another gateway instance on the same database, as in a scaled-out deployment.
    pub async fn another_instance(&self) -> Self {
        Self::start(
            self.database_url.clone(),
            self.pool.clone(),
            self.prefix.clone(),
            self.env.clone(),
        )
        .await
    }

    async fn start(url: String, pool: PgPool, prefix: String, env: Vec<(String, String)>) -> Self {
        let mut vars = vec![
            ("DATABASE_URL".to_owned(), url.clone()),
            (
                "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
                std::env::var("KAFKA_BOOTSTRAP_SERVERS")
                    .unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
            ),
            ("CHAT4ALL_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("CHAT4ALL_TOPIC_PREFIX".to_owned(), prefix.clone()),
        ];
        vars.extend(env.iter().cloned());
        let settings = Settings::load_from(None, vars).unwrap();
        let app = Application::build(&settings).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        let routes = app.routes().to_vec();
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        Self {
            base,
            relay: None,
            projector: None,
            database_url: url,
            prefix,
            env,
            pool,
            http: reqwest::Client::new(),
            routes,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn client(&self, tenant: &str, user: &str, scopes: &[Scope]) -> NewClient {
        chat4all_testsupport::auth::client(&self.pool, tenant, user, scopes).await
    }

    pub async fn token_for(&self, client: &NewClient) -> String {
        chat4all_testsupport::auth::token_for(&self.http, &self.base, client).await
    }

    /// A read+write token for `user` of `tenant`.
    pub async fn token(&self, tenant: &str, user: &str) -> String {
        let client = self
            .client(tenant, user, &[Scope::Read, Scope::Write])
            .await;
        self.token_for(&client).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        Answer::from(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::from(request.send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        Answer::from(
            self.http
                .delete(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::from(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// Creates a conversation as the token's user and returns its id.
    pub async fn conversation(&self, token: &str, kind: &str, members: &[&str]) -> String {
        let answer = self
            .post(
                "/v1/conversations",
                token,
                &json!({"type": kind, "members": members}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer.body["conversation_id"].as_str().unwrap().to_owned()
    }

    /// Sends a text message and returns the answer.
    pub async fn send(&self, token: &str, conversation: &str, text: &str) -> Answer {
        self.post(
            "/v1/messages",
            token,
            &json!({"conversation_id": conversation, "content": {"type": "text", "text": text}}),
        )
        .await
    }

    /// How many events of `event_type` the store holds.
    pub async fn count_events(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// How many events the store holds in all.
    pub async fn total_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The payloads of the events of `event_type`, in global order (the inner object of the
    /// externally tagged payload).
    pub async fn payloads(&self, event_type: &str) -> Vec<Value> {
        sqlx::query_scalar(
            "SELECT payload -> event_type FROM events WHERE event_type = $1 ORDER BY global_position",
        )
        .bind(event_type)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// POSTs JSON `body` with `authorization` as the raw `Authorization` header (or none).
    pub async fn post_authorized(
        &self,
        path: &str,
        authorization: Option<&str>,
        body: &Value,
    ) -> Answer {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        Answer::from(request.send().await.unwrap()).await
    }
}
