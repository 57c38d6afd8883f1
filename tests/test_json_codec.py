"""The JSON reading and writing of every event read and every one written anew: the encoder and the
decoder made once give what ``json`` gives for the same values and texts, errors included."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.dialects.stream import dump_json
from proxy.wire import jsontext

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.text(alphabet=st.characters(categories=["Cs", "Cc", "Lo"]))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@given(values)
def test_an_event_is_written_as_json_dumps_writes_it(value: Any) -> None:
    assert dump_json(value) == compact(value)


def test_a_value_json_has_no_form_for_is_refused_as_json_refuses_it() -> None:
    for value in ({"at": {1, 2}}, [b"bytes"], object()):
        with pytest.raises(TypeError) as ours:
            dump_json(value)
        with pytest.raises(TypeError) as theirs:
            compact(value)
        assert str(ours.value) == str(theirs.value)


def test_a_key_json_cannot_write_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(TypeError) as ours:
        dump_json({(1, 2): "tuple key"})
    with pytest.raises(TypeError) as theirs:
        compact({(1, 2): "tuple key"})
    assert str(ours.value) == str(theirs.value)


def listed(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return pairs


def read_as_json_reads(text: str, pairs: bool = False) -> tuple[str, Any]:
    hook = listed if pairs else None
    try:
        return "value", json.JSONDecoder(parse_int=jsontext.parse_int, object_pairs_hook=hook).decode(text)
    except json.JSONDecodeError as error:
        return "error", (error.msg, error.pos)
    except RecursionError:
        return "error", "recursion"


PAIRS = jsontext.decoder(listed)


def read_so(text: str, pairs: bool = False) -> tuple[str, Any]:
    try:
        return "value", PAIRS.decode(text) if pairs else jsontext.loads(text)
    except json.JSONDecodeError as error:
        return "error", (error.msg, error.pos)
    except RecursionError:
        return "error", "recursion"


spacing = st.text(alphabet=" \t\r\n", max_size=3)
texts = (
    st.builds(lambda before, value, after: before + json.dumps(value) + after, spacing, values, spacing)
    | st.builds(lambda value, extra: json.dumps(value) + extra, values, st.text(max_size=5))
    | st.builds(lambda value, cut: json.dumps(value)[:cut], values, st.integers(min_value=0, max_value=40))
    | st.text(max_size=30)
)


@given(texts, st.booleans())
def test_a_text_reads_as_json_reads_it(text: str, pairs: bool) -> None:
    assert repr(read_so(text, pairs)) == repr(read_as_json_reads(text, pairs))


def test_the_texts_json_reads_otherwise_read_so() -> None:
    for text in [
        '{"a": 1} {"b": 2}',
        '{"a": 1}  ',
        "  [1]",
        "",
        "[1",
        '"\\ud800"',
        "NaN",
        "1" * 5000,
        "[" * 100000,
    ]:
        for pairs in (False, True):
            assert repr(read_so(text, pairs)) == repr(read_as_json_reads(text, pairs)), text


def depth_of(value: Any) -> int:
    """How deep ``value``'s lists and dicts nest, walked."""
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@given(values | st.lists(values) | st.dictionaries(st.text(alphabet="[]{}\"\\'"), values), st.booleans())
def test_how_deep_a_text_nests_is_how_deep_its_value_does(value: Any, ascii_only: bool) -> None:
    """Brackets in a string, escaped quotes and characters beyond ASCII leave the depth as it is."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    for limit in range(8):
        assert jsontext.nests_past(text, limit) is (depth_of(value) > limit)


def test_a_nesting_past_what_json_reads_is_still_measured() -> None:
    deep = '{"type": "x", "a": ' + "[" * 100_000 + '"]]]"' + "]" * 100_000 + "}"
    with pytest.raises(RecursionError):
        json.loads(deep)
    assert jsontext.nests_past(deep, 128)
    assert not jsontext.nests_past('{"a": ' + "[" * 127 + '"[[[["' + "]" * 127 + "}", 128)


@pytest.mark.parametrize(
    ("text", "opens"),
    [
        ('{"a": 1}', True),
        ("\ufeff  [1]", True),
        ("/* c */ {", True),
        ("// c\n// d\n[", True),
        (")]}',\n{", True),
        ("while(1);{", True),
        ("for(;;);[", True),
        ("/* unclosed {", False),
        ("plain words {", False),
        ("[DONE]", True),
        ("", False),
        # Behind any prefix a reader may cut off (up to the first bracket, or whole lines), a whole
        # object or array running to the end is JSON to it.
        ("x{}", True),
        ('#!/usr/bin/env node\n{"a": 1}\n', True),
        ('\x00{"a": [1]}', True),
        ('for(;;); {"a": 1}', True),
        ('banner {not json\nmore\n[1, {"b": 2}]', True),
        ("x{}" * 3, False),
        ("Error: {bad}", False),
        ("<html><style>body{color:red}</style><script>f({a:1})</script></html>", False),
        ('see {"a": 1} here', False),
    ],
)
def test_opens_json_skips_what_lenient_readers_skip(text: str, opens: bool) -> None:
    assert jsontext.opens_json(text) is opens


def test_json_behind_a_prefix_is_found_in_bounded_time() -> None:
    """Lines that each open an array read to the end of the text before failing: past twice the text's
    length of reading, the text is taken for JSON rather than read on."""
    line = "[" + "1," * 8192 + "\n"
    text = line * 64 + "1]"
    started = time.process_time()
    assert jsontext.json_behind(text) is not None
    assert time.process_time() - started < 2
    huge = '#!x\n{"a": ' + "9" * 5000 + "}"
    assert jsontext.json_behind(huge) == 4
