#!/usr/bin/env bash
# Installs the published filesystem MCP server (@modelcontextprotocol/server-filesystem) into
# target/npm, where runner/tests/mcp_filesystem.rs finds it (or set BOTBURROW_MCP_FS_SERVER).
# The real-server test must not be skipped, so a missing node/npm is an error here.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix="$(pwd)/target/npm"
bin="$prefix/node_modules/.bin/mcp-server-filesystem"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Node.js >= 18 (Debian bookworm ships 18); installed from the distribution when missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm from the distribution"
  as_root apt-get update -qq || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || true
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "scripts/test.d/mcp.sh: node and npm are required for the real MCP server test and could not be installed" >&2
  echo "  (install Node.js >= 18 and npm, e.g. apt-get install nodejs npm)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
  echo "scripts/test.d/mcp.sh: Node.js >= 18 is required, found $(node --version)" >&2
  exit 1
fi

if [ -x "$bin" ]; then
  echo "mcp-server-filesystem already installed at $bin"
  exit 0
fi

mkdir -p "$prefix"
echo "installing @modelcontextprotocol/server-filesystem into $prefix"
timeout 600 npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error @modelcontextprotocol/server-filesystem
if [ ! -x "$bin" ]; then
  echo "scripts/test.d/mcp.sh: npm install finished but $bin is missing" >&2
  exit 1
fi
echo "installed $bin"
