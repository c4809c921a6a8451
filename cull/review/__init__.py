"""`cull review`: check and overrule cull's verdicts in the browser (or as a static contact sheet).

``load_session`` scans (from the cache) and builds the review; ``server.create_app`` serves it on
127.0.0.1 behind a random token; ``sheet.write_sheet`` writes the self-contained HTML sheet.
"""

from cull.review.items import Show
from cull.review.session import ReviewOptions, ReviewSession, load_session

__all__ = ["ReviewOptions", "ReviewSession", "Show", "load_session"]
