//! The typed Hub client (`botburrow_shared::hub`) against the real dev Hub over HTTP, plus its
//! retry policy against tiny local servers that fail on purpose.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use botburrow_shared::hub::{
    Consumption, DiscoverQuery, HubClient, HubError, NewPost, NotificationType, PollOutcome,
    RetryPolicy, SearchQuery,
};
use botburrow_shared::ids::{ActivationId, AgentId};
use botburrow_shared::settings::Secret;
use botburrow_shared::work::TaskType;
use common::{ADMIN, RON, SERVICE, TestHub, agent_key};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn id(s: &str) -> AgentId {
    AgentId::new(s)
}

#[tokio::test]
async fn the_fleet_flow_works_end_to_end_through_the_client() {
    let hub = TestHub::start().await;
    let fleet = hub.client(Some(SERVICE));
    let ron = hub.client(Some(RON));
    fleet.health().await.expect("health");

    // Nothing to do: an empty poll with timeout 0 and an empty fallback list.
    assert_eq!(
        fleet
            .poll_notifications(Duration::ZERO, 100)
            .await
            .expect("poll"),
        PollOutcome::Agents(vec![])
    );
    assert!(
        fleet
            .agents_with_notifications()
            .await
            .expect("list")
            .is_empty()
    );

    // Ron mentions simple-bot.
    let post = ron
        .create_post(
            &id("ron"),
            &NewPost {
                title: Some("Help".into()),
                content: "@simple-bot what is 2+2?".into(),
                community: Some("m/general".into()),
            },
            "ron-post-1",
        )
        .await
        .expect("post");
    assert_eq!(post.author.id.as_str(), "ron");
    assert_eq!(post.community.as_deref(), Some("m/general"));

    let PollOutcome::Agents(agents) = fleet
        .poll_notifications(Duration::from_secs(5), 100)
        .await
        .expect("poll")
    else {
        panic!("poll is supported")
    };
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (agents[0].id.as_str(), agents[0].notification_count),
        ("simple-bot", 1)
    );
    assert_eq!(
        fleet.agents_with_notifications().await.expect("fallback"),
        agents
    );

    // The runner's steps.
    let bot = id("simple-bot");
    let inbox = fleet.notifications(&bot, true).await.expect("inbox");
    assert_eq!(inbox.len(), 1);
    let n = &inbox[0];
    assert_eq!(n.kind, NotificationType::Mention);
    assert_eq!(n.post_id.as_deref(), Some(post.id.as_str()));
    assert_eq!(n.from_agent.as_ref().map(|f| f.name.as_str()), Some("ron"));
    assert!(!n.read);
    let thread = fleet.get_post(&post.id).await.expect("thread");
    assert_eq!(thread.post.title.as_deref(), Some("Help"));
    assert!(thread.comments.is_empty());
    let reply = fleet
        .create_comment(&bot, &post.id, "4", None, "reply-1")
        .await
        .expect("comment");
    assert_eq!(reply.post_id, post.id);
    let nested = fleet
        .create_comment(
            &id("claude-coder-1"),
            &post.id,
            "agreed",
            Some(&reply.id),
            "reply-2",
        )
        .await
        .expect("nested");
    assert_eq!(nested.parent_id.as_deref(), Some(reply.id.as_str()));
    assert_eq!(
        fleet
            .mark_read(&bot, std::slice::from_ref(&n.id))
            .await
            .expect("mark"),
        1
    );
    assert_eq!(
        fleet
            .mark_read(&bot, std::slice::from_ref(&n.id))
            .await
            .expect("mark again"),
        0
    );
    fleet.activated(&bot).await.expect("activated");
    fleet
        .record_consumption(
            &Consumption {
                agent_id: bot.clone(),
                tokens_input: 1200,
                tokens_output: 300,
                cost_usd: 0.25,
                model: "claude-sonnet-4".into(),
                activation_id: ActivationId::new("act-1"),
                task_type: TaskType::Inbox,
                duration_seconds: 3.5,
            },
            "consumption-act-1",
        )
        .await
        .expect("consumption");
    let budget = fleet.budget_health(&bot).await.expect("budget");
    assert!(budget.healthy);
    assert_eq!(
        (budget.daily_used, budget.daily_limit, budget.monthly_limit),
        (0.25, 10.0, 100.0)
    );
    assert_eq!(budget.status, "healthy");

    // Afterwards: only the nested reply is unread, ron has replies, simple-bot is not stale.
    let unread = fleet.notifications(&bot, true).await.expect("inbox");
    assert_eq!(unread.len(), 1);
    assert_eq!(unread[0].kind, NotificationType::Reply);
    assert_eq!(unread[0].comment_id.as_deref(), Some(nested.id.as_str()));
    assert_eq!(
        fleet
            .notifications(&bot, false)
            .await
            .expect("history")
            .len(),
        2
    );
    let ron_inbox = fleet.notifications(&id("ron"), true).await.expect("ron");
    assert!(ron_inbox.iter().all(|n| n.kind == NotificationType::Reply) && ron_inbox.len() == 2);
    let stale = fleet
        .stale_agents(Duration::from_secs(900))
        .await
        .expect("stale");
    assert!(
        stale
            .iter()
            .all(|a| a.id.as_str() != "simple-bot" && a.last_activated_at.is_none())
    );
    assert_eq!(stale.len(), 3);
    let thread = fleet.get_post(&post.id).await.expect("thread");
    assert_eq!(thread.comments.len(), 2);
    assert_eq!(thread.post.comment_count, 2);
    assert_eq!(thread.comments[0].author.id.as_str(), "simple-bot");
    let st = hub.state().await;
    assert_eq!(
        st["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["id"] == "simple-bot")
            .expect("bot")["activation_count"],
        1
    );
    assert_eq!(st["consumption"][0]["model"], "claude-sonnet-4");

    // Search and discovery through the client.
    let found = fleet
        .search("what is", Some("m/general"), 10)
        .await
        .expect("search");
    assert_eq!(
        found.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![post.id.clone()]
    );
    assert!(
        fleet
            .search("what is", Some("m/rust"), 10)
            .await
            .expect("search")
            .is_empty()
    );
    let q = DiscoverQuery {
        communities: vec!["m/general".into()],
        ..DiscoverQuery::default()
    };
    assert!(
        fleet.discover(&bot, &q).await.expect("discover").is_empty(),
        "simple-bot already answered"
    );
    let other = fleet
        .discover(&id("devops-agent"), &q)
        .await
        .expect("discover");
    assert_eq!(other.len(), 1);

    // Retried creates with the same key make one post.
    let again = ron
        .create_post(
            &id("ron"),
            &NewPost {
                content: "ignored".into(),
                ..NewPost::default()
            },
            "ron-post-1",
        )
        .await
        .expect("replay");
    assert_eq!(again.id, post.id);
    assert_eq!(
        hub.state().await["posts"].as_array().expect("posts").len(),
        1
    );
}

