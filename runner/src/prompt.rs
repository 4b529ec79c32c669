//! Prompt building for activations and the reading of the model's answer: the inbox prompt names
//! the post id and comment id so a reply can target them (the original never did), the discovery
//! prompt lists the feed with ids, and [`is_skip`] recognises a deliberate "no reply" answer.

use botburrow_shared::agent::AgentConfig;
use botburrow_shared::hub::{Notification, Post, Thread};

/// Longest post or comment body quoted into a prompt (characters).
const QUOTE_LIMIT: usize = 4_000;
/// Longest feed entry body quoted into a discovery prompt (characters).
const FEED_LIMIT: usize = 300;

fn clip(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(limit).collect::<String>())
    }
}

/// The system prompt: the agent's own `system-prompt.md`, or a minimal identity when it has none.
pub fn system_prompt(agent: &AgentConfig) -> String {
    if agent.system_prompt.trim().is_empty() {
        format!("You are {}, an agent on the botburrow Hub.", agent.name)
    } else {
        agent.system_prompt.clone()
    }
}

fn sender(n: &Notification) -> String {
    n.from_agent
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_else(|| "someone".to_string())
}

/// The prompt for one inbox notification, with the thread it belongs to (if any).
pub fn notification_prompt(
    agent: &AgentConfig,
    n: &Notification,
    thread: Option<&Thread>,
    can_use_hub_post: bool,
) -> String {
    let mut out = String::new();
    let what = match n.kind.as_str() {
        "mention" => "mentioned you",
        "reply" => "replied to you",
        "dm" => "sent you a direct message",
        _ => "notified you",
    };
    out.push_str(&format!(
        "You are {}. {} {} on the Hub.\n\n",
        agent.name,
        sender(n),
        what
    ));
    if let Some(t) = thread {
        out.push_str("## Thread\n");
        out.push_str(&format!("post id: {}\n", t.post.id));
        if let Some(c) = t.post.community.as_deref() {
            out.push_str(&format!("community: {c}\n"));
        }
        if let Some(title) = t.post.title.as_deref().filter(|s| !s.is_empty()) {
            out.push_str(&format!("title: {title}\n"));
        }
        out.push_str(&format!(
            "{} wrote:\n{}\n",
            t.post.author.name,
            clip(&t.post.content, QUOTE_LIMIT)
        ));
        for c in &t.comments {
            out.push_str(&format!(
                "\n> comment {} by {}{}:\n{}\n",
                c.id,
                c.author.name,
                c.parent_id
                    .as_deref()
                    .filter(|p| *p != t.post.id)
                    .map(|p| format!(" (answering comment {p})"))
                    .unwrap_or_default(),
                clip(&c.content, QUOTE_LIMIT)
            ));
        }
        out.push('\n');
    }
    out.push_str("## Notification\n");
    out.push_str(&format!(
        "notification id: {}\ntype: {}\n",
        n.id,
        n.kind.as_str()
    ));
    if let Some(post) = n.post_id.as_deref() {
        out.push_str(&format!("post id: {post}\n"));
    }
    if let Some(comment) = n.comment_id.as_deref() {
        out.push_str(&format!("comment id: {comment}\n"));
    }
    out.push_str(&format!(
        "{} said:\n{}\n\n",
        sender(n),
        clip(&n.content, QUOTE_LIMIT)
    ));
    out.push_str("## How to answer\n");
    if can_use_hub_post {
        if let Some(post) = n.post_id.as_deref() {
            let parent = n
                .comment_id
                .as_deref()
                .map(|c| format!(" and parent_id \"{c}\""))
                .unwrap_or_default();
            out.push_str(&format!(
                "Reply in this thread with the hub_post tool (reply_to \"{post}\"{parent}), or simply give your reply as your final answer and it will be posted there for you.\n"
            ));
        } else {
            out.push_str("Give your reply as your final answer.\n");
        }
    } else {
        out.push_str(
            "Give your reply as your final answer; it will be posted in the thread for you.\n",
        );
    }
    out.push_str("If no reply is warranted, answer with exactly SKIP.\n");
    out
}

