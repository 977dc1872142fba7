//! Every committed event reaches the topic once, in order per aggregate, one partition per
//! conversation; an open transaction stalls the relay only while it is open, visibly.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chat4all_testsupport::database::fresh_database;
use chat4all_testsupport::writes::{
    create_conversation, send_text, CommandService, ConversationId, ConversationKind, Limits,
};
use sqlx::{Connection, PgConnection};

use crate::helpers::{consume, default_bootstrap, eventually, insert_event, Record, RunningRelay};

async fn conversation(service: &CommandService) -> ConversationId {
    create_conversation(service, ConversationKind::Group, &["alice", "bob", "carol"]).await
}

async fn send(service: &CommandService, conversation: ConversationId, text: String) {
    send_text(service, "bob", conversation, &text).await;
}

/// Asserts that every partition holds its events in the store's `(tx_id, global_position)` order,
/// so each conversation (one partition) reads in the order the relay read.
async fn assert_store_order(pool: &sqlx::PgPool, records: &[Record]) {
    let order: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY tx_id, global_position")
            .fetch_all(pool)
            .await
            .unwrap();
    let rank: HashMap<i64, usize> = order.into_iter().enumerate().map(|(i, p)| (p, i)).collect();
    let mut by_partition: HashMap<i32, Vec<&Record>> = HashMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (partition, mut list) in by_partition {
        list.sort_by_key(|r| r.offset);
        let ranks: Vec<usize> = list
            .iter()
            .map(|r| rank[&r.envelope["position"].as_i64().unwrap()])
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} is not in the store's order"
        );
    }
}

