"""Keeps each part of an OpenAI Upload the provider took (``proxy.staged``), so that the ``complete`` that
joins them is read with the file they make (``addons.inspect``), and forgets an upload once completed."""

from __future__ import annotations

from mitmproxy import http

from addons.gate.turns import policy_of
from proxy.dialects import staged_upload
from proxy.dialects.base import as_dict, as_str, load_json
from proxy.runtime import Runtime
from proxy.staged import form_field

PART_FIELD = "data"
"""The form field a part's content travels in."""


class StagedUploads:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def response(self, flow: http.HTTPFlow) -> None:
        staged = staged_upload(flow.request.path)
        answer = flow.response
        if staged is None or flow.request.method != "POST" or answer is None:
            return
        if not 200 <= answer.status_code < 300:
            return
        upload, action = staged
        parts = self.runtime.staged_parts
        if action == "complete":
            parts.forget(upload)
            return
        # A part whose answer names no id cannot be named by the complete either: nothing to keep.
        part = as_str(as_dict(load_json(answer.get_content(strict=False) or b"")[0]).get("id"))
        if part is not None:
            sent = flow.request.get_content(strict=False)
            content = form_field(sent, PART_FIELD) if sent else None
            parts.keep(upload, part, content, policy_of(flow, self.runtime).max_body_bytes)
