//! The dev Hub's in-memory data and every rule that changes it: agents and their key hashes,
//! posts, comments, notifications with mention/reply fan-out (hub-api.md §5.5), consumption and
//! budgets, staleness, and the fake clock. Pure and synchronous: the HTTP layer holds the lock.

use crate::seed::{Seed, SeedAgent};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Why a store operation was refused; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// Unknown agent id or name (404).
    #[error("Agent '{0}' not found")]
    AgentNotFound(String),
    /// Unknown post id (404).
    #[error("Post '{0}' not found")]
    PostNotFound(String),
    /// A post to a community that does not exist, in strict community mode (404).
    #[error("Community 'm/{0}' not found")]
    CommunityNotFound(String),
    /// Input that is well-formed JSON but not acceptable (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid field (422).
    #[error("{0}")]
    Invalid(String),
    /// The name is taken (409).
    #[error("{0}")]
    Conflict(String),
}

/// A SHA-256 digest of an API key; keys themselves are never stored.
pub type KeyHash = [u8; 32];

/// Hashes a key the way hub-code does (SHA-256).
pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// RFC 3339 UTC with `Z`, which the fleet's parsers and the contract expect.
pub fn ts(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn ts_opt(dt: Option<DateTime<Utc>>) -> Value {
    dt.map(|d| Value::String(ts(d))).unwrap_or(Value::Null)
}

const PREVIEW_CHARS: usize = 200;

fn preview(text: &str) -> String {
    text.chars().take(PREVIEW_CHARS).collect()
}

/// `m/general`, `general` and ` M/General ` all name community `general`.
pub fn bare_community(raw: &str) -> String {
    let t = raw.trim();
    let t = t
        .strip_prefix("m/")
        .or_else(|| t.strip_prefix("M/"))
        .unwrap_or(t);
    t.trim().to_ascii_lowercase()
}

/// Whether a name is a valid agent name: lowercase alphanumerics, `-` and `_`, 1–63 chars.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// `@name` tokens in `text`, lowercased, in order, without duplicates. An `@` preceded by a word
/// character or another `@` (`foo@bar`, `@@x`) is not a mention.
pub fn mentions(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in text.match_indices('@') {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '@')
        {
            continue;
        }
        let name: String = text[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect::<String>()
            .to_ascii_lowercase();
        let name = name.trim_end_matches(['-', '_']).to_owned();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// One agent or human.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Equals the name.
    pub id: String,
    /// Mention name.
    pub name: String,
    /// Optional display name.
    pub display_name: Option<String>,
    /// Optional description.
    pub description: Option<String>,
    /// `native`, `claude-code`, ..., or `human` (excluded from scheduling lists).
    pub kind: String,
    /// Hash of the current key, if any.
    pub key_hash: Option<KeyHash>,
    /// USD per UTC day; 0 = unlimited.
    pub daily_limit: f64,
    /// USD per calendar month; 0 = unlimited.
    pub monthly_limit: f64,
    /// Registration/seed time.
    pub created_at: DateTime<Utc>,
    /// Last `POST /agents/{id}/activated`.
    pub last_activated_at: Option<DateTime<Utc>>,
    /// Last write through the API.
    pub last_active_at: Option<DateTime<Utc>>,
    /// Number of activations reported.
    pub activation_count: u64,
    /// Unread notifications (kept in step with `notifications`).
    pub unread: u32,
    /// Indices into `Store::notifications`, oldest first.
    notifications: Vec<usize>,
    /// Indices into `Store::consumption`.
    consumption: Vec<usize>,
    config_source: Option<String>,
    config_path: String,
    config_branch: String,
}

impl Agent {
    /// Humans receive replies but are never scheduled.
    pub fn is_human(&self) -> bool {
        self.kind == "human"
    }

    fn reference(&self) -> Value {
        json!({"id": self.id, "name": self.name, "type": self.kind})
    }

    /// The agent list item of hub-api.md §11.2 item 10.
    pub fn summary_json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "display_name": self.display_name, "type": self.kind,
            "description": self.description,
            "notification_count": self.unread, "last_activated_at": ts_opt(self.last_activated_at),
            "last_active_at": ts_opt(self.last_active_at), "activation_count": self.activation_count,
            "created_at": ts(self.created_at),
        })
    }

    fn full_json(&self) -> Value {
        let mut v = self.summary_json();
        v["config_source"] = json!(self.config_source);
        v["config_path"] = json!(self.config_path);
        v["config_branch"] = json!(self.config_branch);
        v["daily_limit"] = json!(self.daily_limit);
        v["monthly_limit"] = json!(self.monthly_limit);
        v["karma"] = json!(0);
        v["is_admin"] = json!(false);
        v["updated_at"] = json!(ts(self.created_at));
        v
    }
}

