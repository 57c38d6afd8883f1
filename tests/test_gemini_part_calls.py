"""A Gemini part that names no field a call is read from is no call (``gemini._CALL_FIELDS``), whatever else
it holds: the merged response reads such a part's text without looking for a call in it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.dialects.gemini import _CALL_FIELDS, _part_call

PART_KEYS = [
    *sorted(_CALL_FIELDS),
    "functionCall",
    "FunctionCall",
    "executableCode",
    "text",
    "thought",
    "codeExecutionResult",
    "inlineData",
    "fileData",
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.fixed_dictionaries({}, optional={"name": st.text(max_size=3), "args": st.just({}), "code": st.text()}),
)


@given(st.dictionaries(st.sampled_from(PART_KEYS), VALUES, max_size=4))
def test_a_gemini_part_naming_no_call_field_is_no_call(part: dict[str, Any]) -> None:
    call = _part_call(part, "candidates[0].content.parts[0]")
    assert call is None or not _CALL_FIELDS.isdisjoint(key.lower() for key in part)
