"""Keeps each piece of an upload the provider took (an OpenAI Upload's part, a Gemini or Cloud Storage
resumable upload's chunk: ``proxy.staged``), so that the request that joins them is read with the file
they make (``addons.inspect``), and forgets an upload once completed."""

from __future__ import annotations

from mitmproxy import http

from addons.gate.turns import policy_of
from addons.inspect import upload_step
from proxy.dialects.base import as_dict, as_str, load_json
from proxy.runtime import Runtime
from proxy.staged import bytes_taken, form_field
from proxy.wire.multipart import boundary_of

PART_FIELD = "data"
"""The form field a part's content travels in."""
RESUME_INCOMPLETE = 308
"""What Google's ``Content-Range`` protocol answers a chunk that leaves the upload open."""


class StagedUploads:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def response(self, flow: http.HTTPFlow) -> None:
        step = upload_step(flow)
        answer = flow.response
        if step is None or flow.request.method not in ("POST", "PUT") or answer is None:
            return
        if not (200 <= answer.status_code < 300 or answer.status_code == RESUME_INCOMPLETE):
            return
        parts = self.runtime.staged_parts
        if step.completes and answer.status_code != RESUME_INCOMPLETE:
            parts.forget(step.upload)
            return
        cap = policy_of(flow, self.runtime).max_body_bytes
        sent = flow.request.get_content(strict=False)
        if step.offset is not None:
            if answer.status_code == RESUME_INCOMPLETE and sent is not None:
                # The server may keep less than it was sent; the client sends the rest again from there.
                sent = sent[: bytes_taken(step.offset, answer.headers.get("range", ""))]
                if not sent:
                    return
            parts.keep(step.upload, str(step.offset), sent, cap)
            return
        # A part whose answer names no id cannot be named by the complete either: nothing to keep.
        part = as_str(as_dict(load_json(answer.get_content(strict=False) or b"")[0]).get("id"))
        if part is not None:
            boundary = boundary_of(flow.request.headers.get("content-type"))
            parts.keep(step.upload, part, form_field(sent, boundary, PART_FIELD) if sent else None, cap)