struct PostRec {
    id: String,
    author: String,
    title: Option<String>,
    content: String,
    community: Option<String>,
    created_at: DateTime<Utc>,
    comments: Vec<usize>,
    participants: HashSet<String>,
    haystack: String,
}

struct CommentRec {
    id: String,
    post_id: String,
    parent_id: Option<String>,
    author: String,
    content: String,
    created_at: DateTime<Utc>,
}

struct NotificationRec {
    id: String,
    recipient: String,
    kind: String,
    post_id: Option<String>,
    comment_id: Option<String>,
    from: Option<String>,
    content: String,
    read: bool,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

struct ConsumptionRec {
    id: String,
    agent_id: String,
    cost_usd: f64,
    created_at: DateTime<Utc>,
    raw: Value,
}

/// A new post as the HTTP layer hands it over.
pub struct PostInput {
    /// Resolved author id.
    pub author: String,
    /// Optional title.
    pub title: Option<String>,
    /// Body.
    pub content: String,
    /// Raw community (`m/x` or `x`).
    pub community: Option<String>,
}

/// One consumption report.
pub struct ConsumptionInput {
    /// Resolved agent id.
    pub agent_id: String,
    /// Cost in USD.
    pub cost_usd: f64,
    /// The rest of the body, kept for `/_dev/state`.
    pub raw: Value,
}

/// Filters of `GET /feed/discover`.
#[derive(Default)]
pub struct DiscoverFilter {
    /// Bare community names; empty = all.
    pub communities: Vec<String>,
    /// Lowercased keywords; any must match; empty = all.
    pub keywords: Vec<String>,
    /// Hide posts this agent wrote or commented on.
    pub exclude_responded_by: Option<String>,
    /// Author ids to hide.
    pub exclude_authors: Vec<String>,
    /// Only posts at least this old.
    pub min_age: Option<chrono::Duration>,
    /// Only posts at most this old.
    pub max_age: Option<chrono::Duration>,
    /// At most this many.
    pub limit: usize,
}

/// All dev Hub data. Never cloned wholesale: handlers read what they need under the lock.
#[derive(Default)]
pub struct Store {
    agents: BTreeMap<String, Agent>,
    keys: HashMap<KeyHash, String>,
    posts: Vec<PostRec>,
    post_index: HashMap<String, usize>,
    comments: Vec<CommentRec>,
    comment_index: HashMap<String, usize>,
    notifications: Vec<NotificationRec>,
    notification_index: HashMap<String, usize>,
    consumption: Vec<ConsumptionRec>,
    communities: BTreeSet<String>,
    strict_communities: bool,
    clock: Option<DateTime<Utc>>,
    next_id: u64,
}

impl Store {
    /// The current time: the fake clock if set, else the real one.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(Utc::now)
    }

    /// Fixes the clock at `now`, or returns to the real clock with `None`.
    pub fn set_clock(&mut self, now: Option<DateTime<Utc>>) {
        self.clock = now;
    }

    /// Whether the fake clock is in use.
    pub fn clock_is_fixed(&self) -> bool {
        self.clock.is_some()
    }

    /// Strict community mode (hub-api.md §11.2): a post to an unknown community is refused
    /// with [`StoreError::CommunityNotFound`] instead of creating the community.
    pub fn set_strict_communities(&mut self, strict: bool) {
        self.strict_communities = strict;
    }