/// hub-api.md §11.3 "End to end", every Hub call through the typed client: a waiting long-poll
/// wakes on a human's mention, the agent reads its inbox and the thread, replies once (a retry
/// with the same key is replayed), marks read, leaves the queue, and the next poll blocks for
/// its whole timeout.
#[tokio::test]
async fn a_mention_wakes_the_long_poll_and_the_answered_agent_leaves_the_queue() {
    let hub = TestHub::start().await;
    let fleet = hub.client(Some(SERVICE));
    let ron = hub.client(Some(RON));
    let agent = id("claude-coder-1");

    // The coordinator's long-poll is already waiting when the mention arrives.
    let poll_timeout = Duration::from_secs(20);
    let waiting = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let out = fleet.poll_notifications(poll_timeout, 100).await;
            (out, std::time::Instant::now())
        })
    };
    // (The client cannot see pollers; the dev control plane can.)
    assert!(
        botburrow_testkit::eventually(Duration::from_secs(5), || async {
            hub.active_pollers().await == 1
        })
        .await,
        "the poll never started waiting"
    );
    let before_post = std::time::Instant::now();
    let post = ron
        .create_post(
            &id("ron"),
            &NewPost {
                title: Some("Lifetimes".into()),
                content: "@claude-coder-1 why does this not compile?".into(),
                community: Some("m/general".into()),
            },
            "e2e-ron-question",
        )
        .await
        .expect("post");
    let (polled, woke_at) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the poll woke within 5 s of the mention, not at its 20 s timeout")
        .expect("poll task");
    let waited = woke_at.duration_since(before_post);
    assert!(
        waited < Duration::from_secs(1),
        "woke {waited:?} after the mention"
    );
    let PollOutcome::Agents(agents) = polled.expect("poll") else {
        panic!("the dev Hub supports the long-poll")
    };
    assert_eq!(
        agents
            .iter()
            .map(|a| (a.id.as_str(), a.notification_count))
            .collect::<Vec<_>>(),
        vec![("claude-coder-1", 1)]
    );

    // The runner: the agent's unread inbox (the service key with agent_id, and the agent's own
    // key agree), then the thread.
    let inbox = fleet.notifications(&agent, true).await.expect("inbox");
    assert_eq!(inbox.len(), 1);
    let n = &inbox[0];
    assert_eq!(n.kind, NotificationType::Mention);
    assert_eq!(n.post_id.as_deref(), Some(post.id.as_str()));
    assert_eq!(n.from_agent.as_ref().map(|f| f.id.as_str()), Some("ron"));
    assert!(!n.read);
    let own = hub
        .client(Some(&agent_key("claude-coder-1")))
        .notifications_for_key(true, 50)
        .await
        .expect("own inbox");
    assert_eq!(
        own.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec![n.id.as_str()]
    );
    let thread = fleet.get_post(&post.id).await.expect("thread");
    assert_eq!(thread.post.id, post.id);
    assert!(thread.post.content.contains("why does this not compile"));
    assert!(thread.comments.is_empty());

    // The reply, keyed by the notification; a retried send with the same key creates nothing.
    let key = format!("reply:{}", n.id);
    let reply = fleet
        .create_comment(
            &agent,
            &post.id,
            "The borrow outlives the value.",
            None,
            &key,
        )
        .await
        .expect("reply");
    assert_eq!(reply.post_id, post.id);
    assert_eq!(reply.author.id.as_str(), "claude-coder-1");
    let retried = fleet
        .create_comment(
            &agent,
            &post.id,
            "The borrow outlives the value.",
            None,
            &key,
        )
        .await
        .expect("retried reply");
    assert_eq!(retried.id, reply.id, "replayed, not a second comment");
    let thread = fleet.get_post(&post.id).await.expect("thread");
    assert_eq!(
        thread
            .comments
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        vec![reply.id.as_str()]
    );
    assert_eq!(thread.post.comment_count, 1);

    // Mark read: the agent leaves the queue; ron (a human, never scheduled) has the reply.
    assert_eq!(
        fleet
            .mark_read(&agent, std::slice::from_ref(&n.id))
            .await
            .expect("mark"),
        1
    );
    assert!(
        fleet
            .notifications(&agent, true)
            .await
            .expect("inbox")
            .is_empty()
    );
    let queued = fleet.agents_with_notifications().await.expect("queue");
    assert!(
        queued.iter().all(|a| a.id != agent),
        "still queued: {queued:?}"
    );
    assert!(queued.is_empty(), "{queued:?}");
    let ron_inbox = ron.notifications_for_key(true, 10).await.expect("ron");
    assert_eq!(ron_inbox.len(), 1);
    assert_eq!(ron_inbox[0].kind, NotificationType::Reply);
    assert_eq!(ron_inbox[0].comment_id.as_deref(), Some(reply.id.as_str()));

    // Nothing left: the next poll blocks for its whole timeout, then answers empty.
    let started = std::time::Instant::now();
    let next = fleet
        .poll_notifications(Duration::from_secs(1), 100)
        .await
        .expect("poll");
    let took = started.elapsed();
    assert_eq!(next, PollOutcome::Agents(vec![]));
    assert!(
        took >= Duration::from_secs(1),
        "returned before its timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the Hub's empty answer, not the client's 11 s timeout: {took:?}"
    );
}

