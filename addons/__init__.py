"""The egressguard addon chain. Order matters: mitmproxy runs each hook through this list in order."""

from __future__ import annotations

from addons.gate.drill import DrillMarker, DrillTarget
from addons.gate.egress import Egress
from addons.gate.freeze import Freeze
from addons.gate.identity import AgentIdentity
from addons.gate.localapi import LocalApi, ReservedHosts
from addons.inspect import Inspect
from addons.process.admin import Admin
from addons.process.config import PolicyLoader
from addons.process.heap import LongLivedHeap
from addons.process.logscrub import ScrubbedLogs
from addons.record.audit import Audit
from addons.record.metrics import TurnMetrics
from addons.record.staged import StagedUploads
from addons.wire.alpn import AlpnOffers
from addons.wire.backpressure import HeldReads
from addons.wire.decoding import CappedDecoding
from addons.wire.early import EarlyAnswers
from addons.wire.errorpages import QuietErrorPages
from addons.wire.heads import HeadLimits
from addons.wire.rawstreams import RawStreams
from addons.wire.trailers import Http1Trailers, Http2JoinedData
from addons.wire.wslimits import WebSocketLimits
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
        StagedUploads(runtime),
        RawStreams(runtime),
        WebSocketLimits(runtime),
        DrillTarget(runtime),
        Audit(runtime),
        Admin(runtime),
        TurnMetrics(runtime),
        LongLivedHeap(),
    ]