    /// Whether strict community mode is on.
    pub fn strict_communities(&self) -> bool {
        self.strict_communities
    }

    fn next(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// Adds or updates the seed's agents and communities, then creates its posts. Returns keys
    /// generated for agents that had none (shown once) and how many notifications were created.
    pub fn apply_seed(
        &mut self,
        seed: &Seed,
    ) -> Result<(BTreeMap<String, String>, usize), StoreError> {
        let mut generated = BTreeMap::new();
        for a in &seed.agents {
            if !valid_name(&a.name) {
                return Err(StoreError::Invalid(format!(
                    "invalid agent name '{}': use lowercase letters, digits and hyphens",
                    a.name
                )));
            }
        }
        for a in &seed.agents {
            let key = match &a.api_key {
                Some(k) => k.clone(),
                None => {
                    let k = new_key(&a.kind);
                    generated.insert(a.name.clone(), k.clone());
                    k
                }
            };
            self.upsert_seed_agent(a, &key);
        }
        for c in &seed.communities {
            let bare = bare_community(c);
            if !bare.is_empty() {
                self.communities.insert(bare);
            }
        }
        let mut created = 0;
        for p in &seed.posts {
            let author = self.resolve_agent(&p.author)?.id.clone();
            let (_, n) = self.create_post(PostInput {
                author,
                title: p.title.clone(),
                content: p.content.clone(),
                community: p.community.clone(),
            })?;
            created += n;
        }
        Ok((generated, created))
    }

    fn upsert_seed_agent(&mut self, a: &SeedAgent, key: &str) {
        let now = self.now();
        let hash = hash_key(key);
        if let Some(old) = self.agents.get(&a.name).and_then(|x| x.key_hash) {
            self.keys.remove(&old);
        }
        self.keys.insert(hash, a.name.clone());
        let entry = self
            .agents
            .entry(a.name.clone())
            .or_insert_with(|| new_agent(&a.name, &a.kind, now));
        entry.kind = a.kind.clone();
        entry.key_hash = Some(hash);
        entry.daily_limit = a.daily_limit.unwrap_or(0.0).max(0.0);
        entry.monthly_limit = a.monthly_limit.unwrap_or(0.0).max(0.0);
        entry.display_name = a
            .display_name
            .clone()
            .or_else(|| entry.display_name.clone());
        entry.description = a.description.clone().or_else(|| entry.description.clone());
    }

    /// Registers an agent at run time; returns its record JSON with the key (shown once).
    pub fn register(&mut self, body: &Value) -> Result<Value, StoreError> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned();
        if name.is_empty() {
            return Err(StoreError::Invalid("name is required".into()));
        }
        if !valid_name(&name) {
            return Err(StoreError::Invalid(format!(
                "invalid agent name '{name}': use lowercase letters, digits and hyphens"
            )));
        }
        if self.agents.contains_key(&name) {
            return Err(StoreError::Conflict(format!(
                "Agent '{name}' already exists"
            )));
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind = text("type").unwrap_or_else(|| "native".into());
        let key = new_key(&kind);
        let hash = hash_key(&key);
        let mut agent = new_agent(&name, &kind, self.now());
        agent.display_name = text("display_name");
        agent.description = text("description");
        agent.config_source = text("config_source");
        agent.config_path = text("config_path")
            .unwrap_or_else(|| "agents/%s".into())
            .replace("%s", &name);
        agent.config_branch = text("config_branch").unwrap_or_else(|| "main".into());
        agent.key_hash = Some(hash);
        self.keys.insert(hash, name.clone());
        let mut out = agent.full_json();
        out["api_key"] = json!(key);
        out["api_key_expires_at"] = Value::Null;
        self.agents.insert(name, agent);
        Ok(out)
    }

    /// The agent a key belongs to.
    pub fn agent_for_key(&self, hash: &KeyHash) -> Option<&str> {
        self.keys.get(hash).map(String::as_str)
    }

    /// Looks an agent up by id, then by name (they are equal here, but ids are opaque).
    pub fn resolve_agent(&self, id_or_name: &str) -> Result<&Agent, StoreError> {
        self.agents
            .get(id_or_name)
            .or_else(|| self.agents.values().find(|a| a.name == id_or_name))
            .ok_or_else(|| StoreError::AgentNotFound(id_or_name.to_owned()))
    }

    /// `GET /agents/{id}` and `/agents/me`.
    pub fn agent_json(&self, id: &str) -> Result<Value, StoreError> {
        Ok(self.resolve_agent(id)?.full_json())
    }

    /// Non-human agents with unread notifications, most first, then by name; at most `limit`.
    pub fn agents_with_unread(&self, limit: usize) -> Vec<Value> {
        let mut v: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| !a.is_human() && a.unread > 0)
            .collect();
        v.sort_by(|a, b| b.unread.cmp(&a.unread).then_with(|| a.name.cmp(&b.name)));
        v.into_iter()
            .take(limit)
            .map(|a| json!({"id": a.id, "name": a.name, "notification_count": a.unread}))
            .collect()
    }

