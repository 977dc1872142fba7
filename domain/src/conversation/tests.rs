#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::json;

use super::{
    Conversation, ConversationCommand, ConversationCreated, ConversationError, ConversationEvent,
    ConversationKind, CreateConversation, MemberJoined, MemberLeft, MemberState,
    ReadHorizonAdvanced, DEFAULT_MAX_GROUP_MEMBERS, MIN_GROUP_MEMBERS,
};
use crate::{ConversationId, UserId, EVENT_VERSION_1};

const MAX: usize = DEFAULT_MAX_GROUP_MEMBERS;

fn framework() -> TestFramework<Conversation> {
    TestFramework::with(())
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn users(names: &[&str]) -> Vec<UserId> {
    names.iter().map(|n| user(n)).collect()
}

fn numbered_users(count: usize) -> Vec<UserId> {
    (0..count).map(|i| user(&format!("user{i}"))).collect()
}

fn conversation_id() -> ConversationId {
    ConversationId::parse("0190c7a4-5b1e-7d3a-9f00-0000000000c1").unwrap()
}

fn create_cmd(kind: ConversationKind, members: Vec<UserId>, actor: &str) -> CreateConversation {
    CreateConversation {
        conversation_id: conversation_id(),
        kind,
        members,
        name: Some("Team".to_owned()),
        description: Some("Where the team talks".to_owned()),
        metadata: Some(json!({ "topic": "launch" })),
        actor: user(actor),
        max_group_members: MAX,
        at: at(0),
    }
}

fn private_cmd() -> CreateConversation {
    create_cmd(ConversationKind::Private, users(&["alice", "bob"]), "alice")
}

fn group_cmd() -> CreateConversation {
    create_cmd(
        ConversationKind::Group,
        users(&["alice", "bob", "carol"]),
        "alice",
    )
}

fn created_from(cmd: &CreateConversation) -> ConversationEvent {
    ConversationEvent::ConversationCreated(ConversationCreated {
        conversation_id: cmd.conversation_id,
        kind: cmd.kind,
        members: cmd.members.clone(),
        name: cmd.name.clone(),
        description: cmd.description.clone(),
        metadata: cmd.metadata.clone(),
        created_by: cmd.actor.clone(),
        created_at: cmd.at,
    })
}

/// A group of alice (its creator), bob and carol.
fn group_created() -> ConversationEvent {
    created_from(&group_cmd())
}

/// A private conversation between alice (its creator) and bob.
fn private_created() -> ConversationEvent {
    created_from(&private_cmd())
}

fn create(cmd: CreateConversation) -> ConversationCommand {
    ConversationCommand::Create(cmd)
}

fn add(who: &str, actor: &str) -> ConversationCommand {
    add_with_max(who, actor, MAX)
}

fn add_with_max(who: &str, actor: &str, max_group_members: usize) -> ConversationCommand {
    ConversationCommand::AddMember {
        user: user(who),
        actor: user(actor),
        max_group_members,
        at: at(10),
    }
}

fn remove(who: &str, actor: &str) -> ConversationCommand {
    remove_as(who, actor, false)
}

fn remove_as(who: &str, actor: &str, actor_is_admin: bool) -> ConversationCommand {
    ConversationCommand::RemoveMember {
        user: user(who),
        actor: user(actor),
        actor_is_admin,
        at: at(20),
    }
}

fn mark_read(who: &str, up_to_seq: u64) -> ConversationCommand {
    ConversationCommand::MarkRead {
        user: user(who),
        up_to_seq,
        at: at(30),
    }
}

fn joined(who: &str, by: &str) -> ConversationEvent {
    ConversationEvent::MemberJoined(MemberJoined {
        conversation_id: conversation_id(),
        user_id: user(who),
        added_by: user(by),
        joined_at: at(10),
    })
}

fn left(who: &str, by: &str) -> ConversationEvent {
    ConversationEvent::MemberLeft(MemberLeft {
        conversation_id: conversation_id(),
        user_id: user(who),
        removed_by: user(by),
        left_at: at(20),
    })
}

fn read(who: &str, up_to_seq: u64) -> ConversationEvent {
    ConversationEvent::ReadHorizonAdvanced(ReadHorizonAdvanced {
        conversation_id: conversation_id(),
        user_id: user(who),
        up_to_seq,
        read_at: at(30),
    })
}

async fn assert_already_exists(change: impl FnOnce(&mut CreateConversation)) {
    let mut cmd = group_cmd();
    change(&mut cmd);
    framework()
        .given(vec![group_created()])
        .when_async(create(cmd))
        .await
        .then_expect_error(ConversationError::AlreadyExists);
}

fn state_after(events: Vec<ConversationEvent>) -> Conversation {
    let mut conversation = Conversation::default();
    for event in events {
        conversation.apply(event);
    }
    conversation
}

// ---- create ----

#[tokio::test]
async fn creating_a_private_conversation_with_two_members_records_it_exactly() {
    framework()
        .given_no_previous_events()
        .when_async(create(private_cmd()))
        .await
        .then_expect_events(vec![ConversationEvent::ConversationCreated(
            ConversationCreated {
                conversation_id: conversation_id(),
                kind: ConversationKind::Private,
                members: users(&["alice", "bob"]),
                name: Some("Team".to_owned()),
                description: Some("Where the team talks".to_owned()),
                metadata: Some(json!({ "topic": "launch" })),
                created_by: user("alice"),
                created_at: at(0),
            },
        )]);
}

#[tokio::test]
async fn creating_a_private_conversation_keeps_the_member_order_given() {
    let cmd = create_cmd(ConversationKind::Private, users(&["bob", "alice"]), "alice");
    let events = framework()
        .given_no_previous_events()
        .when_async(create(cmd))
        .await
        .inspect_result()
        .unwrap();
    let [ConversationEvent::ConversationCreated(created)] = events.as_slice() else {
        panic!("expected one ConversationCreated, got {events:?}");
    };
    assert_eq!(created.members, users(&["bob", "alice"]));
}

#[tokio::test]
async fn creating_a_private_conversation_with_one_member_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Private,
            users(&["alice"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::PrivateNeedsTwoMembers { got: 1 });
}

#[tokio::test]
async fn creating_a_private_conversation_with_three_members_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Private,
            users(&["alice", "bob", "carol"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::PrivateNeedsTwoMembers { got: 3 });
}

#[tokio::test]
async fn creating_a_group_with_two_members_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Group,
            users(&["alice", "bob"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::GroupSize {
            min: MIN_GROUP_MEMBERS,
            max: MAX,
            got: 2,
        });
}

#[tokio::test]
async fn creating_a_group_over_the_maximum_is_rejected() {
    let members = numbered_users(MAX + 1);
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Group,
            members,
            "user0",
        )))
        .await
        .then_expect_error(ConversationError::GroupSize {
            min: 3,
            max: 100,
            got: 101,
        });
}

