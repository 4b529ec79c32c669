//! The offline `demo` provider (`brain.provider: demo`): answers through the same loop without
//! any network, for `botburrow up` and tests. It quotes the last user text in a clearly
//! labelled canned reply. If a `hub_post` tool is offered and not yet called, it calls it once
//! with that reply (targeting the post and comment ids the prompt names as `post id: X` /
//! `comment id: Y`, when present), then ends with the reply as its final text.

use super::chain::Endpoint;
use super::{Block, ChatRequest, Message, ModelResponse, Role, ToolCall, Usage};
use regex::Regex;
use std::sync::LazyLock;

static POST_ID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bpost[ _-]?id\b["'`*]*\s*[:=]?\s*["'`*]*([A-Za-z0-9_.:-]+)"#).ok()
});
static COMMENT_ID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bcomment[ _-]?id\b["'`*]*\s*[:=]?\s*["'`*]*([A-Za-z0-9_.:-]+)"#).ok()
});

fn capture(re: &LazyLock<Option<Regex>>, text: &str) -> Option<String> {
    re.as_ref()?
        .captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().trim_end_matches(['.', ':']).to_string())
}

/// The canned reply for a prompt.
pub(crate) fn reply_text(prompt: &str) -> String {
    let flat: String = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    let quote: String = if flat.chars().count() > 200 {
        format!("{}...", flat.chars().take(200).collect::<String>())
    } else {
        flat
    };
    format!(
        "[demo provider] You said: \"{quote}\". This is a canned reply; no language model was called."
    )
}

/// Answers without network.
pub(crate) fn complete(ep: &Endpoint, req: &ChatRequest) -> ModelResponse {
    let prompt = req
        .messages
        .iter()
        .rev()
        .filter(|m| m.role == Role::User)
        .map(Message::text)
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let reply = reply_text(&prompt);
    let already_posted = req
        .messages
        .iter()
        .flat_map(|m| &m.blocks)
        .any(|b| matches!(b, Block::ToolCall(c) if c.name == "hub_post"));
    let offers_post = req.tools.iter().any(|t| t.name == "hub_post");
    let blocks = if offers_post && !already_posted {
        let mut input = serde_json::json!({ "content": reply });
        if let Some(post) = capture(&POST_ID, &prompt) {
            input["reply_to"] = post.into();
        }
        if let Some(comment) = capture(&COMMENT_ID, &prompt) {
            input["parent_id"] = comment.into();
        }
        let n = req.messages.len();
        vec![Block::ToolCall(ToolCall {
            id: format!("demo_call_{n}"),
            name: "hub_post".into(),
            input,
        })]
    } else {
        vec![Block::Text(reply)]
    };
    ModelResponse {
        message: Message {
            role: Role::Assistant,
            blocks,
        },
        // Nothing was billed; report zero rather than invent numbers.
        usage: Usage::default(),
        model: ep.model.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ids_in_common_prompt_spellings() {
        assert_eq!(
            capture(&POST_ID, "Reply to post id: p-42 please").as_deref(),
            Some("p-42")
        );
        assert_eq!(
            capture(&POST_ID, "**Post ID**: abc123\n").as_deref(),
            Some("abc123")
        );
        assert_eq!(
            capture(&COMMENT_ID, "comment_id=c7.").as_deref(),
            Some("c7")
        );
        assert_eq!(capture(&POST_ID, "nothing here"), None);
        assert!(reply_text("hello   world").contains("\"hello world\""));
    }
}
