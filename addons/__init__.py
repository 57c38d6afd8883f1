"""The egressguard addon chain. Order matters: mitmproxy runs each hook through this list in order."""

from __future__ import annotations

from addons.admin import Admin
from addons.alpn import AlpnOffers
from addons.audit import Audit
from addons.backpressure import HeldReads
from addons.config import PolicyLoader
from addons.decoding import CappedDecoding
from addons.drill import DrillMarker, DrillTarget
from addons.early import EarlyAnswers
from addons.egress import Egress
from addons.errorpages import QuietErrorPages
from addons.freeze import Freeze
from addons.heads import HeadLimits
from addons.heap import LongLivedHeap
from addons.identity import AgentIdentity
from addons.inspect import Inspect
from addons.localapi import LocalApi, ReservedHosts
from addons.logscrub import ScrubbedLogs
from addons.metrics import TurnMetrics
from addons.rawstreams import RawStreams
from addons.trailers import Http1Trailers, Http2JoinedData
from addons.wslimits import WebSocketLimits
from proxy.runtime import Runtime


def default_addons(runtime: Runtime | None = None) -> list[object]:
    runtime = runtime or Runtime()
    return [
        PolicyLoader(runtime),
        ScrubbedLogs(runtime),
        EarlyAnswers(),
        QuietErrorPages(),
        Http1Trailers(),
        HeadLimits(),
        HeldReads(),
        Http2JoinedData(),
        CappedDecoding(runtime),
        AgentIdentity(runtime),
        DrillMarker(runtime),
        ReservedHosts(),
        LocalApi(runtime),
        Egress(runtime),
        AlpnOffers(),
        Freeze(runtime),
        Inspect(runtime),
        RawStreams(runtime),
        WebSocketLimits(runtime),
        DrillTarget(runtime),
        Audit(runtime),
        Admin(runtime),
        TurnMetrics(runtime),
        LongLivedHeap(),
    ]