#[tokio::test]
async fn creating_a_group_honours_a_configured_maximum() {
    let mut cmd = create_cmd(ConversationKind::Group, numbered_users(6), "user0");
    cmd.max_group_members = 5;
    framework()
        .given_no_previous_events()
        .when_async(create(cmd))
        .await
        .then_expect_error(ConversationError::GroupSize {
            min: 3,
            max: 5,
            got: 6,
        });
}

#[tokio::test]
async fn creating_a_group_with_exactly_three_members_succeeds() {
    framework()
        .given_no_previous_events()
        .when_async(create(group_cmd()))
        .await
        .then_expect_events(vec![ConversationEvent::ConversationCreated(
            ConversationCreated {
                conversation_id: conversation_id(),
                kind: ConversationKind::Group,
                members: users(&["alice", "bob", "carol"]),
                name: Some("Team".to_owned()),
                description: Some("Where the team talks".to_owned()),
                metadata: Some(json!({ "topic": "launch" })),
                created_by: user("alice"),
                created_at: at(0),
            },
        )]);
}

#[tokio::test]
async fn creating_a_group_with_exactly_the_maximum_succeeds() {
    let cmd = create_cmd(ConversationKind::Group, numbered_users(MAX), "user0");
    let expected = created_from(&cmd);
    framework()
        .given_no_previous_events()
        .when_async(create(cmd))
        .await
        .then_expect_events(vec![expected]);
}

#[tokio::test]
async fn creating_with_a_duplicate_member_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Group,
            users(&["alice", "bob", "carol", "bob"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::DuplicateMember(user("bob")));
}

#[tokio::test]
async fn creating_a_private_conversation_with_oneself_twice_is_a_duplicate() {
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Private,
            users(&["alice", "alice"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::DuplicateMember(user("alice")));
}

#[tokio::test]
async fn creating_without_the_creator_among_the_members_is_rejected() {
    framework()
        .given_no_previous_events()
        .when_async(create(create_cmd(
            ConversationKind::Group,
            users(&["bob", "carol", "dave"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::CreatorNotMember);
}

#[tokio::test]
async fn retrying_the_same_create_later_records_nothing() {
    let mut retry = group_cmd();
    retry.at = at(3_600);
    framework()
        .given(vec![group_created()])
        .when_async(create(retry))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn retrying_the_same_create_with_another_group_limit_records_nothing() {
    let mut retry = group_cmd();
    retry.max_group_members = 50;
    framework()
        .given(vec![group_created()])
        .when_async(create(retry))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn creating_another_kind_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.kind = ConversationKind::Private).await;
}

#[tokio::test]
async fn creating_other_members_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.members.push(user("dave"))).await;
}

#[tokio::test]
async fn creating_the_members_in_another_order_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.members.reverse()).await;
}

#[tokio::test]
async fn creating_another_name_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.name = Some("Other".to_owned())).await;
}