    /// Non-human agents not activated for `min_staleness`: never-activated first, then oldest.
    pub fn stale_agents(&self, min_staleness: chrono::Duration, limit: usize) -> Vec<Value> {
        let cutoff = self
            .now()
            .checked_sub_signed(min_staleness)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut v: Vec<&Agent> = self
            .agents
            .values()
            .filter(|a| !a.is_human() && a.last_activated_at.is_none_or(|t| t <= cutoff))
            .collect();
        v.sort_by(|a, b| {
            a.last_activated_at
                .cmp(&b.last_activated_at)
                .then_with(|| a.name.cmp(&b.name))
        });
        v.into_iter().take(limit).map(Agent::summary_json).collect()
    }

    /// All agents, paged.
    pub fn list_agents(&self, offset: usize, limit: usize) -> (Vec<Value>, usize) {
        (
            self.agents
                .values()
                .skip(offset)
                .take(limit)
                .map(Agent::summary_json)
                .collect(),
            self.agents.len(),
        )
    }

    /// Records an activation; the agent leaves the stale list for `min_staleness`.
    pub fn activated(&mut self, id: &str) -> Result<Value, StoreError> {
        let now = self.now();
        let key = self.resolve_agent(id)?.id.clone();
        let a = self
            .agents
            .get_mut(&key)
            .ok_or_else(|| StoreError::AgentNotFound(id.to_owned()))?;
        a.last_activated_at = Some(now);
        a.activation_count += 1;
        Ok(
            json!({"success": true, "agent_id": a.id, "last_activated_at": ts(now),
                  "activation_count": a.activation_count}),
        )
    }

    fn touch(&mut self, agent: &str) {
        let now = self.now();
        if let Some(a) = self.agents.get_mut(agent) {
            a.last_active_at = Some(now);
        }
    }

    fn notify(
        &mut self,
        recipient: &str,
        kind: &str,
        post_id: Option<String>,
        comment_id: Option<String>,
        from: Option<String>,
        content: &str,
    ) -> usize {
        let id = self.next("notif");
        let idx = self.notifications.len();
        self.notifications.push(NotificationRec {
            id: id.clone(),
            recipient: recipient.to_owned(),
            kind: kind.to_owned(),
            post_id,
            comment_id,
            from,
            content: preview(content),
            read: false,
            read_at: None,
            created_at: self.now(),
        });
        self.notification_index.insert(id, idx);
        if let Some(a) = self.agents.get_mut(recipient) {
            a.unread += 1;
            a.notifications.push(idx);
        }
        idx
    }

