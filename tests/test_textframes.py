"""What the proxy writes into a WebSocket text message is UTF-8, never altered to fit."""

from __future__ import annotations

import json

import pytest

from proxy.wire.textframes import json_message, text_message


@pytest.mark.parametrize("surrogate", ["\ud83d", "\udc80", "\udfff"])
def test_half_a_surrogate_pair_in_json_goes_as_its_escape(surrogate: str) -> None:
    text = json.dumps({"text": f"half {surrogate} pair"}, ensure_ascii=False)
    sent = text_message(text)
    assert sent is not None and sent == json_message(text)
    assert json.loads(sent.decode("utf-8")) == {"text": f"half {surrogate} pair"}


def test_text_that_is_utf8_goes_as_it_is() -> None:
    assert text_message("é € 𝄞") == "é € 𝄞".encode()


def test_text_with_a_lone_surrogate_outside_json_has_no_text_message() -> None:
    assert text_message("key \udc80 restored") is None