#[tokio::test]
async fn creating_without_the_description_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.description = None).await;
}

#[tokio::test]
async fn creating_other_metadata_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.metadata = Some(json!({ "topic": "other" }))).await;
}

#[tokio::test]
async fn creating_by_another_creator_on_an_existing_id_is_rejected() {
    assert_already_exists(|c| c.actor = user("bob")).await;
}

#[tokio::test]
async fn an_existing_id_is_rejected_before_the_new_content_is_validated() {
    framework()
        .given(vec![group_created()])
        .when_async(create(create_cmd(
            ConversationKind::Private,
            users(&["alice"]),
            "alice",
        )))
        .await
        .then_expect_error(ConversationError::AlreadyExists);
}

// ---- add member ----

#[tokio::test]
async fn a_member_adds_someone_to_a_group() {
    framework()
        .given(vec![group_created()])
        .when_async(add("dave", "bob"))
        .await
        .then_expect_events(vec![ConversationEvent::MemberJoined(MemberJoined {
            conversation_id: conversation_id(),
            user_id: user("dave"),
            added_by: user("bob"),
            joined_at: at(10),
        })]);
}

#[tokio::test]
async fn adding_by_a_non_member_is_not_found() {
    framework()
        .given(vec![group_created()])
        .when_async(add("dave", "mallory"))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn adding_by_a_member_who_left_is_not_found() {
    framework()
        .given(vec![group_created(), left("bob", "bob")])
        .when_async(add("dave", "bob"))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn adding_to_an_unknown_conversation_is_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(add("dave", "alice"))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn adding_to_a_private_conversation_is_rejected() {
    framework()
        .given(vec![private_created()])
        .when_async(add("carol", "alice"))
        .await
        .then_expect_error(ConversationError::PrivateMembersFixed);
}

#[tokio::test]
async fn adding_an_existing_member_records_nothing() {
    framework()
        .given(vec![group_created()])
        .when_async(add("carol", "alice"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn adding_to_a_full_group_is_rejected() {
    let full = create_cmd(ConversationKind::Group, numbered_users(MAX), "user0");
    framework()
        .given(vec![created_from(&full)])
        .when_async(add("newcomer", "user0"))
        .await
        .then_expect_error(ConversationError::GroupFull { max: MAX });
}

#[tokio::test]
async fn adding_to_a_group_filled_by_joins_is_rejected() {
    framework()
        .given(vec![group_created(), joined("dave", "alice")])
        .when_async(add_with_max("erin", "alice", 4))
        .await
        .then_expect_error(ConversationError::GroupFull { max: 4 });
}

#[tokio::test]
async fn adding_to_a_group_with_one_place_left_succeeds() {
    framework()
        .given(vec![group_created()])
        .when_async(add_with_max("dave", "alice", 4))
        .await
        .then_expect_events(vec![joined("dave", "alice")]);
}

#[tokio::test]
async fn adding_a_member_to_a_full_group_who_is_already_in_it_records_nothing() {
    framework()
        .given(vec![group_created()])
        .when_async(add_with_max("bob", "alice", 3))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_member_who_left_can_be_added_again() {
    framework()
        .given(vec![group_created(), left("carol", "carol")])
        .when_async(add("carol", "bob"))
        .await
        .then_expect_events(vec![joined("carol", "bob")]);
}

// ---- remove member ----

#[tokio::test]
async fn a_member_leaves_by_removing_itself() {
    framework()
        .given(vec![group_created()])
        .when_async(remove("bob", "bob"))
        .await
        .then_expect_events(vec![ConversationEvent::MemberLeft(MemberLeft {
            conversation_id: conversation_id(),
            user_id: user("bob"),
            removed_by: user("bob"),
            left_at: at(20),
        })]);
}

#[tokio::test]
async fn the_creator_removes_another_member() {
    framework()
        .given(vec![group_created()])
        .when_async(remove("carol", "alice"))
        .await
        .then_expect_events(vec![left("carol", "alice")]);
}

#[tokio::test]
async fn a_member_who_is_not_the_creator_cannot_remove_another() {
    framework()
        .given(vec![group_created()])
        .when_async(remove("carol", "bob"))
        .await
        .then_expect_error(ConversationError::NotAllowed);
}

#[tokio::test]
async fn an_admin_member_removes_another_member() {
    framework()
        .given(vec![group_created()])
        .when_async(remove_as("carol", "bob", true))
        .await
        .then_expect_events(vec![left("carol", "bob")]);
}

#[tokio::test]
async fn an_admin_who_is_not_a_member_removes_a_member() {
    framework()
        .given(vec![group_created()])
        .when_async(remove_as("carol", "admin", true))
        .await
        .then_expect_events(vec![left("carol", "admin")]);
}

#[tokio::test]
async fn removing_by_a_non_member_who_is_not_an_admin_is_not_found() {
    framework()
        .given(vec![group_created()])
        .when_async(remove("carol", "mallory"))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn a_creator_who_left_can_no_longer_remove_members() {
    framework()
        .given(vec![group_created(), left("alice", "alice")])
        .when_async(remove("carol", "alice"))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn removing_from_an_unknown_conversation_is_not_found_even_for_an_admin() {
    framework()
        .given_no_previous_events()
        .when_async(remove_as("carol", "admin", true))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn removing_from_a_private_conversation_is_rejected() {
    framework()
        .given(vec![private_created()])
        .when_async(remove("bob", "alice"))
        .await
        .then_expect_error(ConversationError::PrivateMembersFixed);
}

#[tokio::test]
async fn leaving_a_private_conversation_is_rejected() {
    framework()
        .given(vec![private_created()])
        .when_async(remove("bob", "bob"))
        .await
        .then_expect_error(ConversationError::PrivateMembersFixed);
}

#[tokio::test]
async fn an_admin_cannot_remove_from_a_private_conversation() {
    framework()
        .given(vec![private_created()])
        .when_async(remove_as("bob", "admin", true))
        .await
        .then_expect_error(ConversationError::PrivateMembersFixed);
}

#[tokio::test]
async fn removing_someone_who_is_not_a_member_is_rejected() {
    framework()
        .given(vec![group_created()])
        .when_async(remove("dave", "alice"))
        .await
        .then_expect_error(ConversationError::MemberNotFound(user("dave")));
}

#[tokio::test]
async fn removing_a_member_who_already_left_is_rejected() {
    framework()
        .given(vec![group_created(), left("bob", "bob")])
        .when_async(remove("bob", "alice"))
        .await
        .then_expect_error(ConversationError::MemberNotFound(user("bob")));
}

// ---- mark read ----

#[tokio::test]
async fn marking_read_forward_advances_the_horizon() {
    framework()
        .given(vec![group_created()])
        .when_async(mark_read("bob", 5))
        .await
        .then_expect_events(vec![ConversationEvent::ReadHorizonAdvanced(
            ReadHorizonAdvanced {
                conversation_id: conversation_id(),
                user_id: user("bob"),
                up_to_seq: 5,
                read_at: at(30),
            },
        )]);
}

#[tokio::test]
async fn marking_read_past_an_earlier_horizon_advances_it() {
    framework()
        .given(vec![group_created(), read("bob", 5)])
        .when_async(mark_read("bob", 6))
        .await
        .then_expect_events(vec![read("bob", 6)]);
}

#[tokio::test]
async fn marking_read_at_the_same_horizon_records_nothing() {
    framework()
        .given(vec![group_created(), read("bob", 5)])
        .when_async(mark_read("bob", 5))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn marking_read_below_the_horizon_records_nothing() {
    framework()
        .given(vec![group_created(), read("bob", 5)])
        .when_async(mark_read("bob", 3))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn marking_read_up_to_zero_on_a_fresh_member_records_nothing() {
    framework()
        .given(vec![group_created()])
        .when_async(mark_read("bob", 0))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn read_horizons_are_kept_per_member() {
    framework()
        .given(vec![group_created(), read("bob", 5)])
        .when_async(mark_read("carol", 3))
        .await
        .then_expect_events(vec![read("carol", 3)]);
}

#[tokio::test]
async fn marking_read_by_a_non_member_is_not_found() {
    framework()
        .given(vec![group_created()])
        .when_async(mark_read("mallory", 5))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn marking_read_by_a_member_who_left_is_not_found() {
    framework()
        .given(vec![group_created(), left("bob", "bob")])
        .when_async(mark_read("bob", 5))
        .await
        .then_expect_error(ConversationError::NotFound);
}

#[tokio::test]
async fn marking_read_in_an_unknown_conversation_is_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(mark_read("bob", 5))
        .await
        .then_expect_error(ConversationError::NotFound);
}

// ---- state ----

#[test]
fn a_new_conversation_state_is_not_created() {
    let conversation = Conversation::default();
    assert_eq!(conversation.id(), None);
    assert!(conversation.created.is_none());
    assert!(conversation.members.is_empty());
    assert!(!conversation.is_member(&user("alice")));
    assert_eq!(conversation.read_horizon(&user("alice")), 0);
}

#[test]
fn creation_makes_every_listed_user_a_member_from_the_creation_time() {
    let conversation = state_after(vec![group_created()]);
    assert_eq!(conversation.id(), Some(conversation_id()));
    let expected = MemberState {
        joined_at: Some(at(0)),
        last_read_seq: 0,
    };
    assert_eq!(
        conversation.members.keys().cloned().collect::<Vec<_>>(),
        users(&["alice", "bob", "carol"])
    );
    assert!(conversation.members.values().all(|m| *m == expected));
}

#[test]
fn a_joined_user_is_a_member_from_its_join_time() {
    let conversation = state_after(vec![group_created(), joined("dave", "alice")]);
    assert!(conversation.is_member(&user("dave")));
    assert_eq!(
        conversation.members.get(&user("dave")),
        Some(&MemberState {
            joined_at: Some(at(10)),
            last_read_seq: 0,
        })
    );
}

#[test]
fn after_member_left_the_user_is_no_longer_a_member() {
    let conversation = state_after(vec![group_created(), read("bob", 7), left("bob", "bob")]);
    assert!(!conversation.is_member(&user("bob")));
    assert_eq!(conversation.read_horizon(&user("bob")), 0);
    assert!(conversation.is_member(&user("alice")));
    assert!(conversation.is_member(&user("carol")));
    assert_eq!(conversation.members.len(), 2);
}

#[test]
fn the_read_horizon_follows_advances() {
    let conversation = state_after(vec![group_created(), read("bob", 4), read("bob", 9)]);
    assert_eq!(conversation.read_horizon(&user("bob")), 9);
    assert_eq!(conversation.read_horizon(&user("carol")), 0);
}

#[test]
fn applying_an_older_horizon_never_moves_it_back() {
    let conversation = state_after(vec![group_created(), read("bob", 9), read("bob", 4)]);
    assert_eq!(conversation.read_horizon(&user("bob")), 9);
}

#[test]
fn a_horizon_for_a_non_member_does_not_make_it_a_member() {
    let conversation = state_after(vec![group_created(), read("mallory", 4)]);
    assert!(!conversation.is_member(&user("mallory")));
    assert_eq!(conversation.read_horizon(&user("mallory")), 0);
}

// ---- stored form ----

#[test]
fn events_serialize_externally_tagged_by_their_variant_name() {
    let value = serde_json::to_value(private_created()).unwrap();
    assert_eq!(
        value,
        json!({
            "ConversationCreated": {
                "conversation_id": "0190c7a4-5b1e-7d3a-9f00-0000000000c1",
                "kind": "private",
                "members": ["alice", "bob"],
                "name": "Team",
                "description": "Where the team talks",
                "metadata": { "topic": "launch" },
                "created_by": "alice",
                "created_at": "2023-11-14T22:13:20Z",
            }
        })
    );
    assert_eq!(
        serde_json::to_value(read("bob", 5)).unwrap(),
        json!({
            "ReadHorizonAdvanced": {
                "conversation_id": "0190c7a4-5b1e-7d3a-9f00-0000000000c1",
                "user_id": "bob",
                "up_to_seq": 5,
                "read_at": "2023-11-14T22:13:50Z",
            }
        })
    );
}

#[test]
fn every_event_type_is_its_variant_name_at_version_one() {
    let cases = [
        (group_created(), "ConversationCreated"),
        (joined("dave", "alice"), "MemberJoined"),
        (left("dave", "alice"), "MemberLeft"),
        (read("bob", 1), "ReadHorizonAdvanced"),
    ];
    for (event, name) in cases {
        assert_eq!(event.event_type(), name);
        assert_eq!(event.event_version(), EVENT_VERSION_1);
        assert_eq!(event.event_version(), "1.0");
        let value = serde_json::to_value(&event).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, [name], "stored tag of {name}");
        let back: ConversationEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn a_group_kind_is_stored_in_snake_case() {
    assert_eq!(
        serde_json::to_value(ConversationKind::Group).unwrap(),
        json!("group")
    );
    assert_eq!(ConversationKind::Group.as_str(), "group");
    assert_eq!(ConversationKind::Private.as_str(), "private");
}