#[tokio::test]
async fn client_errors_are_typed_and_4xx_is_not_retried() {
    let hub = TestHub::start().await;
    let fleet = hub.client(Some(SERVICE));
    match fleet.notifications(&id("ghost"), true).await {
        Err(HubError::NotFound { what }) => assert_eq!(what, "Agent 'ghost' not found"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        fleet.get_post("nope").await,
        Err(HubError::NotFound { .. })
    ));
    let bad = hub.client(Some("wrong-key"));
    assert!(matches!(
        bad.agents_with_notifications().await,
        Err(HubError::Unauthorized)
    ));
    let agent = hub.client(Some(&agent_key("simple-bot")));
    assert!(matches!(
        agent.poll_notifications(Duration::ZERO, 10).await,
        Err(HubError::Forbidden)
    ));
    assert!(matches!(
        agent.stale_agents(Duration::from_secs(1)).await,
        Err(HubError::Forbidden)
    ));
    let admin = hub.client(Some(ADMIN));
    match admin
        .create_post(
            &id("ron"),
            &NewPost {
                content: " ".into(),
                ..NewPost::default()
            },
            "k",
        )
        .await
    {
        Err(HubError::Api {
            status: 422,
            detail,
        }) => assert!(detail.contains("content")),
        other => panic!("expected a 422, got {other:?}"),
    }
    let nobody = HubClient::new(&hub.hub.url(), None).expect("client");
    assert!(matches!(
        nobody.search("x", None, 1).await,
        Err(HubError::Unauthorized)
    ));
    nobody.health().await.expect("health needs no key");
}

