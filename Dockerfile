# syntax=docker/dockerfile:1.7
# One Dockerfile, four images (design §8; k8s/ and charts/ reference them):
#
#   docker build --target coordinator -t ghcr.io/botburrow/coordinator:0.1.0 .
#   docker build --target runner      -t ghcr.io/botburrow/runner:0.1.0 .
#   docker build --target runner-cli  -t ghcr.io/botburrow/runner-cli:0.1.0 .
#   docker build --target devhub      -t ghcr.io/botburrow/devhub:0.1.0 .
#
# Every image runs as uid/gid 10001 with nothing writable but mounted volumes (the manifests set
# readOnlyRootFilesystem and mount emptyDirs on /tmp and /workspaces). The binaries are built once,
# with the locked dependency set, in the shared builder stage.

ARG RUST_VERSION=1.95
ARG NODE_MAJOR=22

# ---------------------------------------------------------------------------------------- builder
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; binaries are copied out of the
# cached target dir into /out/<image>/ so that later stages can COPY them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out/coordinator /out/runner /out/devhub \
 && cp target/release/botburrow-coordinator /out/coordinator/ \
 && cp target/release/botburrow-runner target/release/botburrow /out/runner/ \
 && if [ -f target/release/botburrow-hub-mcp ]; then cp target/release/botburrow-hub-mcp /out/runner/; fi \
 && cp target/release/botburrow-devhub /out/devhub/

# ------------------------------------------------------------------------------------ coordinator
# distroless/cc: glibc, libgcc and CA certificates, no shell, no package manager; "nonroot" tag.
FROM gcr.io/distroless/cc-debian12:nonroot AS coordinator
COPY --from=builder /out/coordinator/botburrow-coordinator /usr/local/bin/botburrow-coordinator
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/botburrow-coordinator"]

# ----------------------------------------------------------------------------------------- devhub
FROM gcr.io/distroless/cc-debian12:nonroot AS devhub
COPY --from=builder /out/devhub/botburrow-devhub /usr/local/bin/botburrow-devhub
USER 10001:10001
ENV DEVHUB_LISTEN=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/botburrow-devhub"]

# ----------------------------------------------------------------------------------------- runner
# The runner needs a shell and coreutils (the sandboxed Bash/Glob/Grep tools), git (agents work in
# repositories) and node (the built-in MCP servers are npm packages, installed here so that no
# activation downloads them).
FROM node:${NODE_MAJOR}-bookworm-slim AS runner
ARG MCP_GITHUB_VERSION=2025.4.8
ARG MCP_BRAVE_VERSION=0.6.2
ARG MCP_FILESYSTEM_VERSION=2026.8.31
ARG MCP_POSTGRES_VERSION=0.6.2
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 botburrow \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin botburrow \
 && mkdir -p /workspaces /configs \
 && chown 10001:10001 /workspaces
RUN npm install --global --no-fund --no-audit \
      "@modelcontextprotocol/server-github@${MCP_GITHUB_VERSION}" \
      "@modelcontextprotocol/server-brave-search@${MCP_BRAVE_VERSION}" \
      "@modelcontextprotocol/server-filesystem@${MCP_FILESYSTEM_VERSION}" \
      "@modelcontextprotocol/server-postgres@${MCP_POSTGRES_VERSION}" \
 && npm cache clean --force
COPY --from=builder /out/runner/ /usr/local/bin/
# The root filesystem is read-only in the cluster: HOME and npm's cache live on the /tmp emptyDir.
ENV HOME=/tmp \
    NPM_CONFIG_CACHE=/tmp/.npm \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    WORKSPACE_ROOT=/workspaces \
    AGENT_DEFINITIONS_PATH=/configs/agent-definitions
USER 10001:10001
WORKDIR /workspaces
EXPOSE 9091
# tini reaps the MCP servers' and tools' grandchildren and forwards SIGTERM to the runner.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/botburrow-runner"]

# ------------------------------------------------------------------------------------- runner-cli
# The runner plus the coding CLIs its executors drive: claude (claude-code), opencode, aider, goose.
FROM runner AS runner-cli
ARG CLAUDE_CODE_VERSION=2.1.328
ARG OPENCODE_VERSION=1.18.33
ARG AIDER_VERSION=0.86.2
ARG GOOSE_VERSION=1.37.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
USER 0:0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv bzip2 curl \
 && rm -rf /var/lib/apt/lists/*
RUN npm install --global --no-fund --no-audit \
      "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
      "opencode-ai@${OPENCODE_VERSION}" \
 && npm cache clean --force
# aider in its own virtualenv, linked onto PATH.
RUN python3 -m venv /opt/aider \
 && /opt/aider/bin/pip install --no-cache-dir "aider-chat==${AIDER_VERSION}" \
 && ln -s /opt/aider/bin/aider /usr/local/bin/aider
# goose ships as a release archive only (no npm or PyPI package).
RUN curl -fsSL "https://github.com/aaif-goose/goose/releases/download/v${GOOSE_VERSION}/goose-x86_64-unknown-linux-gnu.tar.bz2" \
      | tar -xj -C /usr/local/bin goose \
 && chmod 0755 /usr/local/bin/goose \
 && apt-get purge -y --auto-remove curl bzip2
USER 10001:10001
