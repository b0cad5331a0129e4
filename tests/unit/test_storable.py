"""core.storable: any text becomes something every UTF-8 column stores (H13)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outboxkit.core.storable import storable


@given(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=5000),
    st.integers(1, 3000),
)
def test_any_text_becomes_valid_utf8_without_nul_within_the_limit(text: str, limit: int) -> None:
    out = storable(text, limit)
    out.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in out
    assert len(out) <= limit


def test_lone_surrogates_and_nul_are_escaped_visibly() -> None:
    assert storable("a\ud800b\x00c") == "a\\ud800b\\0c"


def test_cut_text_is_marked() -> None:
    assert storable("x" * 50, 10) == "x" * 9 + "…"


def test_non_text_is_shown_with_repr() -> None:
    assert storable(b"\xff") == "b'\\xff'"
