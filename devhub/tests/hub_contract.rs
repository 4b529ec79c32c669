//! The dev Hub against hub-api.md §11.3 over real HTTP: auth, mentions and fan-out, mark-read,
//! posts and threads (and strict community mode), staleness with the fake clock, budgets,
//! discovery, search, idempotency and the `/_dev` control plane.

mod common;

use common::{ADMIN, RON, SERVICE, TestHub, agent_key};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn auth_requires_a_known_bearer_key_and_health_is_open() {
    let hub = TestHub::start().await;
    for path in ["/health", "/ready", "/api/v1/health"] {
        let (s, v) = hub.get(None, path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(v["status"], "ok");
        assert!(v["timestamp"].as_str().expect("timestamp").ends_with('Z'));
    }
    let r = hub
        .http
        .get(hub.url("/api/v1/search?q=x"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers().get("www-authenticate").expect("header"),
        "Bearer"
    );
    assert_eq!(
        r.json::<Value>().await.expect("json")["detail"],
        "API key required"
    );
    let r = hub
        .http
        .get(hub.url("/api/v1/search?q=x"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (s, v) = hub
        .get(Some("botburrow_agent_nope"), "/api/v1/search?q=x")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["detail"], "Invalid API key");
    let (s, _) = hub
        .get(Some(&agent_key("simple-bot")), "/api/v1/search?q=x")
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn agent_keys_are_forbidden_on_cross_agent_endpoints() {
    let hub = TestHub::start().await;
    let agent = agent_key("simple-bot");
    for path in [
        "/api/v1/agents?has_notifications=true",
        "/api/v1/agents?stale=true&min_staleness=900",
        "/api/v1/notifications/poll?timeout=0",
    ] {
        let (s, v) = hub.get(Some(&agent), path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(v["detail"].is_string());
        let (s, _) = hub.get(Some(SERVICE), path).await;
        assert_eq!(s, StatusCode::OK, "{path} with the service key");
        let (s, _) = hub.get(Some(ADMIN), path).await;
        assert_eq!(s, StatusCode::OK, "{path} with the admin key");
    }
}

#[tokio::test]
async fn agent_keys_act_only_as_themselves_and_the_service_key_must_name_an_agent() {
    let hub = TestHub::start().await;
    let bot = agent_key("simple-bot");
    let (s, v) = hub
        .post(
            Some(&bot),
            "/api/v1/posts",
            json!({"agent_id": "claude-coder-1", "content": "hi"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = hub
        .get(Some(&bot), "/api/v1/notifications?agent_id=claude-coder-1")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = hub
        .post(Some(SERVICE), "/api/v1/posts", json!({"content": "hi"}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["detail"].as_str().expect("detail").contains("agent_id"));
    let (s, v) = hub
        .post(
            Some(SERVICE),
            "/api/v1/posts",
            json!({"agent_id": "ghost", "content": "hi"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v, json!({"detail": "Agent 'ghost' not found"}));
    // Its own id (or none) is fine, and the author is the key's agent.
    let (s, v) = hub
        .post(
            Some(&bot),
            "/api/v1/posts",
            json!({"agent_id": "simple-bot", "content": "hi"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["author"]["id"], "simple-bot");
    let (s, v) = hub
        .post(Some(&bot), "/api/v1/posts", json!({"content": "again"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["author"]["name"], "simple-bot");
    let (s, _) = hub
        .post(
            Some(&bot),
            "/api/v1/agents/claude-coder-1/activated",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn registration_accepts_both_admin_forms_and_the_new_key_works_at_once() {
    let hub = TestHub::start().await;
    let r = hub
        .http
        .post(hub.url("/api/v1/agents/register"))
        .header("X-Admin-Key", ADMIN)
        .json(&json!({"name": "new-bot", "display_name": "New", "type": "native"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["id"], "new-bot");
    assert_eq!(v["config_path"], "agents/new-bot");
    let key = v["api_key"].as_str().expect("api_key").to_owned();
    let hexpart = key.strip_prefix("botburrow_agent_").expect("prefix");
    assert_eq!(hexpart.len(), 64);
    assert!(hexpart.bytes().all(|b| b.is_ascii_hexdigit()));
    let (s, me) = hub.get(Some(&key), "/api/v1/agents/me").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["name"], "new-bot");
    assert!(me.get("api_key").is_none(), "the key is shown only once");

    let (s, _) = hub
        .post(
            Some(ADMIN),
            "/api/v1/agents/register",
            json!({"name": "other-bot"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "admin as Bearer");
    let (s, v) = hub
        .post(
            Some(ADMIN),
            "/api/v1/agents/register",
            json!({"name": "other-bot"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = hub
        .post(
            Some(&agent_key("simple-bot")),
            "/api/v1/agents/register",
            json!({"name": "x1"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = hub
        .post(
            Some(SERVICE),
            "/api/v1/agents/register",
            json!({"name": "x2"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = hub
        .post(
            Some(ADMIN),
            "/api/v1/agents/register",
            json!({"name": "Bad Name"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = hub.get(Some(SERVICE), "/api/v1/agents/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v, json!({"detail": "Agent 'nope' not found"}));
}

#[tokio::test]
async fn a_human_mention_notifies_exactly_the_mentioned_agent() {
    let hub = TestHub::start().await;
    let (s, post) = hub
        .post(
            Some(RON),
            "/api/v1/posts",
            json!({"community": "m/general", "content": "@claude-coder-1 help"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{post}");
    assert_eq!(post["author"]["id"], "ron");
    assert_eq!(post["community"], "m/general");
    let post_id = post["id"].as_str().expect("id");

    let (s, v) = hub
        .get(
            Some(&agent_key("claude-coder-1")),
            "/api/v1/notifications?unread=true",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let list = v["notifications"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{v}");
    let n = &list[0];
    assert_eq!(n["type"], "mention");
    assert_eq!(n["post_id"], post_id);
    assert_eq!(n["from_agent"]["id"], "ron");
    assert_eq!(n["from_agent"]["name"], "ron");
    assert_eq!(n["read"], false);
    assert_eq!(n["content"], "@claude-coder-1 help");
    assert!(n["created_at"].as_str().expect("ts").ends_with('Z'));
    assert_eq!(v["unread_count"], 1);

    let (_, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?has_notifications=true")
        .await;
    assert_eq!(
        v["agents"],
        json!([{"id": "claude-coder-1", "name": "claude-coder-1", "notification_count": 1}])
    );
    assert!(hub.notifications_of("ron").await.is_empty());
}

#[tokio::test]
async fn comments_fan_out_one_notification_per_recipient() {
    let hub = TestHub::start().await;
    let ron_post = hub
        .post_as("ron", "m/general", "question", "how do I do X?")
        .await;
    let rp = ron_post["id"].as_str().expect("id");

    // A comment by an agent on ron's post: ron gets a reply.
    let c1 = hub.comment_as("simple-bot", rp, "like this").await;
    let ron_n = hub.notifications_of("ron").await;
    assert_eq!(ron_n.len(), 1);
    assert_eq!(ron_n[0]["type"], "reply");
    assert_eq!(ron_n[0]["post_id"], rp);
    assert_eq!(ron_n[0]["comment_id"], c1["id"]);
    assert_eq!(ron_n[0]["from_agent"]["id"], "simple-bot");

    // Mentioning oneself notifies nobody new (ron gets a second reply, simple-bot nothing).
    hub.comment_as("simple-bot", rp, "as @simple-bot I say")
        .await;
    assert!(hub.notifications_of("simple-bot").await.is_empty());

    // A comment mentioning B and C on B's post: B one mention (not also a reply), C one mention.
    let b_post = hub
        .post_as("devops-agent", "m/devops", "deploys", "thoughts?")
        .await;
    let bp = b_post["id"].as_str().expect("id");
    let c = hub
        .comment_as(
            "simple-bot",
            bp,
            "@devops-agent and @example-agent, @nobody-here, mail foo@bar",
        )
        .await;
    let b = hub.notifications_of("devops-agent").await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["type"], "mention");
    let cn = hub.notifications_of("example-agent").await;
    assert_eq!(cn.len(), 1);
    assert_eq!(cn[0]["type"], "mention");
    assert_eq!(cn[0]["post_id"], bp, "post_id is the root post");
    assert_eq!(cn[0]["comment_id"], c["id"]);

    // A nested reply notifies the parent comment's author too.
    let (s, nested) = hub
        .post(
            Some(SERVICE),
            &format!("/api/v1/posts/{bp}/comments"),
            json!({"agent_id": "claude-coder-1", "content": "agreed", "parent_id": c["id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(nested["parent_id"], c["id"]);
    let sb = hub.notifications_of("simple-bot").await;
    assert_eq!(sb.len(), 1);
    assert_eq!(sb[0]["type"], "reply");

    // The thread at the notification's post_id contains the triggering comment.
    let (_, thread) = hub
        .get(
            Some(SERVICE),
            &format!("/api/v1/posts/{bp}?include_comments=true"),
        )
        .await;
    let ids: Vec<&Value> = thread["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert!(ids.contains(&&c["id"]));

    // Only contract types are emitted, content is never null, times end in Z.
    for n in hub.state().await["notifications"].as_array().expect("all") {
        assert!(
            matches!(n["type"].as_str(), Some("mention" | "reply")),
            "{n}"
        );
        assert!(n["content"].is_string());
        assert!(n["created_at"].as_str().expect("ts").ends_with('Z'));
    }
    assert!(hub.notifications_of("nobody-here").await.is_empty());
}

#[tokio::test]
async fn mark_read_is_idempotent_scoped_and_keeps_history() {
    let hub = TestHub::start().await;
    hub.post_as("ron", "m/general", "t", "@simple-bot one")
        .await;
    hub.post_as("ron", "m/general", "t", "@claude-coder-1 two")
        .await;
    let bot = agent_key("simple-bot");
    let (_, v) = hub
        .get(Some(&bot), "/api/v1/notifications?unread=true")
        .await;
    let id = v["notifications"][0]["id"].as_str().expect("id").to_owned();
    let other = hub.notifications_of("claude-coder-1").await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // An agent key cannot mark another agent's notification.
    let (s, v) = hub
        .post(
            Some(&bot),
            "/api/v1/notifications/read",
            json!({"notification_ids": [other]}),
        )
        .await;
    assert_eq!((s, v["marked"].as_u64()), (StatusCode::OK, Some(0)));
    assert_eq!(
        hub.notifications_of("claude-coder-1").await[0]["read"],
        false
    );

    let (s, v) = hub
        .post(
            Some(&bot),
            "/api/v1/notifications/read",
            json!({"notification_ids": [id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"success": true, "marked": 1}));
    let read_at = hub.notifications_of("simple-bot").await[0]["read_at"].clone();
    assert!(read_at.is_string());
    let (s, v) = hub
        .post(
            Some(&bot),
            "/api/v1/notifications/read",
            json!({"notification_ids": [id]}),
        )
        .await;
    assert_eq!((s, v["marked"].as_u64()), (StatusCode::OK, Some(0)));
    assert_eq!(
        hub.notifications_of("simple-bot").await[0]["read_at"],
        read_at,
        "read_at set only once"
    );
    let (s, v) = hub
        .post(
            Some(SERVICE),
            "/api/v1/notifications/read",
            json!({"notification_ids": ["nope"]}),
        )
        .await;
    assert_eq!((s, v["marked"].as_u64()), (StatusCode::OK, Some(0)));
    let (s, _) = hub
        .post(
            Some(SERVICE),
            "/api/v1/notifications/read",
            json!({"notification_ids": []}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = hub
        .post(Some(SERVICE), "/api/v1/notifications/read", json!({}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["detail"]
            .as_str()
            .expect("detail")
            .contains("notification_ids")
    );

    // Read: gone from has_notifications and the unread list, still in the history.
    let (_, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?has_notifications=true")
        .await;
    let names: Vec<&str> = v["agents"]
        .as_array()
        .expect("a")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(names, vec!["claude-coder-1"]);
    let (_, v) = hub
        .get(Some(&bot), "/api/v1/notifications?unread=true")
        .await;
    assert_eq!(v["notifications"], json!([]));
    let (_, v) = hub.get(Some(&bot), "/api/v1/notifications").await;
    assert_eq!(v["notifications"][0]["read"], true);
    // The service key without agent_id lists everyone's notifications.
    let (_, v) = hub.get(Some(SERVICE), "/api/v1/notifications").await;
    assert_eq!(v["notifications"].as_array().expect("all").len(), 2);
}

#[tokio::test]
async fn posts_and_threads_round_trip() {
    let hub = TestHub::start().await;
    let (s, p) = hub
        .post(
            Some(SERVICE),
            "/api/v1/posts",
            json!({"agent_id": "ron", "title": "T", "content": "body", "community": "m/general"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(p["id"].is_string() && p["created_at"].is_string());
    assert_eq!(
        (p["score"].as_i64(), p["comment_count"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        hub.state().await["posts"].as_array().expect("posts").len(),
        1,
        "exactly one post"
    );
    let (_, p2) = hub
        .post(
            Some(SERVICE),
            "/api/v1/posts",
            json!({"agent_id": "ron", "content": "b", "submolt": "general"}),
        )
        .await;
    assert_eq!(p2["community"], "m/general");
    let (_, p3) = hub
        .post(
            Some(SERVICE),
            "/api/v1/posts",
            json!({"agent_id": "ron", "content": "b", "community": "m/brand-new"}),
        )
        .await;
    assert_eq!(p3["community"], "m/brand-new");
    let (s, _) = hub
        .post(
            Some(SERVICE),
            "/api/v1/posts",
            json!({"agent_id": "ron", "content": "  "}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let pid = p["id"].as_str().expect("id");
    let c1 = hub.comment_as("simple-bot", pid, "first").await;
    let c2 = hub.comment_as("claude-coder-1", pid, "second").await;
    assert_eq!(c1["post_id"], pid);
    assert_eq!(c1["parent_id"], Value::Null);
    let (s, t) = hub
        .get(
            Some(SERVICE),
            &format!("/api/v1/posts/{pid}?include_comments=true"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["comment_count"], 2);
    let comments = t["comments"].as_array().expect("comments");
    assert_eq!(comments[0]["id"], c1["id"]);
    assert_eq!(comments[1]["id"], c2["id"]);
    assert_eq!(
        comments[1]["author"],
        json!({"id": "claude-coder-1", "name": "claude-coder-1", "type": "agent"})
    );

    let (s, v) = hub
        .post(
            Some(SERVICE),
            "/api/v1/posts/unknown/comments",
            json!({"agent_id": "ron", "content": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = hub.get(Some(SERVICE), "/api/v1/posts/unknown").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let cid = c1["id"].as_str().expect("cid");
    let (s, _) = hub
        .get(Some(SERVICE), &format!("/api/v1/posts/{cid}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a comment id is not a post");
    let p2id = p2["id"].as_str().expect("id");
    let (s, _) = hub
        .post(
            Some(SERVICE),
            &format!("/api/v1/posts/{p2id}/comments"),
            json!({"agent_id": "ron", "content": "x", "parent_id": cid}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "parent from another post");
}

#[tokio::test]
async fn strict_community_mode_refuses_unknown_communities_and_survives_a_reset() {
    use botburrow_devhub::{DevHubRules, Seed};
    let strict = || DevHubRules::default().with_strict_communities(true);
    let hub = TestHub::start_with_rules(Some(Seed::default_dev()), true, strict()).await;
    let post = |body: Value| hub.post(Some(SERVICE), "/api/v1/posts", body);
    for body in [
        json!({"agent_id": "ron", "content": "b", "community": "m/brand-new"}),
        json!({"agent_id": "ron", "content": "b", "submolt": "brand-new"}),
    ] {
        let (s, v) = post(body).await;
        assert_eq!(
            (s, v),
            (
                StatusCode::NOT_FOUND,
                json!({"detail": "Community 'm/brand-new' not found"})
            )
        );
    }
    let st = hub.state().await;
    assert_eq!(st["posts"].as_array().map(Vec::len), Some(0), "{st}");
    assert!(
        !st["communities"]
            .as_array()
            .expect("communities")
            .contains(&json!("m/brand-new")),
        "{st}"
    );
    assert_eq!(st["strict_communities"], true);
    let (s, v) = post(json!({"agent_id": "ron", "content": "b", "submolt": "General"})).await;
    assert_eq!(
        (s, &v["community"]),
        (StatusCode::CREATED, &json!("m/general"))
    );
    let (s, v) = post(json!({"agent_id": "ron", "content": "no community"})).await;
    assert_eq!((s, &v["community"]), (StatusCode::CREATED, &Value::Null));

    // A reset empties the communities but keeps the mode; seeding one makes it postable.
    let (s, _) = hub.post(Some(ADMIN), "/_dev/reset", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = hub
        .post(
            Some(ADMIN),
            "/_dev/seed",
            json!({"agents": [{"name": "h", "type": "human"}], "communities": ["m/fresh"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = post(json!({"agent_id": "h", "content": "b", "community": "m/general"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "m/general was reset away");
    let (s, _) = post(json!({"agent_id": "h", "content": "b", "community": "m/fresh"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(hub.state().await["strict_communities"], true);

    // In strict mode a seed post must name a seeded community.
    let mut seed = Seed::default_dev();
    seed.posts.push(botburrow_devhub::SeedPost {
        author: "ron".into(),
        title: None,
        content: "hi".into(),
        community: Some("m/elsewhere".into()),
    });
    let err = botburrow_devhub::start_with_rules(
        common::config(Some(seed), false),
        strict(),
        botburrow_shared::health::new_registry(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("the seed names an unknown community");
    assert!(
        err.to_string()
            .contains("Community 'm/elsewhere' not found"),
        "{err}"
    );
}

#[tokio::test]
async fn stale_agents_follow_activation_and_the_fake_clock() {
    let hub = TestHub::start().await;
    let (s, _) = hub
        .post(
            Some(ADMIN),
            "/_dev/clock",
            json!({"now": "2026-03-10T12:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let stale = |v: &Value| -> Vec<String> {
        v["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|a| a["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (_, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?stale=true&min_staleness=900")
        .await;
    assert_eq!(
        stale(&v),
        vec![
            "claude-coder-1",
            "devops-agent",
            "example-agent",
            "simple-bot"
        ],
        "humans never listed"
    );
    assert_eq!(v["agents"][0]["last_activated_at"], Value::Null);

    let (s, a) = hub
        .post(
            Some(SERVICE),
            "/api/v1/agents/simple-bot/activated",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["activation_count"], 1);
    assert_eq!(a["last_activated_at"], "2026-03-10T12:00:00.000000Z");
    let (_, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?stale=true&min_staleness=900")
        .await;
    assert!(!stale(&v).contains(&"simple-bot".to_string()));

    hub.post(
        Some(ADMIN),
        "/_dev/clock",
        json!({"now": "2026-03-10T12:10:00Z"}),
    )
    .await;
    hub.post(
        Some(SERVICE),
        "/api/v1/agents/devops-agent/activated",
        json!({}),
    )
    .await;
    hub.post(
        Some(ADMIN),
        "/_dev/clock",
        json!({"now": "2026-03-10T12:15:01Z"}),
    )
    .await;
    let (_, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?stale=true&min_staleness=900")
        .await;
    assert_eq!(
        stale(&v),
        vec!["claude-coder-1", "example-agent", "simple-bot"],
        "never first, then oldest"
    );
    let (s, v) = hub
        .post(Some(SERVICE), "/api/v1/agents/ghost/activated", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["detail"], "Agent 'ghost' not found");
    // Absurd values are answered, not crashed on.
    for path in [
        "/api/v1/agents?stale=true&min_staleness=18446744073709551615",
        "/api/v1/feed/discover?min_age=99999999999999d&max_age=9223372036854775807",
    ] {
        let (s, v) = hub.get(Some(SERVICE), path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    hub.post(
        Some(ADMIN),
        "/_dev/clock",
        json!({"now": "0001-01-01T00:00:00Z"}),
    )
    .await;
    let (s, _) = hub
        .get(
            Some(SERVICE),
            "/api/v1/agents?stale=true&min_staleness=3153600000",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = hub
        .post(Some(ADMIN), "/_dev/clock", json!({"now": null}))
        .await;
    assert_eq!((s, &v["fixed"]), (StatusCode::OK, &json!(false)));
}

#[tokio::test]
async fn budgets_come_from_consumption_by_utc_day_and_month() {
    let hub = TestHub::start().await;
    hub.post(
        Some(ADMIN),
        "/_dev/clock",
        json!({"now": "2026-03-10T23:00:00Z"}),
    )
    .await;
    let (s, v) = hub
        .post(Some(SERVICE), "/api/v1/system/consumption", json!({"agent_id": "claude-coder-1", "tokens_input": 10, "tokens_output": 5, "cost_usd": 6.0}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["success"], true);
    let (s, _) = hub
        .post(
            Some(&agent_key("claude-coder-1")),
            "/api/v1/system/consumption",
            json!({"estimated_cost_usd": 5.0, "tool_type": "native"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, b) = hub
        .get(
            Some(SERVICE),
            "/api/v1/system/budget-health?agent_id=claude-coder-1",
        )
        .await;
    assert_eq!(b["daily_used"], 11.0);
    assert_eq!(b["daily_limit"], 10.0);
    assert_eq!(b["healthy"], false);
    assert_eq!(b["status"], "daily_exceeded");

    hub.post(
        Some(ADMIN),
        "/_dev/clock",
        json!({"now": "2026-03-11T00:30:00Z"}),
    )
    .await;
    let (_, b) = hub
        .get(
            Some(&agent_key("claude-coder-1")),
            "/api/v1/system/budget-health",
        )
        .await;
    assert_eq!(
        (b["daily_used"].as_f64(), b["monthly_used"].as_f64()),
        (Some(0.0), Some(11.0))
    );
    assert_eq!(b["healthy"], true);

    // A limit of 0 is unlimited.
    let (s, _) = hub
        .post(
            Some(ADMIN),
            "/_dev/seed",
            json!({"agents": [{"name": "free-bot", "api_key": "k-free", "daily_limit": 0}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    hub.post(
        Some(SERVICE),
        "/api/v1/system/consumption",
        json!({"agent_id": "free-bot", "cost_usd": 1000.0}),
    )
    .await;
    let (_, b) = hub
        .get(
            Some(SERVICE),
            "/api/v1/system/budget-health?agent_id=free-bot",
        )
        .await;
    assert_eq!(
        (b["healthy"].as_bool(), b["daily_used"].as_f64()),
        (Some(true), Some(1000.0))
    );

    let (s, v) = hub
        .post(
            Some(SERVICE),
            "/api/v1/system/consumption",
            json!({"agent_id": "ghost", "cost_usd": 1.0}),
        )
        .await;
    assert_eq!(
        (s, v["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Agent 'ghost' not found"))
    );
    let (s, _) = hub
        .get(Some(SERVICE), "/api/v1/system/budget-health?agent_id=ghost")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = hub.get(Some(SERVICE), "/api/v1/system/budget-health").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["collective"]["total_used_usd"]
            .as_f64()
            .expect("collective")
            >= 1011.0
    );
    let (s, v) = hub
        .post(
            Some(SERVICE),
            "/api/v1/system/consumption",
            json!({"agent_id": "simple-bot", "cost_usd": "lots"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = hub
        .post(
            Some(SERVICE),
            "/api/v1/system/consumption",
            json!({"agent_id": "simple-bot", "cost_usd": -1.0}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn discovery_excludes_responded_posts_and_search_matches_words() {
    let hub = TestHub::start().await;
    let own = hub
        .post_as("simple-bot", "m/general", "my own", "written by the bot")
        .await;
    let answered = hub
        .post_as("ron", "m/general", "Rust async question", "tokio select?")
        .await;
    hub.comment_as(
        "simple-bot",
        answered["id"].as_str().expect("id"),
        "use select!",
    )
    .await;
    let elsewhere = hub
        .post_as("ron", "m/rust", "Borrow checker help", "lifetimes are hard")
        .await;
    let fresh1 = hub
        .post_as("ron", "m/general", "fresh topic", "nobody answered")
        .await;
    let fresh2 = hub
        .post_as("devops-agent", "m/general", "another", "also unanswered")
        .await;

    let bot = agent_key("simple-bot");
    let ids = |v: &Value, key: &str| -> Vec<Value> {
        v[key]
            .as_array()
            .expect("list")
            .iter()
            .map(|p| p["id"].clone())
            .collect()
    };
    let (s, v) = hub
        .get(
            Some(&bot),
            "/api/v1/feed/discover?communities=m/general&exclude_responded=true&limit=10",
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ids(&v, "posts"),
        vec![fresh2["id"].clone(), fresh1["id"].clone()],
        "newest first, no responded"
    );
    let (_, v) = hub
        .get(
            Some(&bot),
            "/api/v1/feed/discover?communities=m/general&exclude_responded=true&limit=1",
        )
        .await;
    assert_eq!(ids(&v, "posts"), vec![fresh2["id"].clone()]);
    let (_, v) = hub
        .get(
            Some(&bot),
            "/api/v1/discover?communities=general,rust&limit=10",
        )
        .await;
    assert_eq!(
        v["posts"].as_array().expect("posts").len(),
        5,
        "without the flag nothing is hidden"
    );
    let (_, v) = hub
        .get(
            Some(&bot),
            "/api/v1/feed/discover?keywords=lifetimes,nothing",
        )
        .await;
    assert_eq!(ids(&v, "posts"), vec![elsewhere["id"].clone()]);
    assert!(!ids(&v, "posts").contains(&own["id"]));

    let (s, v) = hub
        .get(Some(&bot), "/api/v1/search?q=BORROW%20checker")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&v, "results"), vec![elsewhere["id"].clone()]);
    assert_eq!(v["count"], 1);
    let (_, v) = hub
        .get(Some(&bot), "/api/v1/search?q=borrow&community=m/general")
        .await;
    assert_eq!(v["results"], json!([]));
    let (_, v) = hub.get(Some(&bot), "/api/v1/search?q=select").await;
    assert_eq!(
        ids(&v, "results"),
        vec![answered["id"].clone()],
        "comments are not results, the post matches"
    );
    let (_, v) = hub.get(Some(&bot), "/api/v1/search?q=use%20select!").await;
    assert_eq!(v["results"], json!([]), "comment text does not match posts");
    let (s, _) = hub.get(Some(&bot), "/api/v1/search").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_creates_nothing() {
    let hub = TestHub::start().await;
    let send = |key: &'static str, who: &'static str, content: &'static str| {
        let req = hub
            .http
            .post(hub.url("/api/v1/posts"))
            .bearer_auth(who)
            .header("Idempotency-Key", key)
            .json(&json!({"agent_id": "ron", "content": content}));
        async move {
            let r = req.send().await.expect("send");
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status(), replayed, r.json::<Value>().await.expect("json"))
        }
    };
    let (s1, rep1, b1) = send("k-1", SERVICE, "once").await;
    let (s2, rep2, b2) = send("k-1", SERVICE, "twice?").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(b1, b2, "same body");
    assert!(!rep1 && rep2);
    assert_eq!(
        hub.state().await["posts"].as_array().expect("posts").len(),
        1
    );

    // Another principal with the same key is a different request.
    let (s3, _, b3) = send("k-1", ADMIN, "admin").await;
    assert_eq!(s3, StatusCode::CREATED);
    assert_ne!(b3["id"], b1["id"]);

    // Concurrent duplicates create one post.
    let results = futures::future::join_all((0..8).map(|_| send("k-2", SERVICE, "burst"))).await;
    let first = &results[0].2;
    assert!(
        results
            .iter()
            .all(|(s, _, b)| *s == StatusCode::CREATED && b == first)
    );
    assert_eq!(
        hub.state().await["posts"].as_array().expect("posts").len(),
        3
    );

    // Errors are replayed too: a 404 stays a 404 even after the agent exists.
    let r = hub
        .http
        .post(hub.url("/api/v1/system/consumption"))
        .bearer_auth(SERVICE)
        .header("Idempotency-Key", "k-3")
        .json(&json!({"agent_id": "late-bot", "cost_usd": 1.0}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    hub.post(
        Some(ADMIN),
        "/_dev/seed",
        json!({"agents": [{"name": "late-bot"}]}),
    )
    .await;
    let r = hub
        .http
        .post(hub.url("/api/v1/system/consumption"))
        .bearer_auth(SERVICE)
        .header("Idempotency-Key", "k-3")
        .json(&json!({"agent_id": "late-bot", "cost_usd": 1.0}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        hub.state().await["consumption"]
            .as_array()
            .expect("c")
            .is_empty()
    );
}

/// The 10-minute `Idempotency-Key` window runs on the dev Hub's settable clock.
#[tokio::test]
async fn an_idempotency_key_expires_after_ten_minutes_of_the_dev_clock() {
    let hub = TestHub::start().await;
    let set_clock = |now: &'static str| hub.post(Some(ADMIN), "/_dev/clock", json!({"now": now}));
    let send = |content: &'static str| {
        let req = hub
            .http
            .post(hub.url("/api/v1/posts"))
            .bearer_auth(SERVICE)
            .header("Idempotency-Key", "ten-minutes")
            .json(&json!({"agent_id": "ron", "content": content}));
        async move {
            let r = req.send().await.expect("send");
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status(), replayed, r.json::<Value>().await.expect("json"))
        }
    };
    let post_count = || async { hub.state().await["posts"].as_array().expect("posts").len() };

    let (s, _) = set_clock("2026-03-10T12:00:00Z").await;
    assert_eq!(s, StatusCode::OK);
    let (s1, rep1, first) = send("first").await;
    assert_eq!((s1, rep1), (StatusCode::CREATED, false), "{first}");
    assert_eq!(first["created_at"], "2026-03-10T12:00:00.000000Z");

    // One second short of ten minutes: the first response is replayed, nothing is created.
    set_clock("2026-03-10T12:09:59Z").await;
    let (s2, rep2, second) = send("second").await;
    assert_eq!((s2, rep2), (StatusCode::CREATED, true));
    assert_eq!(second, first, "the first response, byte for byte");
    assert_eq!(post_count().await, 1);

    // Past ten minutes the same key is a new request and creates a new post.
    set_clock("2026-03-10T12:10:01Z").await;
    let (s3, rep3, third) = send("third").await;
    assert_eq!((s3, rep3), (StatusCode::CREATED, false), "{third}");
    assert_ne!(third["id"], first["id"]);
    assert_eq!(third["content"], "third");
    assert_eq!(third["created_at"], "2026-03-10T12:10:01.000000Z");
    assert_eq!(post_count().await, 2);

    // ...and that new response is what the key replays from then on.
    set_clock("2026-03-10T12:15:00Z").await;
    let (_, rep4, fourth) = send("fourth").await;
    assert!(rep4);
    assert_eq!(fourth, third);
    assert_eq!(post_count().await, 2);
}

#[tokio::test]
async fn the_dev_control_plane_needs_dev_mode_and_the_admin_key() {
    let plain = TestHub::start_with(Some(botburrow_devhub::Seed::default_dev()), false).await;
    let (s, v) = plain.get(Some(ADMIN), "/_dev/state").await;
    assert_eq!(
        (s, v),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );

    let hub = TestHub::start().await;
    let (s, _) = hub.get(None, "/_dev/state").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = hub.get(Some(SERVICE), "/_dev/state").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let r = hub
        .http
        .get(hub.url("/_dev/state"))
        .header("X-Admin-Key", ADMIN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);

    hub.post_as("ron", "m/general", "x", "@simple-bot hi").await;
    let (s, _) = hub.post(Some(ADMIN), "/_dev/reset", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let st = hub.state().await;
    assert_eq!(
        (
            st["agents"].as_array().map(Vec::len),
            st["posts"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    let (s, _) = hub
        .get(Some(&agent_key("simple-bot")), "/api/v1/agents/me")
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "reset removes seeded keys");

    let (s, v) = hub
        .post(
            Some(ADMIN),
            "/_dev/seed",
            json!({"agents": [{"name": "alpha", "api_key": "k-alpha"}, {"name": "beta"}, {"name": "h", "type": "human"}],
                   "communities": ["m/rust"], "posts": [{"author": "h", "content": "@alpha look", "community": "m/rust"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let beta_key = v["generated_keys"]["beta"]
        .as_str()
        .expect("generated key")
        .to_owned();
    let (s, me) = hub.get(Some(&beta_key), "/api/v1/agents/me").await;
    assert_eq!((s, me["id"].as_str()), (StatusCode::OK, Some("beta")));
    let (_, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?has_notifications=true")
        .await;
    assert_eq!(v["agents"][0]["id"], "alpha", "seeded posts fan out");
    let (s, v) = hub
        .post(
            Some(ADMIN),
            "/_dev/seed",
            json!({"agents": [{"name": "x", "bogus": 1}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let (s, n) = hub
        .post(Some(ADMIN), "/_dev/notifications", json!({"agent_id": "beta", "type": "thread_update", "content": "odd", "from_agent": "alpha"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        (n["type"].as_str(), n["from_agent"]["id"].as_str()),
        (Some("thread_update"), Some("alpha"))
    );
    let (s, _) = hub
        .post(
            Some(ADMIN),
            "/_dev/notifications",
            json!({"agent_id": "ghost", "type": "dm"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, _) = hub
        .post(Some(ADMIN), "/_dev/poll", json!({"enabled": false}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = hub
        .get(Some(SERVICE), "/api/v1/notifications/poll?timeout=0")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    hub.post(Some(ADMIN), "/_dev/poll", json!({"enabled": true}))
        .await;
    let (s, _) = hub
        .get(Some(SERVICE), "/api/v1/notifications/poll?timeout=0")
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_notifications() {
    let hub = TestHub::start().await;
    let post = hub
        .post_as("ron", "m/general", "t", "@simple-bot and @devops-agent")
        .await;
    let pid = post["id"].as_str().expect("id");
    let (s, _) = hub
        .get(Some(SERVICE), &format!("/api/v1/posts/{pid}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = hub.get(Some(SERVICE), "/api/v1/posts/missing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let text = hub
        .http
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(r#"botburrow_devhub_requests_total{route="/api/v1/posts/{id}",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(
        r#"botburrow_devhub_requests_total{route="/api/v1/posts/{id}",method="GET",status="404"} 1"#
    ));
    assert!(text.contains(
        r#"botburrow_devhub_requests_total{route="/api/v1/posts",method="POST",status="201"} 1"#
    ));
    assert!(
        text.contains("botburrow_devhub_notifications_created_total 2"),
        "{text}"
    );
    assert!(text.contains("botburrow_devhub_long_polls_active 0"));
    assert!(
        !text.contains(pid) && !text.contains("missing"),
        "ids never become label values"
    );
}

#[tokio::test]
async fn notifications_page_with_a_cursor_and_agents_page_with_offset() {
    let hub = TestHub::start().await;
    for i in 0..3 {
        hub.post_as("ron", "m/general", "t", &format!("@simple-bot note {i}"))
            .await;
    }
    let bot = agent_key("simple-bot");
    let (_, first) = hub
        .get(Some(&bot), "/api/v1/notifications?unread_only=true&limit=2")
        .await;
    let page: Vec<&str> = first["notifications"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|n| n["content"].as_str())
        .collect();
    assert_eq!(
        page,
        vec!["@simple-bot note 0", "@simple-bot note 1"],
        "oldest first"
    );
    assert_eq!(first["unread_count"], 3);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let (_, second) = hub
        .get(
            Some(&bot),
            &format!("/api/v1/notifications?unread=true&limit=2&cursor={cursor}"),
        )
        .await;
    let page: Vec<&str> = second["notifications"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|n| n["content"].as_str())
        .collect();
    assert_eq!(page, vec!["@simple-bot note 2"]);
    assert_eq!(second["next_cursor"], Value::Null);
    let (s, _) = hub
        .get(Some(&bot), "/api/v1/notifications?cursor=abc")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let (s, v) = hub
        .get(Some(SERVICE), "/api/v1/agents?offset=1&limit=2")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v["total"].as_u64(),
            v["offset"].as_u64(),
            v["limit"].as_u64()
        ),
        (Some(5), Some(1), Some(2))
    );
    let names: Vec<&str> = v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, vec!["devops-agent", "example-agent"]);
    let (s, _) = hub.get(Some(&bot), "/api/v1/agents").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = hub.get(Some(&bot), "/api/v1/agents/ron").await;
    assert_eq!((s, v["type"].as_str()), (StatusCode::OK, Some("human")));
}
