//! The production [`ToolProvider`] for native agents: per prompt, the Hub tools the agent's hub
//! grants allow (`hub_search`/`hub_get_thread` with `hub:read`, which `hub:write` implies;
//! `hub_post` with `hub:write`; a forged call to a withheld one is refused as a tool error;
//! `hub_post` records what it posted, with idempotency keys derived from the
//! notification or work item so a retry cannot post twice), the sandbox tools confined to the
//! activation workspace (withheld when `network.enabled: false`), and the agent's MCP servers as
//! its effective grants allow (shut down when the prompt is answered).

use crate::activation::{
    ActivationError, NativeTools, PostProbe, PostedItem, ToolProvider, ToolRequest,
};
use crate::mcp::{McpActivation, McpManager, McpOptions};
use crate::tools::ToolSet;
use crate::tools::hub::{HubTools, PostedKind};
use crate::tools::sandbox::Sandbox;
use async_trait::async_trait;
use botburrow_shared::hub::HubClient;
use std::sync::Arc;

/// Hub, sandbox and MCP tools.
pub struct StandardTools {
    hub: HubClient,
    mcp: McpOptions,
}

impl StandardTools {
    /// Tools acting on `hub` with the runner-wide MCP options.
    pub fn new(hub: HubClient, mcp: McpOptions) -> Self {
        Self { hub, mcp }
    }
}

struct HubProbe(Arc<HubTools>);

impl PostProbe for HubProbe {
    fn posted(&self) -> Vec<PostedItem> {
        self.0
            .posted()
            .into_iter()
            .map(|p| PostedItem {
                post_id: p.post_id,
                new_post: p.kind == PostedKind::Post,
            })
            .collect()
    }
}

#[async_trait]
impl ToolProvider for StandardTools {
    async fn tools(&self, req: &ToolRequest) -> Result<NativeTools, ActivationError> {
        let mut set = ToolSet::new();
        let hub = HubTools::new(
            self.hub.clone(),
            req.agent_id.clone(),
            req.idempotency_base.clone(),
            req.agent.behavior.can_create_posts,
        );
        hub.add_granted(&mut set, &req.grants);
        let probe: Arc<dyn PostProbe> = Arc::new(HubProbe(hub));
        if req.agent.network.enabled {
            Sandbox::new(&req.workspace, &req.agent.capabilities.shell)?.add_to(&mut set);
        }
        let mcp = if req.agent.capabilities.mcp_servers.is_empty() {
            None
        } else {
            let manager = McpManager::start(
                &self.mcp,
                McpActivation {
                    agent_id: &req.agent_id,
                    workspace: &req.workspace,
                    grants: &req.grants,
                    servers: &req.agent.capabilities.mcp_servers,
                },
            )
            .await?;
            manager.add_to(&mut set);
            Some(manager)
        };
        Ok(NativeTools { set, probe, mcp })
    }
}
