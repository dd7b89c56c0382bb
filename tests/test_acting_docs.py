"""docs/acting.md: what it says of the catalogue is the catalogue."""

from __future__ import annotations


def test_the_acting_page_has_the_generated_catalogue() -> None:
    """docs/acting.md's command table is what `python -m moclo.catalogue_doc` renders from the
    catalogue, so a new command or a changed bound cannot be left out of the docs."""
    from moclo.catalogue_doc import ACTING_PAGE, main, with_table

    page = ACTING_PAGE.read_text()
    assert with_table(page) == page, "out of date: run python -m moclo.catalogue_doc"
    assert main(["--check"]) == 0
    assert "| `pacemaker` | `set_lower_rate`: " in page
    assert "`lower_rate_bpm` 40..90 (integer) | clinicians only |" in page