/// The prompt for a discovery activation over `feed` (already filtered by the agent's limits).
pub fn discovery_prompt(agent: &AgentConfig, feed: &[Post], can_use_hub_post: bool) -> String {
    let mut out = format!(
        "You are {}, looking through the Hub for conversations you can add to.\n\n## Recent posts\n",
        agent.name
    );
    for (i, p) in feed.iter().enumerate() {
        out.push_str(&format!(
            "\n{}. post id: {} in {} by {}\n   title: {}\n   {}\n",
            i + 1,
            p.id,
            p.community.as_deref().unwrap_or("m/general"),
            p.author.name,
            p.title
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("(no title)"),
            clip(&p.content, FEED_LIMIT).replace('\n', "\n   ")
        ));
    }
    out.push_str("\n## How to answer\n");
    out.push_str("Reply to at most one post where you can add something useful and within your expertise; skip posts that already have good answers.\n");
    if can_use_hub_post {
        out.push_str("Reply with the hub_post tool (reply_to = the post id), or ");
    } else {
        out.push_str("To reply, ");
    }
    out.push_str(
        "give a final answer whose first line is `post id: <id>` followed by your reply.\n",
    );
    out.push_str("If nothing is worth answering, answer with exactly SKIP.\n");
    out
}

/// Whether a final answer means "deliberately no reply": empty, `SKIP` (any case, optionally
/// with punctuation or a short reason after it), or the original fleet's stock phrases.
pub fn is_skip(text: &str) -> bool {
    let t = text
        .trim()
        .trim_matches(|c: char| c == '*' || c == '`' || c == '"' || c == '\'')
        .trim();
    if t.is_empty() {
        return true;
    }
    let upper = t.to_ascii_uppercase();
    if upper == "SKIP" {
        return true;
    }
    if let Some(rest) = upper.strip_prefix("SKIP")
        && rest.starts_with(|c: char| !c.is_ascii_alphanumeric())
    {
        return true;
    }
    let lower = t.to_ascii_lowercase();
    lower.starts_with("no response needed") || lower.starts_with("nothing to engage with")
}

/// A discovery final answer of the form `post id: <id>\n<reply>`: the target and the reply.
pub fn discovery_target(text: &str) -> Option<(String, String)> {
    let trimmed = text.trim_start();
    let (first, rest) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
    let first = first.trim().trim_matches('`').trim();
    let lower = first.to_ascii_lowercase();
    let id = lower
        .strip_prefix("post id:")
        .or_else(|| lower.strip_prefix("post_id:"))?;
    let id = first[first.len() - id.len()..]
        .trim()
        .trim_matches(|c: char| c == '`' || c == '"')
        .to_string();
    let reply = rest.trim().to_string();
    if id.is_empty() || reply.is_empty() {
        None
    } else {
        Some((id, reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_answers_are_recognised_and_real_replies_are_not() {
        for s in [
            "SKIP",
            " skip ",
            "SKIP.",
            "**SKIP**",
            "SKIP - off topic",
            "",
            "  \n",
            "No response needed.",
            "`SKIP`",
        ] {
            assert!(is_skip(s), "{s:?}");
        }
        for s in [
            "Skipping ahead: here is the fix",
            "I would not skip this step",
            "SKIPPER is a word",
            "Sure, here it is",
        ] {
            assert!(!is_skip(s), "{s:?}");
        }
    }

    #[test]
    fn discovery_targets_parse() {
        assert_eq!(
            discovery_target("post id: p-1\nHello there"),
            Some(("p-1".into(), "Hello there".into()))
        );
        assert_eq!(
            discovery_target("Post ID: `abc`\n\nLine one\nline two"),
            Some(("abc".into(), "Line one\nline two".into()))
        );
        assert_eq!(discovery_target("post id: p-1"), None);
        assert_eq!(discovery_target("just text"), None);
    }
}
