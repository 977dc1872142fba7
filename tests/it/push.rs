//! WebSocket push through the whole pipeline, with two gateway processes: a message sent through
//! one instance reaches members connected to the other, in `seq` order, exactly once; a socket
//! that missed a burst resumes exactly what it missed; bad clients are closed with their codes
//! while everyone else is served.

use std::time::{Duration, Instant};

use chat4all_testsupport::database::fresh_database;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::{ConnectOptions, PgPool};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::process::Process;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Store, relay, projector and two gateways, all real processes on one deployment prefix.
struct Deployment {
    pool: PgPool,
    gateways: Vec<String>,
    _processes: Vec<Process>,
    http: reqwest::Client,
}

impl Deployment {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> Self {
        let (options, pool) = fresh_database().await;
        let url = options.to_url_lossy().to_string();
        let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut env = vec![
            ("DATABASE_URL", url.as_str()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("CHAT4ALL_TOPIC_PREFIX", prefix.as_str()),
            ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0"),
            ("CHAT4ALL_LISTEN", "127.0.0.1:0"),
            ("CHAT4ALL_RATE_LIMIT_PER_MINUTE", "0"),
        ];
        env.extend_from_slice(extra);
        let mut processes = vec![
            Process::spawn(&["relay"], &env),
            Process::spawn(&["project"], &env),
        ];
        let mut gateways = Vec::new();
        for _ in 0..2 {
            let mut gateway = Process::spawn(&["gateway"], &env);
            let address = gateway
                .wait_for_log(Duration::from_secs(30), |e| {
                    e["fields"]["address"].is_string()
                })
                .expect("the gateway logs its address")["fields"]["address"]
                .as_str()
                .unwrap()
                .to_owned();
            gateways.push(address);
            processes.push(gateway);
        }
        Self {
            pool,
            gateways,
            _processes: processes,
            http: reqwest::Client::new(),
        }
    }

    async fn token(&self, user: &str) -> String {
        self.client_and_token(user).await.1
    }

    async fn client_and_token(&self, user: &str) -> (chat4all_gateway::auth::NewClient, String) {
        let base = format!("http://{}", self.gateways[0]);
        chat4all_testsupport::auth::client_and_token(&self.http, &base, &self.pool, user).await
    }

    async fn post(&self, gateway: usize, token: &str, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("http://{}{path}", self.gateways[gateway]))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn connect(&self, gateway: usize, token: &str) -> Socket {
        let url = format!("ws://{}/ws?token={token}", self.gateways[gateway]);
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let first = next_frame(&mut socket).await;
        assert_eq!(first["type"], "connection.established");
        socket
    }
}

/// The next JSON frame from the server (pings skipped); panics after 20 s.
async fn next_frame(socket: &mut Socket) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("no frame within 20 s")
            .expect("the socket closed")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] != "ping" {
                return frame;
            }
        }
    }
}

/// Collects `message.created` seqs of `conversation` until `count` arrived.
async fn created_seqs(socket: &mut Socket, conversation: &str, count: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let frame = next_frame(socket).await;
        if frame["type"] == "message.created" && frame["data"]["conversation_id"] == conversation {
            seqs.push(frame["data"]["seq"].as_i64().unwrap());
        }
    }
    seqs
}

