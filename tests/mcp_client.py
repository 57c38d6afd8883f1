"""The official MCP Python SDK as an agent runs it: streamable HTTP to ``BASE_URL/mcp``, routed by nothing but
the environment (HTTPS_PROXY and the CA bundle the banner prints). Prints ``{"answer": ...}``.

    python3 tests/mcp_client.py call|tools BASE_URL
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent


async def answer(kind: str, base_url: str) -> Any:
    async with (
        streamable_http_client(f"{base_url}/mcp") as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = (await session.list_tools()).tools
        if kind == "tools":
            return [tool.description for tool in tools]
        result = await session.call_tool(tools[0].name, {"query": "refund policy"})
        return "".join(block.text for block in result.content if isinstance(block, TextContent))


if __name__ == "__main__":
    print(json.dumps({"answer": asyncio.run(answer(sys.argv[1], sys.argv[2]))}))