    /// Mentioned, existing agents other than `author`.
    fn mentioned(&self, texts: &[&str], author: &str) -> Vec<String> {
        let mut out = Vec::new();
        for t in texts {
            for name in mentions(t) {
                if name != author && self.agents.contains_key(&name) && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Creates a post and its mention notifications; returns the post JSON and how many
    /// notifications were created.
    pub fn create_post(&mut self, input: PostInput) -> Result<(Value, usize), StoreError> {
        if input.content.trim().is_empty() {
            return Err(StoreError::Invalid(
                "content is required and must not be empty".into(),
            ));
        }
        if !self.agents.contains_key(&input.author) {
            return Err(StoreError::AgentNotFound(input.author));
        }
        let community = match input.community.as_deref().map(bare_community) {
            Some(c) if c.is_empty() => {
                return Err(StoreError::Invalid("community must not be empty".into()));
            }
            Some(c) if self.strict_communities && !self.communities.contains(&c) => {
                return Err(StoreError::CommunityNotFound(c));
            }
            Some(c) => {
                self.communities.insert(c.clone());
                Some(c)
            }
            None => None,
        };
        let id = self.next("post");
        let title = input.title.filter(|t| !t.trim().is_empty());
        let haystack =
            format!("{} {}", title.as_deref().unwrap_or(""), input.content).to_lowercase();
        let targets = self.mentioned(
            &[title.as_deref().unwrap_or(""), &input.content],
            &input.author,
        );
        let rec = PostRec {
            id: id.clone(),
            author: input.author.clone(),
            title,
            content: input.content,
            community,
            created_at: self.now(),
            comments: Vec::new(),
            participants: HashSet::from([input.author.clone()]),
            haystack,
        };
        let idx = self.posts.len();
        self.posts.push(rec);
        self.post_index.insert(id.clone(), idx);
        self.touch(&input.author);
        let content = self.posts[idx].content.clone();
        for t in &targets {
            self.notify(
                t,
                "mention",
                Some(id.clone()),
                None,
                Some(input.author.clone()),
                &content,
            );
        }
        Ok((self.post_json(idx), targets.len()))
    }

    /// Creates a comment and its fan-out (§5.5): one notification per recipient, `mention`
    /// preferred over `reply`, never to the commenter.
    pub fn create_comment(
        &mut self,
        post_id: &str,
        author: &str,
        content: &str,
        parent_id: Option<&str>,
    ) -> Result<(Value, usize), StoreError> {
        let pidx = *self
            .post_index
            .get(post_id)
            .ok_or_else(|| StoreError::PostNotFound(post_id.to_owned()))?;
        if content.trim().is_empty() {
            return Err(StoreError::Invalid(
                "content is required and must not be empty".into(),
            ));
        }
        if !self.agents.contains_key(author) {
            return Err(StoreError::AgentNotFound(author.to_owned()));
        }
        let parent = match parent_id.filter(|p| !p.is_empty() && *p != post_id) {
            None => None,
            Some(p) => match self.comment_index.get(p) {
                Some(&ci) if self.comments[ci].post_id == post_id => Some(ci),
                _ => {
                    return Err(StoreError::BadRequest(format!(
                        "parent_id '{p}' is not a comment on post '{post_id}'"
                    )));
                }
            },
        };
        let id = self.next("comment");
        let cidx = self.comments.len();
        self.comments.push(CommentRec {
            id: id.clone(),
            post_id: post_id.to_owned(),
            parent_id: parent.map(|ci| self.comments[ci].id.clone()),
            author: author.to_owned(),
            content: content.to_owned(),
            created_at: self.now(),
        });
        self.comment_index.insert(id.clone(), cidx);
        let post = &mut self.posts[pidx];
        post.comments.push(cidx);
        post.participants.insert(author.to_owned());
        let post_author = post.author.clone();
        self.touch(author);

        let mut recipients: Vec<(String, &'static str)> = self
            .mentioned(&[content], author)
            .into_iter()
            .map(|n| (n, "mention"))
            .collect();
        let mut reply_to = vec![post_author];
        if let Some(ci) = parent {
            reply_to.push(self.comments[ci].author.clone());
        }
        for r in reply_to {
            if r != author && !recipients.iter().any(|(n, _)| *n == r) {
                recipients.push((r, "reply"));
            }
        }
        for (r, kind) in &recipients {
            self.notify(
                r,
                kind,
                Some(post_id.to_owned()),
                Some(id.clone()),
                Some(author.to_owned()),
                content,
            );
        }
        Ok((self.comment_json(cidx), recipients.len()))
    }

    fn author_ref(&self, id: &str) -> Value {
        self.agents
            .get(id)
            .map(Agent::reference)
            .unwrap_or_else(|| json!({"id": id, "name": id, "type": null}))
    }

    fn post_json(&self, idx: usize) -> Value {
        let p = &self.posts[idx];
        json!({
            "id": p.id, "author": self.author_ref(&p.author), "title": p.title, "content": p.content,
            "community": p.community.as_ref().map(|c| format!("m/{c}")), "parent_id": null,
            "created_at": ts(p.created_at), "updated_at": null, "score": 0,
            "comment_count": p.comments.len(),
        })
    }

    fn comment_json(&self, idx: usize) -> Value {
        let c = &self.comments[idx];
        json!({
            "id": c.id, "post_id": c.post_id, "parent_id": c.parent_id, "author": self.author_ref(&c.author),
            "content": c.content, "created_at": ts(c.created_at), "score": 0,
        })
    }

    /// A post with its comments in creation order.
    pub fn thread(&self, post_id: &str) -> Result<Value, StoreError> {
        let idx = *self
            .post_index
            .get(post_id)
            .ok_or_else(|| StoreError::PostNotFound(post_id.to_owned()))?;
        let mut v = self.post_json(idx);
        v["comments"] = Value::Array(
            self.posts[idx]
                .comments
                .iter()
                .map(|&c| self.comment_json(c))
                .collect(),
        );
        Ok(v)
    }

    /// Case-insensitive AND search over title and content, newest first.
    pub fn search(
        &self,
        q: &str,
        community: Option<&str>,
        author: Option<&str>,
        limit: usize,
    ) -> Vec<Value> {
        let tokens: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
        let community = community.map(bare_community);
        let author = author.map(|a| {
            self.resolve_agent(a)
                .map(|x| x.id.clone())
                .unwrap_or_else(|_| a.to_owned())
        });
        self.posts
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, p)| {
                community
                    .as_ref()
                    .is_none_or(|c| p.community.as_ref() == Some(c))
            })
            .filter(|(_, p)| author.as_ref().is_none_or(|a| &p.author == a))
            .filter(|(_, p)| tokens.iter().all(|t| p.haystack.contains(t.as_str())))
            .take(limit)
            .map(|(i, _)| self.post_json(i))
            .collect()
    }

    /// The discovery feed, newest first.
    pub fn discover(&self, f: &DiscoverFilter) -> Vec<Value> {
        let now = self.now();
        self.posts
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, p)| {
                f.communities.is_empty()
                    || p.community
                        .as_ref()
                        .is_some_and(|c| f.communities.contains(c))
            })
            .filter(|(_, p)| {
                f.keywords.is_empty() || f.keywords.iter().any(|k| p.haystack.contains(k.as_str()))
            })
            .filter(|(_, p)| {
                f.exclude_responded_by
                    .as_ref()
                    .is_none_or(|a| !p.participants.contains(a))
            })
            .filter(|(_, p)| !f.exclude_authors.contains(&p.author))
            .filter(|(_, p)| f.min_age.is_none_or(|m| now - p.created_at >= m))
            .filter(|(_, p)| f.max_age.is_none_or(|m| now - p.created_at <= m))
            .take(f.limit)
            .map(|(i, _)| self.post_json(i))
            .collect()
    }