#[tokio::test]
async fn poll_falls_back_when_disabled_and_unknown_types_are_kept() {
    let hub = TestHub::start().await;
    let fleet = hub.client(Some(SERVICE));
    hub.post(Some(ADMIN), "/_dev/poll", json!({"enabled": false}))
        .await;
    assert_eq!(
        fleet
            .poll_notifications(Duration::from_secs(5), 100)
            .await
            .expect("poll"),
        PollOutcome::Unsupported
    );
    for kind in ["dm", "thread_update", "mention"] {
        let (s, _) = hub
            .post(Some(ADMIN), "/_dev/notifications", json!({"agent_id": "example-agent", "type": kind, "content": "c", "from_agent": "ron"}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let inbox = fleet
        .notifications(&id("example-agent"), true)
        .await
        .expect("inbox with odd types");
    let kinds: Vec<NotificationType> = inbox.into_iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        vec![
            NotificationType::Dm,
            NotificationType::Other("thread_update".into()),
            NotificationType::Mention
        ]
    );
    let fallback = fleet.agents_with_notifications().await.expect("fallback");
    assert_eq!(fallback[0].notification_count, 3);
}

/// hub-api.md §4.0 row 1b: the inbox of the key's own identity (no `agent_id`), with a limit.
#[tokio::test]
async fn the_inbox_by_key_identity_honours_unread_and_limit() {
    let hub = TestHub::start().await;
    let ron = hub.client(Some(RON));
    let fleet = hub.client(Some(SERVICE));
    let bot = hub.client(Some(&agent_key("simple-bot")));
    let mut asked = Vec::new();
    for i in 0..3 {
        let p = ron
            .create_post(
                &id("ron"),
                &NewPost {
                    title: Some(format!("Q{i}")),
                    content: format!("@simple-bot question {i}"),
                    community: Some("m/general".into()),
                },
                &format!("inbox-q-{i}"),
            )
            .await
            .expect("post");
        asked.push(p.id);
    }
    ron.create_post(
        &id("ron"),
        &NewPost {
            content: "@devops-agent deploy it".into(),
            ..NewPost::default()
        },
        "inbox-devops",
    )
    .await
    .expect("post");

    // An agent key: its own inbox only, oldest first, cut at the limit.
    let page = bot.notifications_for_key(true, 2).await.expect("page");
    assert_eq!(
        page.iter().map(|n| n.post_id.clone()).collect::<Vec<_>>(),
        vec![Some(asked[0].clone()), Some(asked[1].clone())]
    );
    assert!(
        page.iter()
            .all(|n| n.kind == NotificationType::Mention && !n.read)
    );
    let all = bot.notifications_for_key(true, 20).await.expect("all");
    assert_eq!(
        all.len(),
        3,
        "devops-agent's mention is not in simple-bot's inbox"
    );

    // unread=true hides what was read; without it the history is listed.
    fleet
        .mark_read(&id("simple-bot"), std::slice::from_ref(&all[0].id))
        .await
        .expect("mark");
    assert_eq!(
        bot.notifications_for_key(true, 20)
            .await
            .expect("unread")
            .len(),
        2
    );
    assert_eq!(
        bot.notifications_for_key(false, 20)
            .await
            .expect("history")
            .len(),
        3
    );

    // The service key has no identity of its own: the dev Hub lists every agent's unread ones,
    // which also shows that no agent_id was sent.
    let everyone = fleet
        .notifications_for_key(true, 200)
        .await
        .expect("everyone");
    assert_eq!(
        everyone.len(),
        3,
        "2 unread of simple-bot + 1 of devops-agent"
    );
    assert_eq!(
        fleet
            .notifications_for_key(true, 1)
            .await
            .expect("limited")
            .len(),
        1
    );
}

/// Posts `content` as `author` in `community` through `client`; returns the post id.
async fn post_in(client: &HubClient, author: &str, community: &str, content: &str) -> String {
    client
        .create_post(
            &id(author),
            &NewPost {
                title: None,
                content: content.into(),
                community: Some(community.into()),
            },
            &format!("{author}:{community}:{content}"),
        )
        .await
        .expect("post")
        .id
}

#[tokio::test]
async fn search_filters_by_author_and_community() {
    let hub = TestHub::start().await;
    let fleet = hub.client(Some(SERVICE));
    let ron_general = post_in(&fleet, "ron", "m/general", "borrow checker woes").await;
    let ron_rust = post_in(&fleet, "ron", "m/rust", "the borrow checker again").await;
    let bot_rust = post_in(&fleet, "simple-bot", "m/rust", "Borrow checker tips").await;

    let ids = |posts: Vec<botburrow_shared::hub::Post>| -> Vec<String> {
        posts.into_iter().map(|p| p.id).collect()
    };
    let any = fleet
        .search_with(&SearchQuery::new("borrow checker"))
        .await
        .expect("search");
    assert_eq!(
        ids(any),
        [bot_rust.clone(), ron_rust.clone(), ron_general.clone()]
    );
    let rons = fleet
        .search_with(&SearchQuery {
            author: Some(id("ron")),
            ..SearchQuery::new("borrow checker")
        })
        .await
        .expect("search");
    assert_eq!(
        ids(rons),
        [ron_rust.clone(), ron_general.clone()],
        "newest first"
    );
    let rons_in_rust = fleet
        .search_with(&SearchQuery {
            author: Some(id("ron")),
            community: Some("m/rust".into()),
            ..SearchQuery::new("borrow checker")
        })
        .await
        .expect("search");
    assert_eq!(ids(rons_in_rust), std::slice::from_ref(&ron_rust));
    let bots = fleet
        .search_with(&SearchQuery {
            author: Some(id("simple-bot")),
            limit: 1,
            ..SearchQuery::new("BORROW")
        })
        .await
        .expect("search");
    assert_eq!(ids(bots), [bot_rust]);
    let nobody = fleet
        .search_with(&SearchQuery {
            author: Some(id("devops-agent")),
            ..SearchQuery::new("borrow")
        })
        .await
        .expect("search");
    assert!(nobody.is_empty());
    // The shorthand still searches without an author.
    assert_eq!(
        ids(fleet
            .search("borrow", Some("m/general"), 10)
            .await
            .expect("search")),
        [ron_general]
    );
}

/// One scripted answer: a status and an optional `Retry-After` value.
type Step = (u16, Option<&'static str>);

/// A local server that answers from a script of statuses and records what it saw.
#[derive(Clone, Default)]
struct Script {
    statuses: Arc<Mutex<Vec<Step>>>,
    seen_keys: Arc<Mutex<Vec<Option<String>>>>,
}

impl Script {
    fn hits(&self) -> usize {
        self.seen_keys.lock().expect("lock").len()
    }
}

async fn scripted(State(s): State<Script>, headers: HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.seen_keys.lock().expect("lock").push(
        headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    let next = {
        let mut st = s.statuses.lock().expect("lock");
        if st.is_empty() {
            (200, None)
        } else {
            st.remove(0)
        }
    };
    let status = StatusCode::from_u16(next.0).expect("status");
    let body = json!({"id": "p1", "author": {"id": "a", "name": "a"}, "content": "c",
                      "created_at": "2026-01-01T00:00:00Z", "results": [], "detail": "scripted"});
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(after) = next.1 {
        resp.headers_mut()
            .insert("retry-after", after.parse().expect("header"));
    }
    resp
}

async fn script_server(
    statuses: Vec<(u16, Option<&'static str>)>,
) -> (String, Script, CancellationToken) {
    let script = Script {
        statuses: Arc::new(Mutex::new(statuses)),
        ..Script::default()
    };
    let app = axum::Router::new()
        .route("/api/v1/search", get(scripted))
        .route("/api/v1/posts", post(scripted))
        .route(
            "/api/v1/notifications/poll",
            get(|| async { tokio::time::sleep(Duration::from_secs(60)).await }),
        )
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(t.cancelled_owned())
            .await
    });
    (format!("http://{addr}"), script, token)
}

fn fast(url: &str) -> HubClient {
    HubClient::new(url, Some(Secret::new("k")))
        .expect("client")
        .with_retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        })
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_idempotency_key() {
    let (url, script, token) = script_server(vec![(500, None)]).await;
    let post = fast(&url)
        .create_post(
            &id("a"),
            &NewPost {
                content: "c".into(),
                ..NewPost::default()
            },
            "key-1",
        )
        .await
        .expect("second attempt succeeds");
    assert_eq!(post.id, "p1");
    let keys = script.seen_keys.lock().expect("lock").clone();
    assert_eq!(
        keys,
        vec![Some("key-1".to_string()), Some("key-1".to_string())]
    );
    token.cancel();
}

#[tokio::test]
async fn retries_stop_after_max_attempts_and_honour_retry_after() {
    let (url, script, token) =
        script_server(vec![(503, None), (502, None), (500, None), (500, None)]).await;
    assert!(matches!(
        fast(&url).search("x", None, 1).await,
        Err(HubError::Server { status: 500 })
    ));
    assert_eq!(script.hits(), 3, "three attempts in total");
    token.cancel();

    let (url, script, token) = script_server(vec![(429, Some("1"))]).await;
    let started = std::time::Instant::now();
    fast(&url)
        .search("x", None, 1)
        .await
        .expect("after the 429");
    assert_eq!(script.hits(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 honoured, took {:?}",
        started.elapsed()
    );
    token.cancel();
}

#[tokio::test]
async fn a_404_or_422_is_not_retried() {
    let (url, script, token) = script_server(vec![(404, None), (422, None)]).await;
    let client = fast(&url);
    assert!(
        matches!(client.search("x", None, 1).await, Err(HubError::NotFound { what }) if what == "scripted")
    );
    assert_eq!(script.hits(), 1);
    assert!(matches!(
        client.search("x", None, 1).await,
        Err(HubError::Api { status: 422, .. })
    ));
    assert_eq!(script.hits(), 2);
    token.cancel();
}

#[tokio::test]
async fn a_401_403_or_409_is_not_retried() {
    let (url, script, token) = script_server(vec![(401, None), (403, None), (409, None)]).await;
    let client = fast(&url);
    assert!(matches!(
        client.search("x", None, 1).await,
        Err(HubError::Unauthorized)
    ));
    assert_eq!(script.hits(), 1, "a 401 is final");
    assert!(matches!(
        client.search("x", None, 1).await,
        Err(HubError::Forbidden)
    ));
    assert_eq!(script.hits(), 2, "a 403 is final");
    let new_post = NewPost {
        content: "c".into(),
        ..NewPost::default()
    };
    assert!(matches!(
        client.create_post(&id("a"), &new_post, "dup-1").await,
        Err(HubError::Conflict)
    ));
    assert_eq!(script.hits(), 3, "a 409 is final");
    // The script is used up: the same calls now succeed, each in one request.
    client.search("x", None, 1).await.expect("200");
    assert_eq!(script.hits(), 4);
    token.cancel();
}

/// What a raw loopback listener does with each connection it accepts.
#[derive(Clone, Copy)]
enum RawMode {
    /// Reads the request head, records it and never answers.
    Hang,
    /// Records the connection and closes it at once.
    Close,
}

/// A raw TCP listener on 127.0.0.1; `seen` holds one entry per request head read ([`RawMode::Hang`])
/// or per accepted connection ([`RawMode::Close`]).
struct RawServer {
    url: String,
    seen: tokio::sync::watch::Receiver<Vec<String>>,
    token: CancellationToken,
}

impl RawServer {
    async fn start(mode: RawMode) -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, seen) = tokio::sync::watch::channel(Vec::new());
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            loop {
                let mut stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => return,
                    },
                    () = t.cancelled() => return,
                };
                match mode {
                    RawMode::Close => {
                        tx.send_modify(|s| s.push(String::new()));
                        drop(stream);
                    }
                    RawMode::Hang => {
                        let (tx, t) = (tx.clone(), t.clone());
                        tokio::spawn(async move {
                            let mut head = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => head.extend_from_slice(&buf[..n]),
                                }
                            }
                            tx.send_modify(|s| s.push(String::from_utf8_lossy(&head).into_owned()));
                            // Never answer; keep the connection open until the test ends.
                            t.cancelled().await;
                            drop(stream);
                        });
                    }
                }
            }
        });
        Self { url, seen, token }
    }

    /// Waits (bounded) until `n` entries were recorded, then returns them all.
    async fn wait_for(&mut self, n: usize) -> Vec<String> {
        let waited =
            tokio::time::timeout(Duration::from_secs(5), self.seen.wait_for(|s| s.len() >= n))
                .await
                .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(seen)) => seen,
            _ => panic!("{n} requests never arrived: {:?}", *self.seen.borrow()),
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

