"""The hosts egressguard answers itself, in one table: requests to them through the proxy are never
looked up in DNS, connected to upstream or checked as egress. Each names the in-process service that
answers it: the local API for agents' own tools (``proxy.inprocess.localapi``) and the drill target
for operators' synthetic attacks (``proxy.control.drill``)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from proxy.control.drill import DRILL_HOST
from proxy.egress import canonical_host
from proxy.inprocess.localapi import LOCAL_API_HOST


class Service(StrEnum):
    LOCAL_API = "local API"
    DRILL = "drill target"


RESERVED_HOSTS: Mapping[str, Service] = {LOCAL_API_HOST: Service.LOCAL_API, DRILL_HOST: Service.DRILL}


def reserved_service(host: str | None) -> Service | None:
    """The service answering ``host`` (in any spelling egress reads it), or None for a real host."""
    return RESERVED_HOSTS.get(canonical_host(host)) if host else None
