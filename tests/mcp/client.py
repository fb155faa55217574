#!/usr/bin/env python3
"""Talk to a Muster hub's /mcp with the official MCP Python SDK (PyPI `mcp`).

    client.py URL CA_FILE [API_KEY] [PROBE_ARGS_JSON]

The key comes from argv or MUSTER_API_KEY. Connects over Streamable HTTP with the
hub's CA, initializes, lists the tools, calls list_agents and run_probe (its
arguments as JSON, default {"agents": "*", "probe": "system.info"}), and prints
one JSON line of what it got. A refused connection prints
{"refused": "<what the SDK raised>"} and exits 0: the caller judges.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def tool_result(result):
    """A call's result as plain JSON: isError, structured content, first text."""
    text = next((c.text for c in result.content if getattr(c, "type", "") == "text"), None)
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": text,
    }


async def session(url, ca, key, probe_args):
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(verify=ca, headers=headers, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                tools = await s.list_tools()
                agents = await s.call_tool("list_agents", {})
                run = await s.call_tool("run_probe", probe_args)
                return {
                    "protocol_version": init.protocol_version,
                    "server": init.server_info.name,
                    "tools": sorted(t.name for t in tools.tools),
                    "list_agents": tool_result(agents),
                    "run_probe": tool_result(run),
                }


def describe(exc):
    """The innermost cause of an exception group, as type: message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    code = getattr(getattr(exc, "error", None), "code", None)
    suffix = f" (JSON-RPC code {code})" if code is not None else ""
    return f"{type(exc).__name__}: {exc}{suffix}"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    url, ca = sys.argv[1], sys.argv[2]
    key = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("MUSTER_API_KEY", "")
    probe_args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {
        "agents": "*",
        "probe": "system.info",
    }
    try:
        out = asyncio.run(asyncio.wait_for(session(url, ca, key, probe_args), 90))
    except BaseException as e:  # the SDK raises groups and its own errors alike
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        out = {"refused": describe(e)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