#[tokio::test]
async fn a_timeout_is_retried_with_the_same_key_then_typed() {
    let mut server = RawServer::start(RawMode::Hang).await;
    let timeout = Duration::from_millis(200);
    let client = fast(&server.url).with_timeout(timeout);
    let started = std::time::Instant::now();
    let new_post = NewPost {
        content: "c".into(),
        ..NewPost::default()
    };
    match client.create_post(&id("a"), &new_post, "slow-1").await {
        Err(HubError::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= timeout * 3, "three full timeouts, took {took:?}");
    let heads = server.wait_for(3).await;
    assert_eq!(heads.len(), 3, "max_attempts requests, no more: {heads:?}");
    for head in &heads {
        assert!(head.starts_with("POST /api/v1/posts "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nidempotency-key: slow-1\r\n"),
            "every attempt reuses the key: {head}"
        );
    }

    // A GET times out and is retried the same way.
    let mut server = RawServer::start(RawMode::Hang).await;
    let client = fast(&server.url).with_timeout(timeout);
    assert!(matches!(client.health().await, Err(HubError::Timeout)));
    assert_eq!(server.wait_for(3).await.len(), 3);
}

#[tokio::test]
async fn connection_errors_are_retried_then_typed() {
    // Nothing listens: refused on every attempt.
    let port = botburrow_testkit::free_port();
    let client = fast(&format!("http://127.0.0.1:{port}"));
    assert!(matches!(
        client.health().await,
        Err(HubError::Connect { .. })
    ));

    // A listener that hangs up at once: the attempts can be counted.
    let mut server = RawServer::start(RawMode::Close).await;
    match fast(&server.url).health().await {
        Err(HubError::Connect { message }) => assert!(!message.is_empty()),
        other => panic!("expected Connect, got {other:?}"),
    }
    assert_eq!(
        server.wait_for(3).await.len(),
        3,
        "one connection per attempt, max_attempts in all"
    );
}

#[tokio::test]
async fn a_poll_that_outlives_its_client_timeout_means_no_work() {
    let (url, _script, token) = script_server(vec![]).await;
    let started = std::time::Instant::now();
    let out = fast(&url)
        .poll_notifications(Duration::ZERO, 10)
        .await
        .expect("timeout is not an error");
    assert_eq!(out, PollOutcome::Agents(vec![]));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(13),
        "HTTP timeout is timeout + 10 s: {took:?}"
    );
    token.cancel();
}
