"""`cull review`: check and overrule cull's verdicts in the browser (or as a static contact sheet).

``load_session`` scans (from the cache) and builds the review; ``server.create_app`` serves it on
127.0.0.1 behind a random token; ``sheet.write_sheet`` writes the self-contained HTML sheet.
The session (and with it the imaging and server code) is imported on first use, so the `cull`
command's other subcommands do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cull.review.items import Show

if TYPE_CHECKING:
    from cull.review.session import ReviewOptions, ReviewSession, load_session

__all__ = ["ReviewOptions", "ReviewSession", "Show", "load_session"]


def __getattr__(name: str) -> Any:
    if name in ("ReviewOptions", "ReviewSession", "load_session"):
        from cull.review import session

        return getattr(session, name)
    raise AttributeError(f"module 'cull.review' has no attribute {name!r}")