/// The close code the server ends the socket with.
async fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(Some(message)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        socket.next(),
    )
    .await
    {
        match message {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

async fn group(deployment: &Deployment, token: &str, members: &[&str]) -> String {
    let created = deployment
        .post(
            0,
            token,
            "/v1/conversations",
            json!({"type": "group", "name": "team", "members": members}),
        )
        .await;
    created["conversation_id"].as_str().unwrap().to_owned()
}

async fn send(
    deployment: &Deployment,
    gateway: usize,
    token: &str,
    conversation: &str,
    text: &str,
) {
    deployment
        .post(
            gateway,
            token,
            "/v1/messages",
            json!({"conversation_id": conversation, "content": {"type": "text", "text": text}}),
        )
        .await;
}

#[tokio::test]
async fn messages_reach_members_on_every_instance_in_seq_order_exactly_once() {
    let deployment = Deployment::start().await;
    let alice = deployment.token("alice").await;
    let bob = deployment.token("bob").await;
    let carol = deployment.token("carol").await;
    let conversation = group(&deployment, &alice, &["alice", "bob", "carol"]).await;
    // Bob on the second instance, carol on the first; alice sends through the first.
    let mut bob_socket = deployment.connect(1, &bob).await;
    let mut carol_socket = deployment.connect(0, &carol).await;
    // Both subscribed once the creation (projected before or after they connected) is behind
    // them: a first message proves the path end to end.
    send(&deployment, 0, &alice, &conversation, "hello").await;
    assert_eq!(created_seqs(&mut bob_socket, &conversation, 1).await, [1]);
    assert_eq!(created_seqs(&mut carol_socket, &conversation, 1).await, [1]);

    // 100 concurrent sends through both instances.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (http, gateway, token, conversation) = (
            deployment.http.clone(),
            deployment.gateways[i % 2].clone(),
            alice.clone(),
            conversation.clone(),
        );
        sends.spawn(async move {
            let response = http
                .post(format!("http://{gateway}/v1/messages"))
                .bearer_auth(token)
                .json(&json!({"conversation_id": conversation, "content": {"type": "text", "text": format!("m{i}")}}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap();
    }
    let expected: Vec<i64> = (2..=101).collect();
    assert_eq!(
        created_seqs(&mut bob_socket, &conversation, 100).await,
        expected
    );
    assert_eq!(
        created_seqs(&mut carol_socket, &conversation, 100).await,
        expected
    );
}

#[tokio::test]
async fn a_subscriber_that_missed_a_burst_resumes_exactly_what_it_missed() {
    let deployment = Deployment::start().await;
    let alice = deployment.token("alice").await;
    let bob = deployment.token("bob").await;
    let conversation = group(&deployment, &alice, &["alice", "bob", "carol"]).await;
    let mut bob_socket = deployment.connect(1, &bob).await;
    send(&deployment, 0, &alice, &conversation, "before").await;
    assert_eq!(created_seqs(&mut bob_socket, &conversation, 1).await, [1]);
    bob_socket.close(None).await.unwrap();

    for i in 0..20 {
        send(
            &deployment,
            0,
            &alice,
            &conversation,
            &format!("missed {i}"),
        )
        .await;
    }
    // The burst is in the read models (a newcomer's resume from 0 sees all 21).
    let mut bob_socket = deployment.connect(1, &bob).await;
    let resume = json!({"type": "resume", "data": {"positions": {conversation.clone(): 1}}});
    bob_socket
        .send(Message::text(resume.to_string()))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    let completed = loop {
        let frame = next_frame(&mut bob_socket).await;
        match frame["type"].as_str() {
            Some("message.created") => seqs.push(frame["data"]["seq"].as_i64().unwrap()),
            Some("resume.completed") => break frame,
            _ => {}
        }
    };
    // Whatever the projector had not applied yet when the resume ran arrives live, after it.
    let replayed = completed["data"]["replayed"].as_u64().unwrap();
    assert_eq!(completed["data"]["recovered"], true);
    assert_eq!(seqs.len() as u64, replayed);
    let rest = 20 - seqs.len();
    seqs.extend(created_seqs(&mut bob_socket, &conversation, rest).await);
    assert_eq!(seqs, (2..=21).collect::<Vec<i64>>());
    // And nothing after it twice: the next live message is 22.
    send(&deployment, 0, &alice, &conversation, "after").await;
    assert_eq!(created_seqs(&mut bob_socket, &conversation, 1).await, [22]);
}

#[tokio::test]
async fn bad_clients_are_closed_with_their_codes_and_others_are_served() {
    let deployment = Deployment::start().await;
    let alice = deployment.token("alice").await;
    let bob = deployment.token("bob").await;
    let conversation = group(&deployment, &alice, &["alice", "bob", "carol"]).await;

    // A bad token never gets a socket: HTTP 401 before the upgrade.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?token=garbage",
        deployment.gateways[0]
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }

    // A plain GET is not a handshake: a problem, not a hang.
    let plain = deployment
        .http
        .get(format!(
            "http://{}/ws?token={alice}",
            deployment.gateways[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let problem: Value = plain.json().await.unwrap();
    assert_eq!(problem["code"], "websocket_upgrade_required");

    let mut watcher = deployment.connect(0, &alice).await;
    // Malformed frames: 4003.
    for bad in [
        "not json",
        "[1, 2]",
        r#"{"type": "dance"}"#,
        r#"{"type": "resume", "data": {"positions": {"x": 1}}}"#,
    ] {
        let mut socket = deployment.connect(0, &bob).await;
        socket.send(Message::text(bad)).await.unwrap();
        assert_eq!(
            close_code(&mut socket).await,
            Some(CloseCode::Library(4003)),
            "{bad}"
        );
    }
    // An 11th connection of one user, counted across both instances: 4002; the first ten stay
    // up. A place given back on one instance can be taken on the other.
    let mut sockets = Vec::new();
    for i in 0..10 {
        sockets.push(deployment.connect(i % 2, &bob).await);
    }
    for gateway in 0..2 {
        let url = format!("ws://{}/ws?token={bob}", deployment.gateways[gateway]);
        let (mut eleventh, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(
            close_code(&mut eleventh).await,
            Some(CloseCode::Library(4002)),
            "an 11th socket on instance {gateway}"
        );
    }
    let mut leaving = sockets.remove(0);
    leaving.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let replacement = loop {
        let url = format!("ws://{}/ws?token={bob}", deployment.gateways[1]);
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer to the handshake");
        match frame {
            Some(Ok(Message::Text(text))) if text.contains("connection.established") => {
                break socket;
            }
            _ => assert!(
                Instant::now() < deadline,
                "the closed socket's place was never given back"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sockets.push(replacement);
    // Every socket follows the conversation (whether it was projected before or after they
    // connected): a first message reaches them all.
    send(&deployment, 1, &alice, &conversation, "first").await;
    assert_eq!(created_seqs(&mut watcher, &conversation, 1).await, [1]);
    for socket in &mut sockets {
        assert_eq!(created_seqs(socket, &conversation, 1).await, [1]);
    }

    // Over 100 frames a minute: 4008.
    let mut chatty = sockets.pop().unwrap();
    for _ in 0..150 {
        if chatty
            .send(Message::text(r#"{"type": "pong"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        close_code(&mut chatty).await,
        Some(CloseCode::Library(4008))
    );

    // Typing reaches the other member and is not echoed.
    let typing = json!({"type": "typing", "data": {"conversation_id": conversation}});
    sockets[0]
        .send(Message::text(typing.to_string()))
        .await
        .unwrap();
    let heard = loop {
        let frame = next_frame(&mut watcher).await;
        if frame["type"] == "typing" {
            break frame;
        }
    };
    assert_eq!(heard["data"]["user_id"], "bob");
    assert!(heard["data"].get("tenant_id").is_none());
    // A non-member may not type in someone else's conversation.
    let carol = deployment.token("carol").await;
    let private = deployment
        .post(
            0,
            &alice,
            "/v1/conversations",
            json!({"type": "private", "members": ["alice", "dave"]}),
        )
        .await["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut outsider = deployment.connect(0, &carol).await;
    let typing = json!({"type": "typing", "data": {"conversation_id": private}});
    outsider
        .send(Message::text(typing.to_string()))
        .await
        .unwrap();
    let refused = loop {
        let frame = next_frame(&mut outsider).await;
        if frame["type"] == "error" {
            break frame;
        }
    };
    assert_eq!(refused["data"]["code"], "not_a_member");

    // Everyone else is still served, and saw nothing twice.
    send(&deployment, 1, &alice, &conversation, "still here").await;
    assert_eq!(created_seqs(&mut watcher, &conversation, 1).await, [2]);
    for socket in &mut sockets {
        assert_eq!(created_seqs(socket, &conversation, 1).await, [2]);
    }
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_the_socket_with_4001() {
    let deployment = Deployment::start_with(&[("CHAT4ALL_AUTH__ACCESS_TOKEN_TTL_SECS", "2")]).await;
    let bob = deployment.token("bob").await;
    let mut socket = deployment.connect(0, &bob).await;
    assert_eq!(
        close_code(&mut socket).await,
        Some(CloseCode::Library(4001))
    );
}

/// A Redis server of the test's own, so that stopping it disturbs nobody else.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed with Redis");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn sockets_survive_a_redis_restart_and_get_what_was_published_meanwhile() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let deployment = Deployment::start_with(&[("REDIS_URL", url.as_str())]).await;
    let alice = deployment.token("alice").await;
    let bob = deployment.token("bob").await;
    let conversation = group(&deployment, &alice, &["alice", "bob", "carol"]).await;
    let mut socket = deployment.connect(1, &bob).await;
    send(&deployment, 0, &alice, &conversation, "before").await;
    assert_eq!(created_seqs(&mut socket, &conversation, 1).await, [1]);

    redis.stop();
    for i in 0..5 {
        send(
            &deployment,
            0,
            &alice,
            &conversation,
            &format!("during {i}"),
        )
        .await;
    }
    let _redis = PrivateRedis::start(redis.port);
    // Once the gateway has resubscribed, the next message arrives, and the five published while
    // Redis was down come first, from the read models.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seqs = Vec::new();
    while seqs.is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing arrived after Redis came back"
        );
        send(&deployment, 0, &alice, &conversation, "after").await;
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(2), socket.next()).await
        {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "message.created" {
                seqs.push(frame["data"]["seq"].as_i64().unwrap());
            }
        }
    }
    let sent = count_messages(&deployment.pool, &conversation).await;
    let rest = usize::try_from(sent - 1).unwrap() - seqs.len();
    seqs.extend(created_seqs(&mut socket, &conversation, rest).await);
    assert_eq!(seqs, (2..=sent).collect::<Vec<i64>>());
}

/// Messages of `conversation` once the read models have them all (the store is the truth).
async fn count_messages(pool: &PgPool, conversation: &str) -> i64 {
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'MessageSent' \
           AND payload -> 'MessageSent' ->> 'conversation_id' = $1",
    )
    .bind(conversation)
    .fetch_one(pool)
    .await
    .unwrap();
    stored
}

#[tokio::test]
async fn a_silent_client_is_closed_and_one_that_answers_pings_is_not() {
    let deployment = Deployment::start_with(&[
        ("CHAT4ALL_PUSH__PING_INTERVAL_SECS", "1"),
        ("CHAT4ALL_PUSH__IDLE_TIMEOUT_SECS", "3"),
    ])
    .await;
    let bob = deployment.token("bob").await;
    // Before connecting: the server counts the silence from the moment the socket is served.
    let started = Instant::now();
    let mut silent = deployment.connect(0, &bob).await;
    let mut lively = deployment.connect(0, &bob).await;
    // The lively one answers every ping until the silent one is closed, and some more.
    let mut pings = 0;
    let code = loop {
        tokio::select! {
            closed = close_code(&mut silent) => break closed,
            frame = next_ping(&mut lively) => {
                pings += 1;
                lively.send(Message::text(r#"{"type": "pong"}"#)).await.unwrap();
                assert!(frame["type"] == "ping");
            }
        }
    };
    assert_eq!(code, Some(CloseCode::Away));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(pings >= 2, "pings arrive every second: {pings}");
    for _ in 0..3 {
        next_ping(&mut lively).await;
        lively
            .send(Message::text(r#"{"type": "pong"}"#))
            .await
            .unwrap();
    }
    // Still open: a frame goes through.
    lively
        .send(Message::text(r#"{"type": "pong"}"#))
        .await
        .unwrap();
    assert_eq!(next_ping(&mut lively).await["type"], "ping");
}

/// The next `ping` frame.
async fn next_ping(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no ping within 10 s")
            .expect("the socket closed")
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "ping" {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn a_consumer_too_slow_to_receive_is_closed_and_others_get_everything() {
    let deployment = Deployment::start_with(&[("CHAT4ALL_PUSH__SEND_TIMEOUT_SECS", "2")]).await;
    let alice = deployment.token("alice").await;
    let bob = deployment.token("bob").await;
    let conversation = group(&deployment, &alice, &["alice", "bob", "carol"]).await;
    let mut watcher = deployment.connect(0, &alice).await;

    // Bob's client reads its first frame and then nothing; a tiny receive buffer lets the
    // server's side fill up soon.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp
        .connect(deployment.gateways[0].parse().unwrap())
        .await
        .unwrap();
    let url = format!("ws://{}/ws?token={bob}", deployment.gateways[0]);
    let (mut stalled, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut stalled).await["type"],
        "connection.established"
    );

    // Far more than the kernel's socket buffers (4 MiB at most here) and the queue hold.
    let count = 300;
    let text = "x".repeat(60 * 1024);
    // The watcher, reading as it should, gets every message in order while the stalled
    // socket is dealt with.
    let (seqs, ()) = tokio::join!(
        created_seqs(&mut watcher, &conversation, count),
        futures::stream::iter(0..count).for_each_concurrent(8, |_| send(
            &deployment,
            1,
            &alice,
            &conversation,
            &text
        )),
    );
    assert_eq!(
        seqs,
        (1..=i64::try_from(count).unwrap()).collect::<Vec<_>>()
    );
    let metrics = format!("http://{}/metrics", deployment.gateways[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = deployment
            .http
            .get(&metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let closes = chat4all_testsupport::metrics::value(
            &body,
            "chat4all_ws_slow_consumer_closes_total",
            &[],
        )
        .unwrap_or(0.0);
        if closes >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow consumer was never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What the stalled client finally reads ends early: the connection is gone, not
    // holding the rest of the conversation in the server's memory.
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stalled.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.contains("\"message.created\"") {
                    received += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                if let Some(frame) = frame {
                    assert_eq!(frame.code, CloseCode::Again);
                }
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(None | Some(Err(_))) => break,
            Err(_) => panic!("the stalled socket was left open"),
        }
    }
    assert!(
        received < count,
        "a stalled client was sent everything ({received})"
    );
}

#[tokio::test]
async fn a_token_revoked_on_another_instance_closes_its_sockets_with_4001() {
    let deployment = Deployment::start().await;
    let (client, token) = deployment.client_and_token("bob").await;
    let other = deployment.token("bob").await;
    let mut revoked = deployment.connect(0, &token).await;
    let mut unaffected = deployment.connect(0, &other).await;
    let answer = deployment
        .http
        .post(format!("http://{}/auth/revoke", deployment.gateways[1]))
        .form(&[
            ("token", token.as_str()),
            ("client_id", &client.client_id),
            ("client_secret", &client.client_secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        close_code(&mut revoked).await,
        Some(CloseCode::Library(4001))
    );
    // The user's other token is untouched: its socket stays and still gets frames.
    unaffected
        .send(Message::text(
            r#"{"type": "resume", "data": {"positions": {}}}"#,
        ))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut unaffected).await["type"],
        "resume.completed"
    );
    // And the revoked token cannot come back.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/ws?token={token}",
        deployment.gateways[1]
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}
