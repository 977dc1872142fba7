//! Projector processes crashing, sharing partitions and rebalancing: the read models end
//! identical to a rebuild from the store, with no message counted twice and no `seq` gap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat4all_commands::{CommandContext, CommandService, Limits, SendMessageRequest};
use chat4all_domain::conversation::ConversationKind;
use chat4all_domain::message::MessageContent;
use chat4all_domain::ConversationId;
use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::writes::create_conversation;
use chrono::Utc;
use sqlx::{ConnectOptions, PgPool};
use tokio::task::JoinHandle;

use chat4all_projections::testing::snapshot;

use crate::model::{assert_projected_once_without_gaps, projected_messages};
use crate::process::{message, Process};

const MESSAGES: usize = 800;

fn ctx(user: &str) -> CommandContext {
    chat4all_testsupport::writes::context(user)
}

/// A store, a relay process and the environment projector processes need.
struct Pipeline {
    pool: PgPool,
    env: Vec<(String, String)>,
    _relay: Process,
}

impl Pipeline {
    async fn start() -> Self {
        let (options, pool) = fresh_database().await;
        let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", options.to_url_lossy().to_string()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
            (
                "CHAT4ALL_TOPIC_PREFIX",
                format!("t{}", uuid::Uuid::new_v4().simple()),
            ),
            ("CHAT4ALL_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("CHAT4ALL_KAFKA__PARTITIONS", "4".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        let relay = Process::spawn(&["relay"], &Self::pairs(&env));
        Self {
            pool,
            env,
            _relay: relay,
        }
    }

    fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    fn projector(&self) -> Process {
        Process::spawn(&["project"], &Self::pairs(&self.env))
    }

    /// Sends `MESSAGES` messages over eight conversations, at a pace that keeps the projectors
    /// busy while they are stopped and started.
    async fn send(&self) -> JoinHandle<()> {
        let service = Arc::new(CommandService::new(self.pool.clone(), Limits::default()));
        let mut conversations: Vec<ConversationId> = Vec::new();
        for _ in 0..8 {
            conversations.push(
                create_conversation(
                    &service,
                    ConversationKind::Group,
                    &["alice", "bob", "carol"],
                )
                .await,
            );
        }
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                let request = SendMessageRequest {
                    message_id: None,
                    conversation_id: conversations[i % conversations.len()],
                    content: MessageContent::Text {
                        text: format!("m{i}"),
                    },
                    channels: vec![],
                };
                service
                    .send_message(&ctx(["alice", "bob", "carol"][i % 3]), request, Utc::now())
                    .await
                    .unwrap();
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    }

    /// Waits until `at_least` messages are projected; says what the `projectors` logged if not.
    async fn wait_for_messages(
        &self,
        at_least: usize,
        within: Duration,
        what: &str,
        projectors: &mut [&mut Process],
    ) {
        let deadline = Instant::now() + within;
        let at_least = i64::try_from(at_least).unwrap();
        while projected_messages(&self.pool).await < at_least {
            if Instant::now() > deadline {
                let logs: Vec<Vec<serde_json::Value>> =
                    projectors.iter_mut().map(|p| p.drain().to_vec()).collect();
                panic!("{what}; the projectors logged: {logs:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Nothing counted twice, no gap, and exactly what a rebuild from the store gives.
    async fn assert_model_is_a_rebuild(&self) {
        assert_projected_once_without_gaps(&self.pool).await;
        assert_eq!(
            projected_messages(&self.pool).await,
            i64::try_from(MESSAGES).unwrap()
        );
        let live = snapshot(&self.pool).await;
        chat4all_projections::replay::rebuild(&self.pool, |_| {})
            .await
            .unwrap();
        assert_eq!(snapshot(&self.pool).await, live);
    }
}

/// The member logged an assignment of at least one partition.
fn assert_got_partitions(projector: &mut Process) {
    let assigned = projector.wait_for_log(Duration::from_secs(30), |e| {
        message(e) == "partitions assigned"
            && e["fields"]["partitions"]
                .as_str()
                .is_some_and(|p| p != "[]")
    });
    assert!(
        assigned.is_some(),
        "a member never got partitions: {:?}",
        projector.drain()
    );
}

#[tokio::test]
async fn a_projector_killed_mid_batch_resumes_where_its_offsets_say() {
    let pipeline = Pipeline::start().await;
    let mut first = pipeline.projector();
    assert!(first
        .wait_for_log(Duration::from_secs(30), |e| message(e) == "consuming")
        .is_some());
    let writing = pipeline.send().await;
    pipeline
        .wait_for_messages(
            100,
            Duration::from_secs(60),
            "the projector made no progress",
            &mut [&mut first],
        )
        .await;
    // SIGKILL while it is busy: whatever batch was open is rolled back with its offsets. The
    // replacement starts at once, beside a dead member the broker has not yet given up on: the
    // group hands it the partitions once the session timeout has passed.
    first.crash();
    let restarted = Instant::now();
    let mut second = pipeline.projector();
    writing.await.unwrap();
    pipeline
        .wait_for_messages(
            MESSAGES,
            Duration::from_secs(60),
            "the restarted projector did not catch up",
            &mut [&mut second],
        )
        .await;
    println!("caught up {:?} after the restart", restarted.elapsed());
    pipeline.assert_model_is_a_rebuild().await;
}

#[tokio::test]
async fn projectors_sharing_partitions_survive_a_crash_and_a_newcomer() {
    let pipeline = Pipeline::start().await;
    let mut members: Vec<Process> = (0..3).map(|_| pipeline.projector()).collect();
    for projector in &mut members {
        assert!(projector
            .wait_for_log(Duration::from_secs(30), |e| message(e) == "consuming")
            .is_some());
    }
    let writing = pipeline.send().await;
    {
        let mut watched: Vec<&mut Process> = members.iter_mut().collect();
        pipeline
            .wait_for_messages(
                100,
                Duration::from_secs(60),
                "the projectors made no progress",
                &mut watched,
            )
            .await;
    }
    // kill -9 mid-stream: its open batch rolls back, and its partitions move to the others
    // once the broker has given up on it; a newcomer then joins and takes a share.
    let mut crashed = members.remove(0);
    crashed.crash();
    members.push(pipeline.projector());
    writing.await.unwrap();
    {
        let mut watched: Vec<&mut Process> = members.iter_mut().collect();
        pipeline
            .wait_for_messages(
                MESSAGES,
                Duration::from_secs(90),
                "the projectors did not catch up after the crash and the newcomer",
                &mut watched,
            )
            .await;
    }
    // The newcomer took part: the partitions were split with it.
    assert_got_partitions(members.last_mut().unwrap());
    pipeline.assert_model_is_a_rebuild().await;
}

#[tokio::test]
async fn projectors_sharing_partitions_rebalance_without_losing_or_repeating() {
    let pipeline = Pipeline::start().await;
    let mut first = pipeline.projector();
    let mut second = pipeline.projector();
    for projector in [&mut first, &mut second] {
        assert!(projector
            .wait_for_log(Duration::from_secs(30), |e| message(e) == "consuming")
            .is_some());
    }
    let writing = pipeline.send().await;
    pipeline
        .wait_for_messages(
            100,
            Duration::from_secs(60),
            "the projectors made no progress",
            &mut [&mut first, &mut second],
        )
        .await;
    // Stopped mid-stream: it finishes its batch and leaves the group, which hands its
    // partitions to the other; a third member joining then splits them again.
    first.signal("-TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).await.success());
    let mut third = pipeline.projector();
    writing.await.unwrap();
    pipeline
        .wait_for_messages(
            MESSAGES,
            Duration::from_secs(120),
            "the projectors did not catch up after the rebalance",
            &mut [&mut second, &mut third],
        )
        .await;
    // Both remaining members took part: the partitions were split between them.
    for projector in [&mut second, &mut third] {
        assert_got_partitions(projector);
    }
    pipeline.assert_model_is_a_rebuild().await;
}
