"""cull review: the server's security (token, host, POST, CSP, ids only), decisions in XMP read back
by exiftool, undo, later scans keeping the user's decision, detail crops at full resolution, the sheet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from typer.testing import CliRunner

from conftest import blurred_image, save, sharp_image
from cull.cli import app as cli_app
from cull.review import ReviewOptions, Show, load_session
from cull.review.decisions import read_user_verdict, user_packet
from cull.review.items import build_items
from cull.review.server import RESTARTED, create_app
from cull.scan import ScanOptions
from cull.xmp import read_fields

TOKEN = "test-token-123"
ORIGIN = "http://127.0.0.1:8765"  # the test client talks to it
needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None and os.environ.get("CI") != "true",
    reason="exiftool not installed (.ci/run installs it)",
)


def exif_rating(path: Path) -> str:
    """exiftool's reading of xmp:Rating ('' when absent)."""
    out = subprocess.run(["exiftool", "-s3", "-n", "-XMP-xmp:Rating", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def exif_tag(path: Path, tag: str) -> str:
    out = subprocess.run(["exiftool", "-s3", "-n", f"-{tag}", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    save(sharp_image(0), root / "sharp.jpg", quality=95)
    save(blurred_image(1, 8.0), root / "blur.jpg", quality=92)
    save(blurred_image(2, 6.0), root / "sub" / "soft.png")
    return root


def session_for(root: Path, card, show: Show = Show.ALL):  # type: ignore[no-untyped-def]
    session, failures = load_session([root], card, ScanOptions(), ReviewOptions(show=show))
    assert failures == []
    return session


def open_page(app) -> tuple[TestClient, str]:  # type: ignore[no-untyped-def]
    """A client that opened the page by the printed address, and the session secret that page got."""
    client = TestClient(app, base_url=ORIGIN)
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200, page.text
    return client, re.search(r'name="cull-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def client_for(session) -> TestClient:  # type: ignore[no-untyped-def]
    """A client as the page is: the session secret in the X-Cull-Token header."""
    client, secret = open_page(create_app(session, TOKEN))
    client.headers["X-Cull-Token"] = secret
    return client


def by_name(session, name: str):  # type: ignore[no-untyped-def]
    return next(i for i in session.items if i.path.name == name)


def post(client: TestClient, url: str, body: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    return client.post(url, json=body or {})


# --- security ------------------------------------------------------------------------------------

def secret_in(page: str) -> str:
    return re.search(r'name="cull-token" content="([^"]*)"', page).group(1)  # type: ignore[union-attr]


def test_the_api_needs_the_secret_and_the_page_without_it_holds_none(library, card):
    """No cookie: the page without the secret and its static files hold nothing secret, so anyone past
    the Host check gets them (the page then says this tab has no access); every API request needs the
    secret the printed address handed to the page."""
    session = session_for(library, card)
    bare = TestClient(create_app(session, TOKEN), base_url=ORIGIN)
    for url in ("/api/items", "/api/thumb/0", "/api/detail/0"):
        assert bare.get(url).status_code == 401, url
    assert bare.get("/?token=wrong").status_code == 403
    assert secret_in(bare.get("/").text) == ""
    first = bare.get(f"/?token={TOKEN}", follow_redirects=False)
    assert first.status_code == 200 and "set-cookie" not in first.headers
    secret = secret_in(first.text)
    assert secret and secret != TOKEN
    for url in ("/", "/static/review.js", "/static/review.css"):
        answer = bare.get(url)
        assert answer.status_code == 200 and "set-cookie" not in answer.headers, url
        assert secret not in answer.text and TOKEN not in answer.text, url
    page = bare.get("/")
    assert secret_in(page.text) == ""
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and "onclick" not in page.text  # no inline script anywhere
    assert page.headers["x-frame-options"] == "DENY"
    assert bare.get("/api/items", headers={"X-Cull-Token": secret}).headers["content-security-policy"] == csp


def test_a_cookie_set_taken_or_absent_changes_nothing(library, card):
    """Cookies are not kept apart by port: any web server on 127.0.0.1 the browser visits could read,
    replace or delete one.  The review sets none and reads none: the tab holding the secret keeps
    working whatever its cookies are, and no cookie opens the API."""
    session = session_for(library, card)
    app = create_app(session, TOKEN)
    page, secret = open_page(app)
    for cookies in ({"cull_review_8765": "x"}, {"cull_review": secret}, {}):
        page.cookies.clear()
        for name, value in cookies.items():
            page.cookies.set(name, value)
        assert page.get("/").status_code == 200 and page.get("/static/review.js").status_code == 200
        assert page.get("/api/items", headers={"X-Cull-Token": secret}).status_code == 200
        assert page.get("/api/items").status_code == 401


def test_nothing_but_the_header_opens_the_api(library, card):
    """A local process or page without the secret reads no picture and makes no decision; the printed
    address opens the page once; the page's picture addresses are signed for their own path."""
    session = session_for(library, card)
    app = create_app(session, TOKEN)
    page, secret = open_page(app)
    curl = TestClient(app, base_url=ORIGIN)
    item = by_name(session, "blur.jpg")
    for url in ("/api/items", f"/api/thumb/{item.id}", f"/api/view/{item.id}", f"/api/detail/{item.id}",
                f"/api/crop/{item.id}/sharpest", f"/api/thumb/{item.id}?token={TOKEN}"):
        assert curl.get(url).status_code in (401, 403), url
    for header in ({}, {"X-Cull-Token": TOKEN}, {"X-Cull-Token": ""}):
        assert curl.post("/api/decide", json={"id": item.id, "decision": "reject"}, headers=header).status_code in (401, 403)
    assert item.user is None
    assert curl.get(f"/?token={TOKEN}").status_code == 403  # the address was used: it opens nothing again
    # the page's own picture addresses are signed: they need no header, and fit no other picture
    listed = page.get("/api/items", headers={"X-Cull-Token": secret}).json()["items"]
    thumb = next(row["thumb"] for row in listed if row["id"] == item.id)
    assert curl.get(thumb).status_code == 200
    other = next(row["id"] for row in listed if row["id"] != item.id)
    assert curl.get(thumb.replace(f"/thumb/{item.id}?", f"/thumb/{other}?")).status_code == 403
    assert curl.get(thumb.replace("/thumb/", "/view/")).status_code == 403
    assert curl.post(thumb.replace(f"/thumb/{item.id}", "/decide"), json={"id": item.id, "decision": "reject"}).status_code == 401


def test_a_tab_of_an_earlier_run_is_told_the_review_was_restarted(library, card):
    """cull review started again (the same --port): the old tab's secret is refused with a message the
    page shows as it is, and the earlier run's address is refused as not this run's."""
    session = session_for(library, card)
    _, old_secret = open_page(create_app(session, TOKEN))
    restarted = TestClient(create_app(session, "a-new-token"), base_url=ORIGIN)
    answer = restarted.get("/api/items", headers={"X-Cull-Token": old_secret})
    assert answer.status_code == 403 and answer.text == RESTARTED
    assert secret_in(restarted.get("/").text) == ""  # a reload still gets the page, which says so
    old_address = restarted.get(f"/?token={TOKEN}")
    assert old_address.status_code == 403 and "earlier run" in old_address.text


def test_foreign_host_names_are_refused(library, card):
    client = client_for(session_for(library, card))
    assert client.get("/api/items", headers={"host": "evil.example:8765"}).status_code == 403
    assert client.get("/api/items", headers={"host": "localhost:8765"}).status_code == 200


def test_files_are_served_by_id_only(library, card):
    session = session_for(library, card)
    client = client_for(session)
    assert client.get(f"/api/thumb/{session.items[0].id}").headers["content-type"] == "image/jpeg"
    for url in ("/api/thumb/999", "/api/thumb/-1", "/api/thumb/../../../etc/passwd", "/api/thumb/%2e%2e%2fetc%2fpasswd",
                "/api/view/..%2f..%2fsharp.jpg", "/static/..%2fserver.py", "/static/../__init__.py", "/static/index.html",
                "/api/crop/0/..%2f..%2fetc", f"/api/thumb/{library}/sharp.jpg", "/etc/passwd"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert b"cull" not in answer.content[:200] or answer.status_code == 404
    listing = client.get("/api/items").json()
    assert str(library) not in str(listing)  # the page never learns an absolute path


def test_symlink_escaping_the_roots_is_not_served(tmp_path, card):
    outside = save(sharp_image(1), tmp_path / "secret" / "private.jpg")
    root = tmp_path / "photos"
    save(blurred_image(0, 8.0), root / "blur.jpg")
    (root / "link.jpg").symlink_to(outside)
    session = session_for(root, card)
    assert [i.path.name for i in session.all_items] == ["blur.jpg"]
    assert build_items([], [root]) == []
    client = client_for(session)
    blur = session.all_items[0]
    assert client.get(f"/api/thumb/{blur.id}").status_code == 200
    (root / "blur.jpg").unlink()  # swapped for a link to a private file after the scan
    (root / "blur.jpg").symlink_to(outside)
    assert client.get(f"/api/detail/{blur.id}").status_code == 404
    assert client.get(f"/api/thumb/{blur.id}").status_code == 404
    before = outside.read_bytes()
    answer = post(client, "/api/decide", {"id": blur.id, "decision": "reject"})  # nor written into
    assert answer.status_code == 404 and outside.read_bytes() == before
    assert not (tmp_path / "secret" / "private.jpg.xmp").exists() and not (root / "blur.jpg.xmp").exists()


def test_odd_or_huge_request_bodies_are_refused_not_a_server_error(library, card):
    session = session_for(library, card)
    client = client_for(session)
    headers = {"Content-Type": "application/json"}
    for body in ('{"id": true, "decision": "reject"}', '{"id": 0.9, "decision": "reject"}',
                 '{"id": "0", "decision": "reject"}', '{"id": 1e400, "decision": "reject"}',
                 '{"id": Infinity, "decision": "reject"}', "[" * 100_000 + "]" * 100_000, "[1, 2]", "nonsense"):
        answer = client.post("/api/decide", content=body, headers=headers)
        assert answer.status_code in (400, 413), (body[:40], answer.status_code)
    assert client.post("/api/keep-best", content='{"id": false}', headers=headers).status_code == 400
    huge = client.post("/api/decide", content=b"{" + b" " * (1 << 20) + b"}", headers=headers)
    assert huge.status_code == 413
    assert all(item.user is None for item in session.all_items)  # nothing was decided


def test_only_the_pages_own_requests_keep_the_server_from_idling_out(library, card):
    """Requests without the token (any local process or web page can knock) must not keep a forgotten
    review running for ever: they do not reset the idle clock."""
    app = create_app(session_for(library, card), TOKEN)
    now = [100.0]
    app.clock = lambda: now[0]
    app.last_seen = now[0]
    stranger = TestClient(app, base_url=ORIGIN)
    now[0] = 200.0
    assert stranger.get("/api/items").status_code == 401
    assert stranger.get("/").status_code == 200 and stranger.get("/static/review.js").status_code == 200  # no secret in them
    assert app.last_seen == 100.0
    friend, secret = open_page(app)
    now[0] = 300.0
    assert friend.get("/").status_code == 200 and app.last_seen == 200.0  # the page without the secret: anyone gets it
    assert friend.get("/api/items", headers={"X-Cull-Token": secret}).status_code == 200 and app.last_seen == 300.0


def test_state_changes_need_post_with_the_token_header(library, card):
    session = session_for(library, card)
    client = client_for(session)
    item = by_name(session, "blur.jpg")
    assert client.get("/api/decide").status_code == 405
    secret = client.headers.pop("X-Cull-Token")
    assert client.post("/api/decide", json={"id": item.id, "decision": "reject"}).status_code == 401
    assert client.post("/api/decide", json={"id": item.id, "decision": "reject"}, headers={"X-Cull-Token": "x"}).status_code == 403
    client.headers["X-Cull-Token"] = secret
    cross = client.post("/api/decide", json={"id": item.id, "decision": "reject"}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    assert client.post("/api/decide", json={"id": item.id, "decision": "reject"}, headers={"X-Cull-Token": "x"}).text == RESTARTED
    assert not (library / "blur.jpg.xmp").exists() or read_user_verdict(library / "blur.jpg") is None
    assert post(client, "/api/decide", {"id": item.id, "decision": "delete"}).status_code == 400
    assert post(client, "/api/decide", {"id": 999, "decision": "keep"}).status_code == 404
    assert post(client, "/api/decide", {"id": item.id, "decision": "reject"}).status_code == 200


def test_only_the_page_s_own_origin_may_call_the_api(library, card):
    """The Origin must be the page's own, scheme, host and port, as the request's Host names it:
    another server on 127.0.0.1 (another port) is another origin."""
    session = session_for(library, card)
    client = client_for(session)
    item = by_name(session, "blur.jpg")
    decide = {"id": item.id, "decision": "reject"}
    for origin in ("http://evil.example", "http://localhost:9999", "http://127.0.0.1:1", "https://127.0.0.1:8765",
                   "evil://localhost:0", "null", "http://127.0.0.1", "http://localhost:8765", "http://127.0.0.1:8765.evil.example"):
        for method, url in (("POST", "/api/decide"), ("POST", "/api/undo"), ("GET", "/api/items")):
            answer = client.request(method, url, json=decide if url == "/api/decide" else None, headers={"Origin": origin})
            assert answer.status_code == 403, (origin, url)
    assert item.user is None
    localhost = {"host": "localhost:8765"}
    assert client.post("/api/decide", json=decide, headers={**localhost, "Origin": "http://127.0.0.1:8765"}).status_code == 403
    assert client.post("/api/decide", json=decide, headers={**localhost, "Origin": "http://localhost:8765"}).status_code == 200
    assert client.post("/api/undo", headers={"Origin": ORIGIN}).status_code == 200
    assert client.post("/api/decide", json=decide).status_code == 200  # no Origin (not a browser): the secret suffices


# --- decisions -----------------------------------------------------------------------------------

@needs_exiftool
def test_decisions_land_in_xmp_and_undo_restores_the_sidecar(library, card):
    session = session_for(library, card)
    client = client_for(session)
    sharp, blur = by_name(session, "sharp.jpg"), by_name(session, "blur.jpg")
    sharp_xmp, blur_xmp = library / "sharp.jpg.xmp", library / "blur.jpg.xmp"
    blur_before = blur_xmp.read_bytes() if blur_xmp.exists() else None

    answer = post(client, "/api/decide", {"id": blur.id, "decision": "reject"})
    assert answer.json()["item"]["user"] == "reject"
    assert exif_rating(blur_xmp) == "-1"
    assert exif_tag(blur_xmp, "XMP-digiKam:PickLabel") == "1"
    post(client, "/api/decide", {"id": sharp.id, "decision": "keep"})
    assert exif_tag(sharp_xmp, "XMP-xmpDM:Pick") == "1" and exif_rating(sharp_xmp) == ""

    assert post(client, "/api/undo").json()["item"]["id"] == sharp.id
    assert not sharp_xmp.exists()  # the sidecar the decision created is gone again
    assert post(client, "/api/undo").json()["item"]["id"] == blur.id
    assert (blur_xmp.read_bytes() if blur_xmp.exists() else None) == blur_before
    assert post(client, "/api/undo").json()["item"] is None
    assert by_name(session, "blur.jpg").user is None


def test_undo_leaves_a_sidecar_changed_since(library, card):
    session = session_for(library, card)
    client = client_for(session)
    blur = by_name(session, "blur.jpg")
    post(client, "/api/decide", {"id": blur.id, "decision": "reject"})
    sidecar = library / "blur.jpg.xmp"
    edited = sidecar.read_bytes().replace(b"UserVerdict", b"UserVerdict", 1) + b"\n"
    sidecar.write_bytes(edited)
    problems = post(client, "/api/undo").json()["problems"]
    assert problems and "changed since" in problems[0]
    assert sidecar.read_bytes() == edited


@needs_exiftool
def test_a_later_scan_keeps_the_users_decisions(library, card):
    session = session_for(library, card)
    client = client_for(session)
    sharp, blur = by_name(session, "sharp.jpg"), by_name(session, "blur.jpg")
    assert (sharp.verdict, blur.verdict) == ("keep", "reject")
    post(client, "/api/decide", {"id": blur.id, "decision": "keep"})  # the user overrules a reject
    post(client, "/api/decide", {"id": sharp.id, "decision": "reject"})  # and rejects a photo cull kept

    result = CliRunner().invoke(cli_app, ["scan", str(library), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert exif_rating(library / "blur.jpg.xmp") == ""  # still not rejected
    assert exif_tag(library / "blur.jpg.xmp", "XMP-xmpDM:Pick") == "1"
    assert exif_rating(library / "sharp.jpg.xmp") == "-1"  # still rejected, though cull says keep
    assert read_user_verdict(library / "blur.jpg") == "keep"

    from cull.review.decisions import apply_user_verdicts
    from cull.scan import scan

    rescanned = {r.path.name: r for r in apply_user_verdicts(scan([library], card, ScanOptions()).results)}
    assert rescanned["blur.jpg"].verdict.value == "keep" and "cull said reject" in rescanned["blur.jpg"].decision.reason
    assert rescanned["sharp.jpg"].verdict.value == "reject"
    assert rescanned["soft.png"].decision.reason == by_name(session, "soft.png").reason  # undecided: as cull said

    again = session_for(library, card, Show.FLAGGED)
    names = [i.path.name for i in again.items]
    assert "blur.jpg" not in names  # a photo the user kept is never flagged again
    assert "sharp.jpg" in names and by_name(again, "sharp.jpg").user == "reject"



def test_a_reject_the_user_rated_says_so_on_the_page_and_the_sheet(library, card, tmp_path):
    """cull says reject, the user's 4 stars keep it out of the XMP (scan prints a conflict line): the
    grid, the detail and the contact sheet say so too, until the user decides for the photo."""
    (library / "blur.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/>'
        '</rdf:RDF></x:xmpmeta>')
    session = session_for(library, card, Show.FLAGGED)
    client = client_for(session)
    listed = {i["name"]: i for i in client.get("/api/items").json()["items"]}
    assert listed["blur.jpg"]["verdict"] == "reject"
    assert listed["blur.jpg"]["protected"] == "not marked rejected: you rated it 4 stars"
    assert listed["soft.png"]["protected"] is None  # nothing of the user's there
    answer = post(client, "/api/decide", {"id": by_name(session, "blur.jpg").id, "decision": "uncertain"})
    assert answer.status_code == 200 and answer.json()["item"]["protected"] is None  # the user's call shows instead
    post(client, "/api/undo")
    listed = {i["name"]: i for i in client.get("/api/items").json()["items"]}
    assert listed["blur.jpg"]["protected"] == "not marked rejected: you rated it 4 stars"

    sheet = tmp_path / "sheet.html"
    result = CliRunner().invoke(cli_app, ["review", str(library), "--html", str(sheet), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert sheet.read_text().count('class="badge protected">not marked rejected: you rated it 4 stars<') == 1

    rejected = post(client, "/api/decide", {"id": by_name(session, "blur.jpg").id, "decision": "reject"})
    assert rejected.json()["item"]["protected"] is None  # the user's own reject replaced the 4 stars
    xmp = (library / "blur.xmp").read_text()
    (library / "blur.xmp").write_text(xmp.replace('xmp:Rating="-1"', 'xmp:Rating="3"'))  # rated again in darktable
    again = session_for(library, card, Show.FLAGGED)
    listed = {i["name"]: i for i in client_for(again).get("/api/items").json()["items"]}
    assert listed["blur.jpg"]["user"] == "reject"
    assert listed["blur.jpg"]["protected"] == "not marked rejected: you rated it 3 stars"  # move leaves it

def test_user_packet_keeps_foreign_fields_and_survives_clear():
    from cull.xmp import Verdict, clear, merge

    foreign = (Path(__file__).parent / "data" / "xmp" / "darktable.xmp").read_bytes()
    scanned = merge(foreign, Verdict("uncertain", 0.4, "defocus", "m")).packet
    decided = user_packet(scanned, "reject")
    fields = read_fields(decided)
    assert fields["xmp:Rating"] == "-1" and fields["cull:Verdict"] is None and fields["xmp:Label"] is None
    assert b"darktable:history" in decided  # the edit history is kept
    assert clear(decided) == decided  # `cull xmp clear` leaves the user's own decision alone
    kept = read_fields(user_packet(decided, "keep"))  # darktable's own xmp:Rating="0" (unrated) comes back
    assert kept["xmp:Rating"] == "0" and kept["xmpDM:pick"] == "1" and kept["digiKam:PickLabel"] == "3"
    unsure = read_fields(user_packet(decided, "uncertain"))
    assert unsure["xmp:Rating"] == "0" and unsure["xmpDM:pick"] is None and unsure["digiKam:PickLabel"] == "2"
    with pytest.raises(ValueError):
        user_packet(None, "delete")


def test_a_rating_or_pick_the_user_set_comes_back_after_a_reject_made_in_review():
    """X on a photo the user rated 5 stars and picked in Lightroom, then P or U: the 5 stars and the pick
    are the user's again (the reject's -1 used to be removed, leaving no rating at all)."""
    from cull.xmp import Packet, RATING, PICK

    users = Packet(None)
    users.set(RATING, "5")
    users.set(PICK, "1")
    rejected = user_packet(users.serialize(), "reject")
    assert read_fields(rejected)["xmp:Rating"] == "-1"
    again = user_packet(rejected, "reject")  # a second X keeps the first prior, not the -1
    for decision in ("keep", "uncertain"):
        fields = read_fields(user_packet(again, decision))
        assert fields["xmp:Rating"] == "5", decision
    assert read_fields(user_packet(again, "uncertain"))["xmpDM:pick"] is None  # U: no pick either way
    assert read_fields(user_packet(user_packet(again, "uncertain"), "keep"))["xmp:Rating"] == "5"


def test_show_filters_and_orders_worst_first(library, card):
    flagged = session_for(library, card, Show.FLAGGED)
    verdicts = [i.verdict for i in flagged.items]
    assert "keep" not in verdicts and verdicts == sorted(verdicts, key=["reject", "uncertain"].index)
    scores = [i.score for i in flagged.items if i.verdict == "reject"]
    assert scores == sorted(scores)
    assert [i.verdict for i in session_for(library, card, Show.REJECTS).items] == ["reject"] * verdicts.count("reject")
    assert len(session_for(library, card, Show.ALL).items) == 3


# --- pictures ------------------------------------------------------------------------------------

def test_detail_crops_are_real_full_resolution_pixels(tmp_path, card):
    root = tmp_path / "photos"
    save(sharp_image(0, scale=3.6), root / "big.jpg", quality=95)  # 1800 px: larger than the analysis scale
    big = Image.open(root / "big.jpg").convert("RGB")  # the decoded pixels the crops must show
    session = session_for(root, card)
    client = client_for(session)
    info = client.get(f"/api/detail/{session.items[0].id}").json()
    assert max(info["width"], info["height"]) <= card.analysis.long_side < max(info["full"])
    assert {c["which"] for c in info["crops"]} == {"sharpest", "softest"}
    source = np.asarray(big)
    for crop in info["crops"]:
        png = Image.open(__import__("io").BytesIO(client.get(crop["url"]).content))
        left, top, right, bottom = crop["box"]
        assert png.size == (right - left, bottom - top)
        assert np.array_equal(np.asarray(png.convert("RGB")), source[top:bottom, left:right])
    sharpest = next(c for c in info["crops"] if c["which"] == "sharpest")
    softest = next(c for c in info["crops"] if c["which"] == "softest")
    assert sharpest["score"] >= softest["score"]
    overlay = Image.open(__import__("io").BytesIO(client.get(info["overlay"]).content))
    assert overlay.mode == "RGBA" and overlay.size == (info["width"], info["height"])
    alpha = np.asarray(overlay)[..., 3]
    assert 0 < (alpha > 0).mean() < 1  # patches coloured, the rest transparent
    assert client.get(f"/api/thumb/{session.items[0].id}").headers["content-type"] == "image/jpeg"


def test_unreadable_photo_detail_is_an_answer_not_a_crash(library, card):
    session = session_for(library, card)
    client = client_for(session)
    item = by_name(session, "blur.jpg")
    item.path.write_bytes(b"not a jpeg any more")
    answer = client.get(f"/api/thumb/{item.id}")
    assert answer.status_code == 422 and "cannot show" in answer.text


# --- CLI -----------------------------------------------------------------------------------------

def test_html_sheet_is_self_contained(library, tmp_path):
    out = tmp_path / "sheet.html"
    result = CliRunner().invoke(cli_app, ["review", str(library), "--html", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.count('class="card"') == 2  # flagged: the two blurred photos
    assert "data:image/jpeg;base64," in text and "heat map" in text and 'class="crop"' in text
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)  # nothing loaded from anywhere
    assert "<script" not in text and "default-src 'none'" in text
    assert len(text) < 3_000_000
    assert not list(tmp_path.glob(".sheet.html.*"))  # atomic write left no temp file
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    bad = CliRunner().invoke(cli_app, ["review", str(library), "--html", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(cli_app, ["review", str(library), "--html", str(tmp_path / "nowhere" / "s.html")])
    assert missing.exit_code == 2 and "folder" in missing.output and "does not exist" in missing.output
    assert "scanning" not in missing.output  # refused before any work, as scan --report is


def test_cli_prints_the_address_first_and_stops_when_idle(library):
    env = {**os.environ, "CULL_CACHE_DIR": os.environ["CULL_CACHE_DIR"]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cull", "review", str(library), "--no-browser", "--port", "0",
         "--idle-timeout", "0.02", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{40,}\n", first), first
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "idle" in proc.stderr.read()  # type: ignore[union-attr]


@needs_exiftool
def test_a_decision_covers_the_whole_raw_jpeg_shot(tmp_path, card):
    root = tmp_path / "photos"
    save(blurred_image(0, 8.0), root / "IMG_0001.JPG", quality=92)
    (root / "IMG_0001.CR2").write_bytes(b"raw stand-in: the shot is scored through its JPEG")
    session = session_for(root, card)
    item = session.all_items[0]
    assert item.partner is not None and item.partner.name == "IMG_0001.CR2"
    assert client_for(session).get("/api/items").json()["items"][0]["partner"] == "IMG_0001.CR2"
    post(client_for(session), "/api/decide", {"id": item.id, "decision": "keep"})
    assert exif_tag(root / "IMG_0001.xmp", "XMP-xmpDM:Pick") == "1"  # Lightroom's sidecar of the RAW
    assert exif_tag(root / "IMG_0001.JPG.xmp", "XMP-xmpDM:Pick") == "1"  # darktable's of the JPEG
    assert read_user_verdict(root / "IMG_0001.CR2", root / "IMG_0001.JPG") == "keep"


def test_a_read_only_sidecar_refuses_the_decision_and_changes_nothing(library, card):
    session = session_for(library, card)
    blur = by_name(session, "blur.jpg")
    sidecar = library / "blur.jpg.xmp"
    if not sidecar.exists():
        sidecar.write_bytes(user_packet(None, "uncertain"))
    before = sidecar.read_bytes()
    sidecar.chmod(0o444)
    answer = post(client_for(session), "/api/decide", {"id": blur.id, "decision": "reject"})
    assert answer.status_code == 409 and "read-only" in answer.json()["error"]
    assert sidecar.read_bytes() == before and blur.user is None
    assert post(client_for(session), "/api/undo").json()["item"] is None  # nothing was recorded


@needs_exiftool
def test_a_verdict_embedded_by_scan_is_overruled_inside_the_photo_too(library, card):
    pytest.importorskip("pyexiv2")
    result = CliRunner().invoke(cli_app, ["scan", str(library), "--workers", "1", "--embed"])
    assert result.exit_code == 0, result.output
    photo = library / "blur.jpg"
    assert exif_rating(photo) == "-1"  # cull's reject, inside the JPEG
    session = session_for(library, card)
    client = client_for(session)
    post(client, "/api/decide", {"id": by_name(session, "blur.jpg").id, "decision": "keep"})
    assert exif_rating(photo) == "" and exif_tag(photo, "XMP-xmpDM:Pick") == "1"
    assert exif_tag(library / "blur.jpg.xmp", "XMP-xmpDM:Pick") == "1"
    assert post(client, "/api/undo").json()["problems"] == []
    assert exif_rating(photo) == "-1" and not (library / "blur.jpg.xmp").exists()


def test_a_decision_on_a_shot_judged_by_its_raw_goes_to_the_sidecars(tmp_path):
    """A damaged JPEG judged by its RAW partner: exiv2 cannot read the JPEG, so every decision on the shot
    (and B on any burst holding it) failed with "cannot read embedded XMP".  cull never wrote into it, so
    the decision goes to the sidecars; a damaged file cull had embedded a verdict in is still refused."""
    pytest.importorskip("pyexiv2")
    from cull.review.decisions import DecisionError, read_user_verdict, user_packet, write_decision
    from cull.sidecars import XmpOptions

    jpeg, raw = tmp_path / "DC50.jpg", tmp_path / "DC50.KDC"
    jpeg.write_bytes(b"\xff\xd8\xff broken")
    raw.write_bytes(b"a raw file")
    write_decision([raw, jpeg], "reject", XmpOptions())
    assert read_user_verdict(jpeg) == "reject" and read_user_verdict(raw) == "reject"
    jpeg.write_bytes(b"\xff\xd8\xff broken " + user_packet(None, "keep"))  # cull's fields inside it
    with pytest.raises(DecisionError, match="DC50.jpg: cannot read embedded XMP"):
        write_decision([jpeg], "uncertain", XmpOptions())


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_server(library, stop):
    import signal
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "cull", "review", str(library), "--no-browser", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        for _ in range(100):  # wait until it answers (the address is printed just before it listens)
            try:
                with urllib.request.urlopen(url.split("?")[0], timeout=5) as answer:  # the page without the secret
                    assert answer.status == 200
                break
            except OSError:
                import time
                time.sleep(0.1)
        proc.send_signal(getattr(signal, stop))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"stopped ({ {'SIGINT': 'Ctrl-C', 'SIGTERM': 'SIGTERM'}[stop] })" in proc.stderr.read()  # type: ignore[union-attr]


@needs_exiftool
def test_a_later_scan_keeps_a_photo_the_user_left_uncertain(library, card):
    session = session_for(library, card)
    blur = by_name(session, "blur.jpg")
    assert blur.verdict == "reject"
    post(client_for(session), "/api/decide", {"id": blur.id, "decision": "uncertain"})
    assert exif_rating(library / "blur.jpg.xmp") == ""
    CliRunner().invoke(cli_app, ["scan", str(library), "--workers", "1"])
    assert exif_rating(library / "blur.jpg.xmp") == ""  # not rejected behind the user's back


def test_the_browser_is_opened_without_the_token_on_its_command_line(tmp_path, monkeypatch):
    from cull.review import run

    opened: list[str] = []
    monkeypatch.setattr(run.webbrowser, "open", lambda target: opened.append(target))
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    run._open("http://127.0.0.1:5000/?token=SECRET", folder)
    assert opened and opened[0].startswith("file://") and "SECRET" not in opened[0]
    page = Path(opened[0][len("file://"):])
    assert "SECRET" in page.read_text() and folder.stat().st_mode & 0o077 == 0


# --- bursts (cull review --bursts) -----------------------------------------------------------------

BURST = ["burst_0.jpg", "burst_1.jpg", "burst_2.jpg"]  # burst_1 is the sharp frame


def make_burst_library(root: Path) -> Path:
    """One burst of three frames of a scene (small shifts, 0.3 s apart in EXIF; the middle one sharp,
    the others defocused), a lone blurred photo and a lone sharp one (no EXIF time)."""
    from PIL import ImageFilter

    base = sharp_image(2)
    width, height = base.size
    for index, (dx, blur) in enumerate([(0, 4.0), (6, 0.0), (12, 8.0)]):
        frame = base.crop((16 + dx, 16, width - 16 + dx, height - 16))
        if blur:
            frame = frame.filter(ImageFilter.GaussianBlur(blur))
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Canon", "EOS R6"
        exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:11:12"
        exif.get_ifd(0x8769)[0x9291] = str(index * 3)
        root.mkdir(parents=True, exist_ok=True)
        frame.save(root / BURST[index], quality=92, exif=exif)
    save(blurred_image(1, 8.0), root / "lone_blur.jpg", quality=92)
    save(sharp_image(0), root / "lone_sharp.jpg", quality=92)
    return root


@pytest.fixture()
def bursts(tmp_path: Path) -> Path:
    return make_burst_library(tmp_path / "bursts")


def burst_session(root: Path, card, show: Show = Show.FLAGGED):  # type: ignore[no-untyped-def]
    session, failures = load_session([root], card, ScanOptions(bursts=True), ReviewOptions(show=show))
    assert failures == []
    return session


def test_burst_frames_are_listed_together_sharpest_first_placed_by_the_worst(bursts, card):
    plain = session_for(bursts, card, Show.FLAGGED)
    assert "burst_1.jpg" not in [i.path.name for i in plain.items]  # without --bursts: a sharp photo, not shown
    assert all(i.burst is None for i in plain.all_items)

    session = burst_session(bursts, card)
    listing = client_for(session).get("/api/items").json()
    names = [row["name"] for row in listing["items"]]
    assert "lone_sharp.jpg" not in names and "lone_blur.jpg" in names
    frames = [row for row in listing["items"] if row["burst"] is not None]
    assert [row["name"] for row in frames][0] == "burst_1.jpg"  # the whole burst, its kept best frame too
    assert sorted(row["name"] for row in frames) == BURST
    assert [row["burst_rank"] for row in frames] == [1, 2, 3] and {row["burst_size"] for row in frames} == {3}
    assert len({row["burst"] for row in frames}) == 1 and listing["bursts"] == 1
    start = names.index(frames[0]["name"])
    assert names[start : start + 3] == [row["name"] for row in frames]  # side by side
    lone = by_name(session, "lone_blur.jpg")
    worst = min(i.score for i in session.items if i.burst is not None)
    assert (names.index("lone_blur.jpg") < start) == (lone.score < worst)  # placed by its worst frame
    detail = client_for(session).get(f"/api/detail/{by_name(session, 'burst_2.jpg').id}").json()
    assert [(f["name"], f["burst_rank"]) for f in detail["burst"]] == [(row["name"], row["burst_rank"]) for row in frames]
    assert all(f["thumb"].startswith("/api/thumb/") for f in detail["burst"])
    assert client_for(session).get(f"/api/detail/{lone.id}").json()["burst"] == []


@needs_exiftool
def test_keep_best_keeps_the_sharpest_frame_flags_the_rest_and_undo_restores_all(bursts, card):
    foreign = (Path(__file__).parent / "data" / "xmp" / "darktable.xmp").read_bytes()
    (bursts / "burst_2.jpg.xmp").write_bytes(foreign)  # an existing sidecar with someone else's fields
    before = {p.name: p.read_bytes() for p in bursts.glob("*.xmp")}
    session = burst_session(bursts, card)
    client = client_for(session)
    worst = next(i for i in session.items if i.burst is not None and i.rank == 3)
    assert worst.verdict == "reject"
    answer = post(client, "/api/keep-best", {"id": worst.id})  # B on any frame of the burst
    assert answer.status_code == 200, answer.text
    rows = answer.json()["items"]
    assert [(r["burst_rank"], r["user"]) for r in rows] == [(1, "keep"), (2, "uncertain"), (3, "uncertain")]
    best = rows[0]["name"]
    assert best == "burst_1.jpg"
    assert exif_tag(bursts / f"{best}.xmp", "XMP-xmpDM:Pick") == "1"
    assert exif_tag(bursts / f"{best}.xmp", "XMP-digiKam:PickLabel") == "3"
    for row in rows[1:]:
        sidecar = bursts / f"{row['name']}.xmp"
        assert exif_tag(sidecar, "XMP-digiKam:PickLabel") == "2"  # uncertain, never reject
        assert exif_tag(sidecar, "XMP-xmpDM:Pick") == "" and exif_rating(sidecar) != "-1"
        assert read_user_verdict(bursts / row["name"]) == "uncertain"
    assert b"darktable:history" in (bursts / "burst_2.jpg.xmp").read_bytes()
    assert answer.json()["undo"] == 1  # one step
    assert post(client, "/api/keep-best", {"id": by_name(session, "lone_blur.jpg").id}).status_code == 400
    assert post(client, "/api/keep-best", {"id": 999}).status_code == 404
    client.headers.pop("X-Cull-Token")
    assert client.post("/api/keep-best", json={"id": worst.id}).status_code == 401  # token header needed
    client = client_for(session)

    undone = post(client, "/api/undo").json()
    assert sorted(r["name"] for r in undone["items"]) == BURST and undone["problems"] == [] and undone["undo"] == 0
    assert {p.name: p.read_bytes() for p in bursts.glob("*.xmp")} == before  # byte-identical, created ones gone
    assert all(i.user is None for i in session.items)


def test_keep_best_keeps_the_best_frame_cull_kept_not_an_uncertain_rank_1(bursts, card):
    """As `scan --keep-best`: rank 1 can be a frame soft everywhere that cull left uncertain, beside a
    kept frame with a sharp subject; B keeps the kept one."""
    session = burst_session(bursts, card)
    frames = sorted((i for i in session.items if i.burst is not None), key=lambda i: i.rank)
    frames[0].verdict, frames[1].verdict = "uncertain", "keep"
    done = session.keep_best(frames[2].id)
    assert [(f.rank, f.user) for f in done] == [(1, "uncertain"), (2, "keep"), (3, "uncertain")]
    session.undo()
    # the user's own decisions come first: rank 1 kept by hand, rank 2 rejected by hand
    frames[0].user, frames[1].user = "keep", "reject"
    done = session.keep_best(frames[2].id)
    assert [(f.rank, f.user) for f in done] == [(1, "keep"), (2, "uncertain"), (3, "uncertain")]


def test_keep_best_that_fails_part_way_writes_nothing(bursts, card):
    session = burst_session(bursts, card)
    sidecar = bursts / "burst_2.jpg.xmp"
    sidecar.write_bytes(user_packet(None, "uncertain"))
    sidecar.chmod(0o444)
    answer = post(client_for(session), "/api/keep-best", {"id": by_name(session, "burst_1.jpg").id})
    assert answer.status_code == 409 and "read-only" in answer.json()["error"]
    assert sorted(p.name for p in bursts.glob("*.xmp")) == ["burst_2.jpg.xmp"]  # the frames before it put back
    assert session.undo_depth == 0 and all(i.user is None for i in session.items if i.path.name != "burst_2.jpg")


def burst_boxes(text: str) -> list[str]:
    """The HTML inside each <div class="burst"> of ``text`` (divs balanced)."""
    boxes = []
    for opening in re.finditer(r'<div class="burst"[^>]*>', text):
        depth = 1
        for tag in re.finditer(r"<div\b|</div>", text[opening.end():]):
            depth += 1 if tag.group() == "<div" else -1
            if depth == 0:
                boxes.append(text[opening.end() : opening.end() + tag.start()])
                break
    return boxes


def test_html_sheet_groups_bursts(bursts, tmp_path):
    out = tmp_path / "sheet.html"
    result = CliRunner().invoke(cli_app, ["review", str(bursts), "--bursts", "--html", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    groups = burst_boxes(text)
    assert len(groups) == 1 and groups[0].count('class="card"') == 3 and groups[0].count("best</span>") == 1
    assert groups[0].index("burst_1.jpg") < groups[0].index("#2/3") < groups[0].index("#3/3")  # sharpest first
    assert text.count('class="card"') == 4  # the burst (3) and the lone blurred photo
    assert CliRunner().invoke(cli_app, ["review", str(bursts), "--bursts", "--burst-gap", "-1"]).exit_code == 2


def test_overlapping_patches_show_the_sharper_one_on_top():
    """With a half-stride tile grid, patches overlap: where they do, the heat map shows the sharper."""
    from cull.review.imaging import heat_colour, overlay

    origins = np.array([[0, 0], [32, 32], [0, 64]], np.int32)
    for values in ([0.9, 0.1, 0.5], [0.1, 0.9, 0.5]):
        scores = [float(v) for v in np.array(values, np.float32)]
        layer = np.asarray(overlay((128, 160), origins, np.array(scores, np.float32), 64))
        sharper = int(np.argmax(scores[:2]))
        assert tuple(layer[48, 48, :3]) == heat_colour(scores[sharper])  # inside both of the first two
        assert tuple(layer[5, 5, :3]) == heat_colour(scores[0]) and tuple(layer[90, 90, :3]) == heat_colour(scores[1])


# --- what an attack review found --------------------------------------------------------------------

def _sidecar_with(**fields: str) -> bytes:
    from cull.xmp import Packet

    packet = Packet(None)
    for name, value in fields.items():
        prefix, _, local = name.partition("_")
        packet.set((prefix, local), value)
    return packet.serialize()


def _set(data: bytes, prop: tuple[str, str], value: str) -> bytes:
    from cull.xmp import Packet

    packet = Packet(data)
    packet.set(prop, value)
    return packet.serialize()


def test_a_decision_never_puts_back_an_old_rating_over_one_the_user_set_since():
    """X on a photo rated 1 star, the user re-rates it 4 stars in darktable, then P: the 4 stars stay
    (the prior 1 star used to be put back, lowering the user's rating)."""
    from cull.xmp import LABEL, RATING

    rejected = user_packet(_sidecar_with(xmp_Rating="1"), "reject")
    rerated = _set(rejected, RATING, "4")
    for decision in ("keep", "uncertain", "reject"):
        fields = read_fields(user_packet(rerated, decision))
        assert fields["xmp:Rating"] == ("-1" if decision == "reject" else "4"), decision
    assert read_fields(user_packet(user_packet(rerated, "reject"), "keep"))["xmp:Rating"] == "4"  # the user's 4 is the prior now
    relabelled = _set(user_packet(None, "uncertain"), LABEL, "Green")  # U's Yellow, then the user's own Green
    assert read_fields(user_packet(relabelled, "keep"))["xmp:Label"] == "Green"


def test_u_then_p_or_x_takes_cull_s_uncertain_label_away_again():
    for decision in ("keep", "reject"):
        fields = read_fields(user_packet(user_packet(None, "uncertain"), decision))
        assert fields["xmp:Label"] is None and fields["digiKam:PickLabel"] == {"keep": "3", "reject": "1"}[decision]
    red = _sidecar_with(xmp_Label="Red")
    assert read_fields(user_packet(user_packet(red, "uncertain"), "keep"))["xmp:Label"] == "Red"  # the user's own label stays
    fields = read_fields(user_packet(user_packet(user_packet(None, "uncertain"), "keep"), "uncertain"))
    assert fields["xmp:Label"] == "Yellow" and fields["xmpDM:pick"] is None


@needs_exiftool
def test_a_rating_the_user_changed_between_two_decisions_survives_them(library, card):
    sidecar = library / "blur.jpg.xmp"
    sidecar.write_bytes(_sidecar_with(xmp_Rating="1"))
    session = session_for(library, card)
    client = client_for(session)
    blur = by_name(session, "blur.jpg")
    post(client, "/api/decide", {"id": blur.id, "decision": "reject"})
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-xmp:Rating=4", str(sidecar)], check=True)
    post(client, "/api/decide", {"id": blur.id, "decision": "keep"})
    assert exif_rating(sidecar) == "4" and exif_tag(sidecar, "XMP-xmpDM:Pick") == "1"


def test_a_decision_on_a_photo_moved_or_deleted_since_is_refused_and_writes_nothing(library, card):
    session = session_for(library, card)
    client = client_for(session)
    blur = by_name(session, "blur.jpg")
    (library / "_culled").mkdir()
    (library / "blur.jpg").rename(library / "_culled" / "blur.jpg")  # cull move --rejects, while the page is open
    answer = post(client, "/api/decide", {"id": blur.id, "decision": "keep"})
    assert answer.status_code == 409
    assert answer.json()["error"] == "blur.jpg is no longer at photos/ (moved or deleted?); not saved"
    assert not (library / "blur.jpg.xmp").exists() and not list(library.glob("blur*.xmp"))  # no sidecar beside nothing
    assert blur.user is None and session.undo_depth == 0
    soft = by_name(session, "soft.png")
    (library / "sub" / "soft.png").unlink()
    assert "soft.png is no longer at photos/sub/" in post(client, "/api/decide", {"id": soft.id, "decision": "reject"}).json()["error"]


def test_a_decision_on_a_shot_whose_raw_partner_was_deleted_is_refused(tmp_path, card):
    root = tmp_path / "photos"
    save(blurred_image(0, 8.0), root / "IMG_0001.JPG", quality=92)
    (root / "IMG_0001.CR2").write_bytes(b"raw stand-in: the shot is scored through its JPEG")
    session = session_for(root, card)
    (root / "IMG_0001.CR2").unlink()
    answer = post(client_for(session), "/api/decide", {"id": session.all_items[0].id, "decision": "reject"})
    assert answer.status_code == 409 and "IMG_0001.CR2 is no longer at photos/" in answer.json()["error"]
    assert not list(root.glob("*.xmp"))


def test_keep_best_on_a_burst_with_a_frame_moved_since_writes_nothing(bursts, card):
    session = burst_session(bursts, card)
    (bursts / "burst_2.jpg").unlink()
    answer = post(client_for(session), "/api/keep-best", {"id": by_name(session, "burst_1.jpg").id})
    assert answer.status_code == 409 and "burst_2.jpg is no longer at bursts/" in answer.json()["error"]
    assert not list(bursts.glob("*.xmp")) and session.undo_depth == 0


def test_a_failed_undo_shows_what_the_files_hold_and_is_not_dropped_silently(library, card):
    session = session_for(library, card)
    client = client_for(session)
    sharp, blur = by_name(session, "sharp.jpg"), by_name(session, "blur.jpg")
    post(client, "/api/decide", {"id": sharp.id, "decision": "keep"})
    post(client, "/api/decide", {"id": blur.id, "decision": "reject"})
    sidecar = library / "blur.jpg.xmp"
    sidecar.write_bytes(_set(sidecar.read_bytes(), ("xmp", "CreatorTool"), "digiKam"))  # still says reject
    first = post(client, "/api/undo").json()
    assert first["problems"] == ["blur.jpg.xmp changed since; left as it is"]
    assert first["kept"] is True and first["undo"] == 2  # the step stays: Z again tries it once more
    assert first["item"]["id"] == blur.id and first["item"]["user"] == "reject" and blur.user == "reject"  # as its XMP says
    second = post(client, "/api/undo").json()
    assert second["problems"] and second["kept"] is False and second["undo"] == 1  # given up, and the page says so
    assert second["item"]["user"] == "reject"
    third = post(client, "/api/undo").json()
    assert third["item"]["id"] == sharp.id and third["problems"] == [] and sharp.user is None
    assert read_user_verdict(library / "blur.jpg") == "reject"


def test_a_raw_jpeg_shot_half_undone_shows_the_decision_its_other_sidecar_keeps(tmp_path, card):
    root = tmp_path / "photos"
    save(blurred_image(0, 8.0), root / "IMG_0001.JPG", quality=92)
    (root / "IMG_0001.CR2").write_bytes(b"raw stand-in")
    session = session_for(root, card)
    client = client_for(session)
    item = session.all_items[0]
    post(client, "/api/decide", {"id": item.id, "decision": "reject"})
    raw_sidecar = root / "IMG_0001.xmp"
    raw_sidecar.write_bytes(raw_sidecar.read_bytes() + b"\n")
    answer = post(client, "/api/undo").json()
    assert answer["kept"] is True and answer["item"]["user"] == "reject" and answer["problems"] == ["IMG_0001.xmp changed since; left as it is"]
    assert not (root / "IMG_0001.JPG.xmp").exists()  # the JPEG's sidecar went back
    raw_sidecar.write_bytes(raw_sidecar.read_bytes()[:-1])  # the user takes the edit back: Z again finishes the step
    done = post(client, "/api/undo").json()
    assert done["problems"] == [] and done["item"]["user"] is None and done["undo"] == 0 and not raw_sidecar.exists()


def _another_group() -> int:
    if os.geteuid() == 0:
        return 4242
    others = [gid for gid in os.getgroups() if gid != os.getegid()]
    if not others:
        pytest.skip("needs a second group to chgrp to")
    return others[0]


def test_decisions_and_undo_keep_the_sidecar_s_group_and_mode(library, card, caplog):
    """On a group-shared folder the other members must keep write access: the rename of an atomic
    write would give the sidecar this user's group."""
    group = _another_group()
    sidecar = library / "blur.jpg.xmp"
    sidecar.write_bytes(_sidecar_with(xmp_CreatorTool="darktable"))
    os.chown(sidecar, -1, group)
    sidecar.chmod(0o664)
    session = session_for(library, card)
    client = client_for(session)
    blur = by_name(session, "blur.jpg")
    for step in ("reject", "keep", None):
        answer = post(client, "/api/undo") if step is None else post(client, "/api/decide", {"id": blur.id, "decision": step})
        assert answer.status_code == 200, answer.text
        info = sidecar.stat()
        assert (info.st_gid, info.st_mode & 0o777) == (group, 0o664), step
    os.link(sidecar, library / "shared-copy.xmp")
    with caplog.at_level("WARNING"):
        post(client, "/api/decide", {"id": blur.id, "decision": "uncertain"})
    assert "hard links" in caplog.text  # as scan's writer warns


def test_a_decision_inside_an_embedded_photo_keeps_its_owner_and_group(library, card):
    pytest.importorskip("pyexiv2")
    result = CliRunner().invoke(cli_app, ["scan", str(library), "--workers", "1", "--embed"])
    assert result.exit_code == 0, result.output
    group = _another_group()
    photo = library / "blur.jpg"
    os.chown(photo, -1, group)
    session = session_for(library, card)
    client = client_for(session)
    assert post(client, "/api/decide", {"id": by_name(session, "blur.jpg").id, "decision": "keep"}).status_code == 200
    assert photo.stat().st_gid == group
    assert post(client, "/api/undo").json()["problems"] == []
    assert photo.stat().st_gid == group


def test_detail_work_runs_on_two_threads_however_many_requests_come(library, card, monkeypatch):
    """A held J in the detail view asks for many details: at most two are computed at once."""
    import threading
    import time

    session = session_for(library, card)
    client = client_for(session)
    running, most, lock = [0], [0], threading.Lock()

    def slow(item_id: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        raise KeyError(item_id)

    monkeypatch.setattr(session, "detail", slow)
    asks = [threading.Thread(target=client.get, args=(f"/api/detail/{session.items[0].id}",)) for _ in range(6)]
    for ask in asks:
        ask.start()
    for ask in asks:
        ask.join()
    assert most[0] == 2


def test_detail_work_whose_page_went_away_never_starts():
    import asyncio
    import threading

    from cull.review.server import Abandoned, HeavyWork

    heavy = HeavyWork(workers=1)
    started: list[str] = []
    gate = threading.Event()

    class Page:
        def __init__(self, gone: bool) -> None:
            self.gone = gone

        async def is_disconnected(self) -> bool:
            return self.gone

    async def main() -> None:
        first = asyncio.create_task(heavy.run(Page(False), lambda: (started.append("first"), gate.wait(5))))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        with pytest.raises(Abandoned):  # the page aborted it (a newer photo): it waited, and now never starts
            await heavy.run(Page(True), lambda: started.append("superseded"))  # type: ignore[arg-type]
        gate.set()
        await first

    asyncio.run(main())
    heavy.stop()
    assert started == ["first"]


def test_stopping_while_details_are_computed_is_quick_and_quiet(library, card, monkeypatch, capfd):
    """Ctrl-C (or the idle stop) with detail requests waiting used to take the 2 s graceful timeout, then
    print "Cancel N running task(s)" and a traceback per request."""
    import http.client
    import threading
    import time

    from cull.review.server import bind, serve

    session = session_for(library, card)
    gate = threading.Event()
    monkeypatch.setattr(session, "detail", lambda item_id: gate.wait(20))
    app = create_app(session, TOKEN)
    sock = bind(0)
    port = sock.getsockname()[1]
    stopped: list[float] = []
    server = threading.Thread(target=lambda: (serve(app, sock, 1.0), stopped.append(time.monotonic())))
    server.start()
    asks = []
    for _ in range(4):
        ask = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ask.request("GET", f"/api/detail/{session.items[0].id}", headers={"X-Cull-Token": app.access.secret})
        asks.append(ask)
    try:
        for ask in asks:
            assert ask.getresponse().status == 503  # given up when the server stopped, not cancelled
        server.join(20)
        assert stopped  # it stopped (timings are for benchmarks, not tests: the machines are shared)
        err = capfd.readouterr().err
        assert "Cancel" not in err and "Traceback" not in err
    finally:
        gate.set()
        sock.close()


def test_photos_that_could_not_be_read_are_listed_on_the_page(library, card):
    (library / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    session, failures = load_session([library], card, ScanOptions(), ReviewOptions(show=Show.ALL))
    assert [path.name for path, _ in failures] == ["broken.jpg"]
    listing = client_for(session).get("/api/items").json()
    assert listing["total"] == 4 and len(listing["items"]) == 3
    assert [(row["name"], row["where"]) for row in listing["unreadable"]] == [("broken.jpg", "")]
    assert listing["unreadable"][0]["why"] and str(library) not in str(listing)
