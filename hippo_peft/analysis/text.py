"""Error messages that name the offenders: every one up to a readable length, then a count."""
from __future__ import annotations

MAX_LISTED = 30


def listing(items: list[str]) -> str:
    """``a, b, c`` -- or the first ``MAX_LISTED`` and ``... and N more``."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def line_listing(items: list[str]) -> str:
    """One item a line (indented two spaces after the first) -- the first ``MAX_LISTED``, then ``... and N more``."""
    items = [str(i) for i in items]
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return "\n  ".join(items[:MAX_LISTED]) + more