/// Asserts exactly-once, per-aggregate order and one partition per conversation.
fn assert_faithful(records: &[Record], expected: usize) {
    let identities: HashSet<_> = records.iter().map(Record::identity).collect();
    assert_eq!(identities.len(), expected, "every event is on the topic");
    assert_eq!(records.len(), expected, "and none twice");
    let mut by_partition: HashMap<i32, Vec<&Record>> = HashMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut partition_of_conversation: HashMap<String, i32> = HashMap::new();
    for (partition, mut list) in by_partition {
        list.sort_by_key(|r| r.offset);
        let mut last_sequence: HashMap<(String, String), i64> = HashMap::new();
        for r in list {
            let (aggregate_type, aggregate_id, sequence) = r.identity();
            let last = last_sequence
                .entry((aggregate_type, aggregate_id.clone()))
                .or_insert(0);
            assert!(
                sequence > *last,
                "{aggregate_id} out of order: {sequence} after {last}"
            );
            *last = sequence;
            let conversation = r.envelope["conversation_id"].as_str().unwrap().to_owned();
            assert_eq!(r.key, conversation, "records are keyed by conversation");
            let seen = partition_of_conversation
                .entry(conversation.clone())
                .or_insert(partition);
            assert_eq!(
                *seen, partition,
                "conversation {conversation} spans partitions"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_writers_and_held_transactions_reach_the_topic_exactly_once_in_order() {
    let (options, pool) = fresh_database().await;
    let bootstrap = default_bootstrap();
    let relay = RunningRelay::start(&pool, &options, &bootstrap, 100);
    let service = std::sync::Arc::new(CommandService::new(pool.clone(), Limits::default()));
    let mut conversations = Vec::new();
    for _ in 0..6 {
        conversations.push(conversation(&service).await);
    }

    let mut tasks = Vec::new();
    for (writer, &conversation) in conversations.iter().enumerate() {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                send(&service, conversation, format!("w{writer} m{i}")).await;
            }
        }));
    }
    // Transactions that take their positions early and commit late, several times over.
    for (holder, conversation) in conversations.iter().take(3).enumerate() {
        let (options, conversation) = (options.clone(), conversation.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect_with(&options).await.unwrap();
            // One stream per holder, appended to across transactions.
            let stream = format!("acme:held-{holder}");
            for round in 0..3 {
                let mut tx = conn.begin().await.unwrap();
                for sequence in round * 5 + 1..=round * 5 + 5 {
                    insert_event(&mut tx, &stream, sequence, &conversation).await;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let expected = usize::try_from(expected).unwrap();
    assert_eq!(expected, 6 + 6 * 40 + 3 * 3 * 5);

    let records = consume(&bootstrap, &relay.topic, expected, Duration::from_secs(60)).await;
    assert_faithful(&records, expected);
    assert_store_order(&pool, &records).await;
    let any = &records[0];
    assert_eq!(any.headers["content-type"], "application/json");
    assert_eq!(
        any.headers["event_type"],
        any.envelope["event_type"].as_str().unwrap()
    );
    assert!(any.headers["traceparent"].starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert_eq!(any.envelope["tenant_id"], "acme");
    assert_eq!(any.envelope["hash"].as_str().unwrap().len(), 64);
    assert_eq!(relay.status.published(), u64::try_from(expected).unwrap());
    relay.stop().await;
}

#[tokio::test]
async fn an_open_transaction_stalls_the_relay_only_while_open_and_shows_in_its_figures() {
    let (options, pool) = fresh_database().await;
    let bootstrap = default_bootstrap();
    let relay = RunningRelay::start(&pool, &options, &bootstrap, 100);
    let service = CommandService::new(pool.clone(), Limits::default());
    let conversation = conversation(&service).await;
    let status = relay.status.clone();
    eventually(
        "the creation to be published",
        Duration::from_secs(30),
        || status.published() == 1,
    )
    .await;

    // An unrelated transaction, in another database of the same server, holding an xid.
    let mut unrelated = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut unrelated).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut unrelated)
        .await
        .unwrap();
    send(&service, conversation, "waits".to_owned()).await;
    eventually("the stall to show", Duration::from_secs(10), || {
        status.oldest_transaction_seconds() > 0.0 && status.lag_events() >= 1
    })
    .await;
    assert_eq!(
        status.published(),
        1,
        "nothing behind the open transaction was published"
    );

    sqlx::query("COMMIT").execute(&mut unrelated).await.unwrap();
    eventually("the relay to catch up", Duration::from_secs(10), || {
        status.published() == 2
    })
    .await;
    let records = consume(&bootstrap, &relay.topic, 2, Duration::from_secs(30)).await;
    assert_faithful(&records, 2);
    relay.stop().await;
}

#[tokio::test]
async fn a_checkpoint_from_another_cluster_is_refused_until_rebased() {
    let (options, pool) = fresh_database().await;
    let bootstrap = default_bootstrap();
    let service = CommandService::new(pool.clone(), Limits::default());
    let conversation = conversation(&service).await;
    send(&service, conversation, "before the restore".to_owned()).await;
    // As after a logical restore into a new cluster: the checkpoint names transaction ids this
    // cluster has not reached.
    let prefix = crate::helpers::unique_prefix();
    sqlx::query("INSERT INTO relay_checkpoints (deployment, tx_id, position) VALUES ($1, '1099511627776'::xid8, 2)")
        .bind(&prefix)
        .execute(&pool)
        .await
        .unwrap();
    let relay = RunningRelay::start_as(&pool, &options, &bootstrap, 100, &prefix);
    let status = relay.status.clone();
    eventually("the refusal to show", Duration::from_secs(20), || {
        status.errors() >= 1
    })
    .await;
    send(&service, conversation, "after the restore".to_owned()).await;
    assert_eq!(
        status.published(),
        0,
        "nothing was published past a foreign checkpoint"
    );

    let first: i64 = sqlx::query_scalar(
        "SELECT min(global_position) FROM events WHERE aggregate_type = 'Message'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    chat4all_relay::rebase(&pool, &prefix, first).await.unwrap();
    eventually(
        "the relay to resume after the rebase",
        Duration::from_secs(30),
        || status.published() == 1,
    )
    .await;
    let records = consume(&bootstrap, &relay.topic, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].envelope["payload"]["MessageSent"]["content"]["text"],
        "after the restore"
    );
    relay.stop().await;
}
