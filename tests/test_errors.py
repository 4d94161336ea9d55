"""app.errors' quoting of client values at its limits: what is shown whole and what is cut."""

from __future__ import annotations

from app.errors import SHOWN_CHARS, SHOWN_ITEMS, quoted, shown


def test_a_string_of_exactly_the_limit_is_shown_whole_and_one_more_is_cut() -> None:
    """The limit is inclusive: a mutant that cut at SHOWN_CHARS already (`<` for `<=`) got past
    tests that only sent strings far over it."""
    assert shown("z" * SHOWN_CHARS) == "z" * SHOWN_CHARS
    assert shown("z" * (SHOWN_CHARS + 1)) == "z" * SHOWN_CHARS + "…"


def test_a_list_of_exactly_the_limit_is_quoted_item_by_item_and_one_more_by_its_size() -> None:
    """A shape or a few names quoted as they are, up to SHOWN_ITEMS inclusive."""
    assert shown(list(range(SHOWN_ITEMS))) == list(range(SHOWN_ITEMS))
    assert quoted(list(range(SHOWN_ITEMS))) == repr(list(range(SHOWN_ITEMS)))
    assert shown(list(range(SHOWN_ITEMS + 1))) == f"<a list of {SHOWN_ITEMS + 1} items>"
