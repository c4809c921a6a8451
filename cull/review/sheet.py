"""`cull review PATH --html sheet.html`: a self-contained contact sheet, no server, no script.

Thumbnails, heat maps (drawn onto a reduced view) and the 100 % crops are embedded as ``data:``
URIs; a ``<meta>`` Content-Security-Policy forbids anything else (no script, no remote loads).
The file is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from cull.errors import CullError
from cull.fsutil import atomic_write_text
from cull.report import display_path
from cull.review.imaging import Detail, encode
from cull.review.session import ReviewSession

log = logging.getLogger(__name__)

SHEET_VIEW = 640  # long side of the heat-map picture in the sheet
CSS = """
body{margin:0;background:#16181c;color:#e6e6e6;font:14px/1.35 system-ui,sans-serif}
header{padding:.6em 1em;border-bottom:1px solid #333}h1{font-size:1.1em;margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:10px;padding:10px}
.card{background:#23262c;border-radius:6px;overflow:hidden}.card>img{display:block;width:100%;height:180px;object-fit:contain;background:#111}
.meta{padding:.35em .5em}.badge{border-radius:3px;padding:0 .35em;font-weight:600;color:#111}
.reject{background:#e0463c}.uncertain{background:#e6b422}.keep{background:#3fb950}.dim{color:#9aa0a6}
details{padding:0 .5em .5em}details img{display:block;max-width:100%;margin:.4em 0}
details img.crop{max-width:none;image-rendering:pixelated}.crops{overflow:auto}
.burst{grid-column:1/-1;display:flex;flex-wrap:wrap;gap:10px;padding:6px 8px 8px;border:1px dashed #4a5060;border-radius:8px}
.burst>.card{flex:0 0 240px}.burst>p{width:100%;margin:0}.best{background:#3fb950}
.protected{color:#e6e6e6;outline:1px dashed #3fb950;font-weight:400}
"""


def data_uri(data: bytes, media: str) -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


def heat_view(detail: Detail, side: int = SHEET_VIEW) -> bytes:
    """The view with its heat map drawn on, reduced to ``side``: one JPEG for the sheet."""
    view = Image.open(io.BytesIO(detail.view_jpeg)).convert("RGBA")
    layer = Image.open(io.BytesIO(detail.overlay_png)).convert("RGBA")
    merged = Image.alpha_composite(view, layer).convert("RGB")
    merged.thumbnail((side, side), Image.Resampling.LANCZOS)
    return encode(merged, quality=82)


def render_sheet(session: ReviewSession, progress: Callable[[], None] | None = None) -> str:
    """The contact sheet's HTML for the session's shown items (worst first)."""
    esc = html.escape
    cards: list[tuple[str | None, str]] = []  # (burst id, card)
    for item in session.items:
        facts = item.public()
        score = "no score" if item.score is None else f"score {item.score:.3f}"
        parts = [f'<span class="badge {esc(item.verdict)}">{esc(item.verdict)}</span>']
        if item.burst is not None:
            parts.insert(0, ('<span class="badge best">&#9733; best</span> ' if item.rank == 1 else "")
                         + f'<strong>#{item.rank}/{item.size}</strong>')
        if item.user:
            parts.append(f'<span class="badge {esc(item.user)}">you: {esc(item.user)}</span>')
        if item.protection_note:
            parts.append(f'<span class="badge protected">{esc(item.protection_note)}</span>')
        parts.append(f'<span class="dim">{esc(score)}{" · " + esc(item.kind) if item.kind else ""}'
                     f'{" · + " + esc(display_path(item.partner.name)) if item.partner else ""}</span>')
        # a name that is not UTF-8 (caf\xe9.jpg) is shown escaped, as on the terminal: the page is UTF-8
        name = display_path((facts["where"] + "/" if facts["where"] else "") + item.path.name)
        try:
            thumb = f'<img src="{data_uri(session.thumbnail(item.id), "image/jpeg")}" alt="{esc(name)}">'
            detail = session.detail(item.id)
            crops = "".join(
                f'<figure><img class="crop" src="{data_uri(encode(_png(c.png), quality=90), "image/jpeg")}" '
                f'width="{c.box[2] - c.box[0]}" height="{c.box[3] - c.box[1]}" alt="{c.which} region at 100 %">'
                f'<figcaption class="dim">{c.which} region, 100 %, patch score {c.score:.3f}</figcaption></figure>'
                for c in detail.crops
            )
            more = (f'<details><summary>heat map and 100 % crops</summary>'
                    f'<img src="{data_uri(heat_view(detail), "image/jpeg")}" alt="focus heat map: green sharp, red soft">'
                    f'<div class="crops">{crops}</div></details>')
        except CullError as exc:
            thumb, more = "", f'<p class="dim">cannot show: {esc(str(exc))}</p>'
        cards.append((item.burst, f'<div class="card" data-verdict="{esc(item.verdict)}">{thumb}<div class="meta">'
                     f'<div>{esc(name)}</div>{" ".join(parts)}<div class="dim">{esc(item.reason)}</div></div>{more}</div>'))
        if progress:
            progress()
    title = f"cull review: {len(session.items)} photos ({session.options.show.value}), model {session.card.version}"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><header><h1>{esc(title)}</h1></header>"
        f"<main class=\"grid\">{_grouped(cards) or '<p>Nothing to review.</p>'}</main></body></html>\n"
    )


def _grouped(cards: list[tuple[str | None, str]]) -> str:
    """The cards, the frames of each burst (listed together, sharpest first) in one box side by side."""
    out: list[str] = []
    index = 0
    while index < len(cards):
        burst, card = cards[index]
        if burst is None:
            out.append(card)
            index += 1
            continue
        frames = []
        while index < len(cards) and cards[index][0] == burst:
            frames.append(cards[index][1])
            index += 1
        out.append(f'<div class="burst" data-burst="{html.escape(burst)}"><p class="dim">burst of {len(frames)} frames, '
                   f'sharpest first</p>{"".join(frames)}</div>')
    return "".join(out)


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def write_sheet(session: ReviewSession, out: Path, progress: Callable[[], None] | None = None) -> int:
    """Write the sheet to ``out`` atomically. Returns its size in bytes. Raises OSError."""
    text = render_sheet(session, progress)
    existed = out.exists()
    atomic_write_text(out, text)
    if not existed:  # a new sheet gets the usual permissions for new files (the temp file was 0600)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(out, 0o666 & ~mask)
    return len(text.encode("utf-8"))
