"""sagegen's search tool for verl's multi-turn rollout, loaded by class path from the tool config.

``search_tool_config.yaml`` (written by ``sagegen train --backend verl --dry-run``) names
``sagegen.integrations.verl.tool.SearchTool``; verl's ``initialize_tools_from_config`` imports it
and builds one per tool entry. It depends only on verl's ``BaseTool`` interface, not on any tool
class verl ships (``verl.tools.search_tool`` left the wheels in 0.8.0).

Each call posts the policy's query to a Search-R1-compatible ``/retrieve`` server (``sagegen
serve`` or Search-R1's own) and returns the passages as ``tags.format_information`` writes them,
the same text the solver, the SFT export and the TRL rollout show. This module imports verl, so
only verl's own processes import it.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import uuid4

import httpx
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from sagegen.agents.tags import format_information
from sagegen.records import Doc, Hit


def hits_from_result(result: list[Any]) -> list[Hit]:
    """One query's ``/retrieve`` result (scored or bare documents) as Hits, contents byte-exact."""
    hits = []
    for item in result:
        doc = item.get("document", item)  # return_scores=false: the bare document
        score = item.get("score") if "document" in item else None
        hits.append(Hit(doc=Doc.from_contents(str(doc.get("id", "")), doc["contents"]), score=score or 0.0))
    return hits


class SearchTool(BaseTool):
    """``search(query)`` against ``config["retrieval_service_url"]``; one HTTP client per tool object.

    Config keys: ``retrieval_service_url`` (required), ``topk`` (3), ``timeout`` (seconds, 30),
    ``passage_chars`` (0 = whole passages), ``api_key_env`` (name of an environment variable
    holding the server's key; the key itself never sits in the config file).
    """

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema) -> None:
        super().__init__(config, tool_schema)
        if not config.get("retrieval_service_url"):
            raise ValueError("sagegen SearchTool: config.retrieval_service_url is required")
        self.url = str(config["retrieval_service_url"])
        self.topk = int(config.get("topk", 3))
        self.timeout = float(config.get("timeout", 30))
        self.passage_chars = int(config.get("passage_chars", 0))
        self.api_key_env = config.get("api_key_env")
        self._instances: dict[str, dict[str, Any]] = {}

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id = instance_id or str(uuid4())
        self._instances[instance_id] = {"queries": []}
        return instance_id, ToolResponse()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        query = str(parameters.get("query", "")).strip()
        if not query:
            return ToolResponse(text=format_information([])), 0.0, {"error": "empty query"}
        payload = {"queries": [query], "topk": self.topk, "return_scores": True}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                resp = await client.post(self.url, json=payload, headers=self._headers())
            resp.raise_for_status()
            hits = hits_from_result(resp.json()["result"][0])
        except (httpx.HTTPError, KeyError, IndexError, ValueError, TypeError) as e:
            # A failed search is an observation, not a crash of the rollout; the metric records it.
            return ToolResponse(text=format_information([])), 0.0, {"error": f"{type(e).__name__}: {e}"}
        self._instances.setdefault(instance_id, {"queries": []})["queries"].append(query)
        text = format_information(hits[: self.topk], self.passage_chars)
        return ToolResponse(text=text), 0.0, {"hits": len(hits)}

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)
