"""Browsing a request switches on at the API's side besides the tools each API names itself: a gateway's
web plugin and model variant (OpenRouter), its hosted search and fetch tools, xAI's live search and X
search. Each gives the addresses the API may reach for the agent (``Fetch``), checked against the agent's
egress allowlist as an image given by URL is. What is read is the field the API reads, as it spells it:
a filter spelled otherwise limits nothing, so the browsing it was meant to limit counts as unlimited."""

from __future__ import annotations

from typing import Any

from proxy.dialects.attachments import domain_fetches
from proxy.dialects.base import as_dict, as_list, as_str
from proxy.exchange import Fetch

X_ORIGIN = "https://x.com"
"""Where X search reads: posts anyone may write, reached through the API."""

ROUTER_TOOLS = ("openrouter:web_search", "openrouter:web_fetch")
"""OpenRouter's hosted tools that reach the web, limited by their ``parameters.allowed_domains``."""

_ONLINE_VARIANT = "online"
"""A model slug's ``:online`` variant (``openai/gpt-4o:online``, ``x/y:free:online``): its web plugin."""


def request_browsing(body: dict[str, Any]) -> list[Fetch]:
    """The addresses a request's top-level fields let the API browse: OpenRouter's web plugin
    (``plugins[]`` ``id: web``, limited by its ``include_domains``, off where ``enabled`` is false) and
    the ``:online`` variant of ``model`` or of a fallback in ``models`` (the web plugin, with the filter
    an enabled web plugin entry gives it); xAI's ``search_parameters``."""
    fetches: list[Fetch] = []
    enabled_plugins = 0
    for position, raw_plugin in enumerate(as_list(body.get("plugins"))):
        plugin = as_dict(raw_plugin)
        if (as_str(plugin.get("id")) or "").lower() != "web" or plugin.get("enabled") is False:
            continue
        enabled_plugins += 1
        where = f"plugins[{position}]"
        fetches += domain_fetches(plugin.get("include_domains"), where, "include_domains", "web plugin")
    if not enabled_plugins:
        models = [("model", body.get("model"))]
        models += [(f"models[{index}]", model) for index, model in enumerate(as_list(body.get("models")))]
        fetches += [Fetch(where, None, "web plugin (:online)") for where, model in models if _online(model)]
    return fetches + _live_search(body.get("search_parameters"))


def _online(model: object) -> bool:
    variants = model.lower().split(":")[1:] if isinstance(model, str) else []
    return _ONLINE_VARIANT in (variant.strip() for variant in variants)


def _live_search(parameters: object) -> list[Fetch]:
    """xAI's live search: on unless ``mode`` is ``off``; its sources web and X where it names none. A web
    source is limited by its ``allowed_websites``, an X source reads X, an RSS source the feeds its
    ``links`` name; a news source, or one of a type not known here, reaches any address."""
    if not isinstance(parameters, dict) or parameters.get("mode") == "off":
        return []
    sources = parameters.get("sources")
    if not isinstance(sources, list) or not sources:
        return [Fetch("search_parameters", None, "live search")]
    fetches: list[Fetch] = []
    for position, raw_source in enumerate(sources):
        source = as_dict(raw_source)
        where = f"search_parameters.sources[{position}]"
        kind = as_str(source.get("type")) or ""
        if kind == "web":
            websites = source.get("allowed_websites")
            fetches += domain_fetches(websites, where, "allowed_websites", "live search web")
        elif kind == "x":
            fetches.append(Fetch(where, X_ORIGIN, "live search x"))
        elif kind == "rss" and isinstance(links := source.get("links"), list) and links:
            fetches += [
                Fetch(f"{where}.links[{index}]", link if isinstance(link, str) else "", "live search rss")
                for index, link in enumerate(links)
            ]
        else:
            fetches.append(Fetch(where, None, f"live search {kind or 'source'}"))
    return fetches


def hosted_tool_browsing(tool: dict[str, Any], where: str) -> list[Fetch]:
    """The addresses a tool the API hosts may reach, for the tool types that are no API's own: OpenRouter's
    web search and fetch (limited by ``parameters.allowed_domains``), xAI's X search."""
    kind = (as_str(tool.get("type")) or "").lower()
    if kind in ROUTER_TOOLS:
        domains = as_dict(tool.get("parameters")).get("allowed_domains")
        return domain_fetches(domains, where, "parameters.allowed_domains", kind)
    if kind == "x_search":
        return [Fetch(where, X_ORIGIN, "x_search")]
    return []
