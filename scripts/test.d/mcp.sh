#!/usr/bin/env bash
# Installs the published filesystem MCP server (@modelcontextprotocol/server-filesystem) into
# target/npm, where runner/tests/mcp_filesystem.rs finds it (or set BOTBURROW_MCP_FS_SERVER).
# The real-server test must not be skipped, so a missing node/npm is an error here.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix="$(pwd)/target/npm"
bin="$prefix/node_modules/.bin/mcp-server-filesystem"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "scripts/test.d/mcp.sh: node and npm are required for the real MCP server test" >&2
  echo "  (install Node.js >= 18, e.g. apt-get install nodejs npm)" >&2
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