    fn notification_json(&self, n: &NotificationRec) -> Value {
        json!({
            "id": n.id, "type": n.kind, "post_id": n.post_id, "comment_id": n.comment_id,
            "from_agent": n.from.as_deref().map(|f| self.author_ref(f)),
            "content": n.content, "read": n.read, "created_at": ts(n.created_at),
        })
    }

    /// An inbox page, oldest first. `agent = None` lists every agent's notifications.
    /// The cursor is the index after which to continue.
    pub fn notifications(
        &self,
        agent: Option<&str>,
        unread_only: bool,
        limit: usize,
        after: Option<usize>,
    ) -> Result<Value, StoreError> {
        let (indices, unread): (Box<dyn Iterator<Item = usize> + '_>, u64) = match agent {
            Some(a) => {
                let a = self.resolve_agent(a)?;
                (
                    Box::new(a.notifications.iter().copied()),
                    u64::from(a.unread),
                )
            }
            None => (
                Box::new(0..self.notifications.len()),
                self.agents.values().map(|a| u64::from(a.unread)).sum(),
            ),
        };
        let mut page = Vec::new();
        let mut last = None;
        let mut more = false;
        for i in indices.filter(|i| after.is_none_or(|c| *i > c)) {
            let n = &self.notifications[i];
            if unread_only && n.read {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(self.notification_json(n));
            last = Some(i);
        }
        let next_cursor = if more {
            last.map(|l| l.to_string())
        } else {
            None
        };
        Ok(json!({"notifications": page, "unread_count": unread, "next_cursor": next_cursor}))
    }

    /// Marks ids read; unknown, already-read and (when `only_for` is set) other agents' ids are
    /// ignored. Returns how many changed.
    pub fn mark_read(&mut self, ids: &[String], only_for: Option<&str>) -> usize {
        let now = self.now();
        let mut marked = 0;
        for id in ids {
            let Some(&idx) = self.notification_index.get(id) else {
                continue;
            };
            let n = &mut self.notifications[idx];
            if n.read || only_for.is_some_and(|a| a != n.recipient) {
                continue;
            }
            n.read = true;
            n.read_at = Some(now);
            marked += 1;
            if let Some(a) = self.agents.get_mut(&n.recipient) {
                a.unread = a.unread.saturating_sub(1);
            }
        }
        marked
    }

    /// Injects a raw notification (any type string), for negative tests.
    pub fn inject_notification(
        &mut self,
        agent: &str,
        kind: &str,
        content: &str,
        from: Option<&str>,
        post_id: Option<String>,
        comment_id: Option<String>,
    ) -> Result<Value, StoreError> {
        let recipient = self.resolve_agent(agent)?.id.clone();
        let from = match from {
            Some(f) => Some(self.resolve_agent(f)?.id.clone()),
            None => None,
        };
        let idx = self.notify(&recipient, kind, post_id, comment_id, from, content);
        Ok(self.notification_json(&self.notifications[idx]))
    }

    /// Records spend; budgets are computed from these.
    pub fn record_consumption(&mut self, input: ConsumptionInput) -> Result<Value, StoreError> {
        if !input.cost_usd.is_finite() || input.cost_usd < 0.0 {
            return Err(StoreError::Invalid(
                "cost_usd must be a non-negative number".into(),
            ));
        }
        let agent = self.resolve_agent(&input.agent_id)?.id.clone();
        let id = self.next("consumption");
        let idx = self.consumption.len();
        self.consumption.push(ConsumptionRec {
            id: id.clone(),
            agent_id: agent.clone(),
            cost_usd: input.cost_usd,
            created_at: self.now(),
            raw: input.raw,
        });
        if let Some(a) = self.agents.get_mut(&agent) {
            a.consumption.push(idx);
        }
        Ok(json!({"success": true, "id": id}))
    }

    /// Spend today (UTC) and this month against the agent's limits.
    pub fn budget_health(&self, agent: &str) -> Result<Value, StoreError> {
        let a = self.resolve_agent(agent)?;
        let now = self.now();
        let (mut daily, mut monthly) = (0.0, 0.0);
        for &i in &a.consumption {
            let c = &self.consumption[i];
            if c.created_at.year() == now.year() && c.created_at.month() == now.month() {
                monthly += c.cost_usd;
                if c.created_at.day() == now.day() {
                    daily += c.cost_usd;
                }
            }
        }
        let daily_out = a.daily_limit > 0.0 && daily >= a.daily_limit;
        let monthly_out = a.monthly_limit > 0.0 && monthly >= a.monthly_limit;
        let status = if daily_out {
            "daily_exceeded"
        } else if monthly_out {
            "monthly_exceeded"
        } else {
            "healthy"
        };
        Ok(json!({
            "agent_id": a.id, "daily_limit": a.daily_limit, "daily_used": round(daily),
            "monthly_limit": a.monthly_limit, "monthly_used": round(monthly),
            "healthy": !daily_out && !monthly_out, "status": status,
        }))
    }

    /// The ADR-022 fleet-wide shape, for callers that give no agent.
    pub fn collective_budget(&self) -> Value {
        let now = self.now();
        let used: f64 = self
            .consumption
            .iter()
            .filter(|c| c.created_at.year() == now.year() && c.created_at.month() == now.month())
            .map(|c| c.cost_usd)
            .sum();
        let total: f64 = self.agents.values().map(|a| a.monthly_limit).sum();
        let health = if total > 0.0 && used >= total {
            "critical"
        } else {
            "healthy"
        };
        json!({"tools": {}, "collective": {"total_budget_usd": total, "total_used_usd": round(used),
               "overall_health": health}})
    }

    /// Everything, for `GET /_dev/state` (no keys or hashes).
    pub fn dump(&self) -> Value {
        json!({
            "now": ts(self.now()),
            "clock_fixed": self.clock.is_some(),
            "strict_communities": self.strict_communities,
            "agents": self.agents.values().map(Agent::full_json).collect::<Vec<_>>(),
            "communities": self.communities.iter().map(|c| format!("m/{c}")).collect::<Vec<_>>(),
            "posts": (0..self.posts.len()).map(|i| self.post_json(i)).collect::<Vec<_>>(),
            "comments": (0..self.comments.len()).map(|i| self.comment_json(i)).collect::<Vec<_>>(),
            "notifications": self.notifications.iter().map(|n| {
                let mut v = self.notification_json(n);
                v["recipient"] = json!(n.recipient);
                v["read_at"] = ts_opt(n.read_at);
                v
            }).collect::<Vec<_>>(),
            "consumption": self.consumption.iter().map(|c| {
                let mut v = c.raw.clone();
                if !v.is_object() { v = json!({}); }
                v["id"] = json!(c.id);
                v["agent_id"] = json!(c.agent_id);
                v["cost_usd"] = json!(c.cost_usd);
                v["created_at"] = json!(ts(c.created_at));
                v
            }).collect::<Vec<_>>(),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn new_agent(name: &str, kind: &str, now: DateTime<Utc>) -> Agent {
    Agent {
        id: name.to_owned(),
        name: name.to_owned(),
        display_name: None,
        description: None,
        kind: kind.to_owned(),
        key_hash: None,
        daily_limit: 0.0,
        monthly_limit: 0.0,
        created_at: now,
        last_activated_at: None,
        last_active_at: None,
        activation_count: 0,
        unread: 0,
        notifications: Vec::new(),
        consumption: Vec::new(),
        config_source: None,
        config_path: format!("agents/{name}"),
        config_branch: "main".into(),
    }
}

/// `botburrow_agent_` (or `botburrow_human_`) + 64 hex characters, as hub-code generates.
fn new_key(kind: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    let prefix = if kind == "human" {
        "botburrow_human_"
    } else {
        "botburrow_agent_"
    };
    format!("{prefix}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_parsing_follows_word_boundaries() {
        assert_eq!(
            mentions("@claude-coder-1 help, @Simple-Bot."),
            vec!["claude-coder-1", "simple-bot"]
        );
        assert!(mentions("mail foo@bar or @@x").is_empty());
        assert_eq!(mentions("(@a) @a @b-"), vec!["a", "b"]);
    }

    #[test]
    fn communities_and_names_normalize() {
        assert_eq!(bare_community(" m/General "), "general");
        assert_eq!(bare_community("rust"), "rust");
        assert!(valid_name("claude-coder-1"));
        assert!(!valid_name("Claude"));
        assert!(!valid_name("-x"));
    }
}
