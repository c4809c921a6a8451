"""A photo the user rated, picked or accepted is never marked or moved as a reject, wherever the
user's value lives; and the XMP writer's hostile-input, permission and message fixes.

exiftool (and exiv2 in test_xmp.py) read the results as independent oracles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.errors import SidecarRefused
from cull.protect import file_protection, load_pyexiv2, read_embedded, read_sidecar, shot_protection
from cull.sidecars import (
    TEMP_NAME,
    XmpOptions,
    clear_photo,
    remove_stale_temps,
    strip_webp_xmp,
    targets_for,
    write_verdict,
)
from cull.xmp import Verdict, merge, read_fields, validate_label
from tests.conftest import blurred_image, drop_dac_override, save

REJECT = Verdict("reject", 0.02, "defocus", "test-model")
UNCERTAIN = Verdict("uncertain", 0.4, "motion", "test-model")
needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (.ci/run installs it)")


def user_xmp(**fields: str) -> bytes:
    """A one-line sidecar as another application writes it (``Rating="3"``, ``pick="1"`` ...)."""
    ns = {"Rating": "xmp", "pick": "xmpDM", "PickLabel": "digiKam", "Label": "xmp"}
    attrs = " ".join(f'{ns[k]}:{k}="{v}"' for k, v in fields.items())
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:xmpDM="http://ns.adobe.com/xmp/1.0/DynamicMedia/" xmlns:digiKam="http://www.digikam.org/ns/1.0/" '
        f'{attrs}/></rdf:RDF></x:xmpmeta>'
    ).encode()


def exiftool_rating(*paths: Path) -> dict[str, object]:
    """XMP-xmp:Rating of each file as exiftool reads it (None: no rating, or no file)."""
    existing = [p for p in paths if p.exists()]
    found: dict[str, object] = {p.name: None for p in paths}
    if existing:
        out = subprocess.run(["exiftool", "-j", "-n", "-XMP-xmp:Rating", *map(str, existing)],
                             capture_output=True, text=True, check=True).stdout
        for row in json.loads(out):
            found[Path(row["SourceFile"]).name] = row.get("Rating")
    return found


def embed_rating(photo: Path, rating: int) -> None:
    """Another application (exiftool here, Lightroom in life) writes a rating *into* the photo."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-xmp:Rating={rating}", str(photo)], check=True)


# --- D2: one shot, one verdict ------------------------------------------------------------------

@needs_exiftool
def test_a_rating_anywhere_in_the_shot_keeps_every_sidecar_free_of_rejects(tmp_path):
    photos = tmp_path / "photos"
    save(blurred_image(0, 9), photos / "emb.jpg")
    embed_rating(photos / "emb.jpg", 5)  # (a) rating inside the JPEG
    save(blurred_image(1, 9), photos / "adobe.jpg")
    (photos / "adobe.xmp").write_bytes(user_xmp(Rating="3"))  # (b) Capture One naming beside a JPEG
    save(blurred_image(2, 9), photos / "IMG_0001.jpg")
    (photos / "IMG_0001.KDC").write_bytes(b"raw data")
    (photos / "IMG_0001.xmp").write_bytes(user_xmp(Rating="3"))  # (c, d) the RAW partner's Lightroom sidecar
    save(blurred_image(3, 9), photos / "zero.jpg")
    (photos / "zero.jpg.xmp").write_bytes(user_xmp(Rating="0"))  # 0 = unrated (XMP spec): may be marked
    save(blurred_image(0, 5), photos / "plain.jpg")
    stale = photos / ".plain.jpg.ab12cd_9.cull-tmp.jpg"  # (D10) left by a killed `scan --embed`
    stale.write_bytes(b"half a copy")
    result = CliRunner().invoke(app, ["scan", str(photos), "--workers", "1", "--sidecar-style", "both"])
    assert result.exit_code == 0, result.output
    ratings = exiftool_rating(*(photos / n for n in (
        "emb.jpg.xmp", "emb.jpg", "adobe.jpg.xmp", "adobe.xmp", "IMG_0001.KDC.xmp", "IMG_0001.jpg.xmp",
        "IMG_0001.xmp", "zero.jpg.xmp", "plain.jpg.xmp")))
    assert ratings == {"emb.jpg.xmp": None, "emb.jpg": 5, "adobe.jpg.xmp": None, "adobe.xmp": 3,
                       "IMG_0001.KDC.xmp": None, "IMG_0001.jpg.xmp": None, "IMG_0001.xmp": 3,
                       "zero.jpg.xmp": -1, "plain.jpg.xmp": -1}
    conflicts = sorted(line for line in result.stderr.splitlines() if line.startswith("conflict:"))
    assert conflicts == [  # once per shot
        f"conflict: {photos / 'IMG_0001.jpg'}: user rated it 3 stars: not marked rejected",
        f"conflict: {photos / 'adobe.jpg'}: user rated it 3 stars: not marked rejected",
        f"conflict: {photos / 'emb.jpg'}: user rated it 5 stars: not marked rejected",
    ]
    assert read_fields((photos / "adobe.xmp").read_bytes())["cull:Conflict"] == "user rated it 3 stars"
    assert not stale.exists()


@needs_exiftool
def test_embed_with_the_rating_in_the_darktable_sidecar_writes_no_reject(tmp_path):
    photo = save(blurred_image(0, 9), tmp_path / "a.jpg")
    (tmp_path / "a.jpg.xmp").write_bytes(user_xmp(pick="1"))
    outcomes, conflict = write_verdict(photo, REJECT, XmpOptions(embed=True))
    assert conflict == "user picked it (flagged)" and [o.action for o in outcomes] == ["unchanged"]
    assert exiftool_rating(photo) == {"a.jpg": None}


@needs_exiftool
def test_an_earlier_cull_reject_is_taken_back_once_the_user_rates_the_shot_elsewhere(tmp_path):
    photo = save(blurred_image(0, 9), tmp_path / "a.jpg")
    write_verdict(photo, REJECT, XmpOptions())
    assert exiftool_rating(tmp_path / "a.jpg.xmp") == {"a.jpg.xmp": -1}
    embed_rating(photo, 4)  # the user rates it in Lightroom, which writes into the JPEG
    outcomes, conflict = write_verdict(photo, REJECT, XmpOptions())
    assert conflict == "user rated it 4 stars" and [o.action for o in outcomes] == ["written"]
    assert exiftool_rating(tmp_path / "a.jpg.xmp") == {"a.jpg.xmp": None}
    assert read_fields((tmp_path / "a.jpg.xmp").read_bytes())["digiKam:PickLabel"] is None


def test_shot_protection_reads_every_place(tmp_path, monkeypatch):
    def shot(name: str) -> Path:
        photo = tmp_path / name
        photo.write_bytes(b"\xff\xd8 not decoded here")
        return photo

    assert shot_protection(shot("none.jpg"), None) is None
    (tmp_path / "lr.jpg.xmp").write_bytes(user_xmp(pick="1"))
    assert shot_protection(shot("lr.jpg"), None) == "user picked it (flagged)"
    (tmp_path / "dk.xmp").write_bytes(user_xmp(PickLabel="3"))
    assert shot_protection(shot("dk.jpg"), None) == "user accepted it (digiKam pick label)"
    for value in ("0", "-1"):  # unrated and rejected do not protect
        (tmp_path / f"r{value}.jpg.xmp").write_bytes(user_xmp(Rating=value))
        assert shot_protection(shot(f"r{value}.jpg"), None) is None
    (tmp_path / "IMG_2.CR2.xmp").write_bytes(user_xmp(Rating="4"))
    assert shot_protection(shot("IMG_2.jpg"), shot("IMG_2.CR2")) == "user rated it 4 stars"
    embedded = shot("inside.jpg")
    embedded.write_bytes(b"\xff\xd8junk" + user_xmp(Rating="2") + b"more junk")
    monkeypatch.setitem(sys.modules, "pyexiv2", None)  # the default install: found by packet scanning
    assert file_protection(embedded) == "user rated it 2 stars"
    # IMG_7.xmp belongs to the RAW of another shot, never to the PNG beside it
    (tmp_path / "IMG_7.CR2").write_bytes(b"raw")
    (tmp_path / "IMG_7.xmp").write_bytes(user_xmp(Rating="5"))
    png = shot("IMG_7.png")
    assert shot_protection(png, None) is None
    assert [t.path.name for t in targets_for(png, XmpOptions())] == ["IMG_7.png.xmp"]


# --- D1: move never takes a protected shot ------------------------------------------------------

@needs_exiftool
def test_move_rejects_leaves_every_protected_shot_in_place(tmp_path):
    photos = tmp_path / "photos"
    for i, name in enumerate(["rated.jpg", "picked.jpg", "accepted.jpg", "emb.jpg", "IMG_1.jpg", "plain.jpg"]):
        save(blurred_image(i, 9), photos / name)
    (photos / "rated.jpg.xmp").write_bytes(user_xmp(Rating="3"))
    (photos / "picked.xmp").write_bytes(user_xmp(pick="1"))  # Lightroom pick, Adobe naming
    (photos / "accepted.jpg.xmp").write_bytes(user_xmp(PickLabel="3"))
    embed_rating(photos / "emb.jpg", 5)
    (photos / "IMG_1.KDC").write_bytes(b"raw data")
    (photos / "IMG_1.xmp").write_bytes(user_xmp(Rating="4"))
    result = CliRunner().invoke(app, ["move", str(photos), "--rejects", "--workers", "1"])
    assert result.exit_code == 0, result.output
    kept = sorted(line for line in result.stderr.splitlines() if line.startswith("kept in place:"))
    assert len(kept) == 5, result.stderr
    assert any("IMG_1.jpg: user rated it 4 stars" in line for line in kept)
    assert any("emb.jpg: user rated it 5 stars" in line for line in kept)
    moved = sorted(p.name for p in (photos / "_culled").rglob("*") if p.is_file() and ".cull-journal" not in str(p))
    assert moved == ["plain.jpg"]
    for name in ("rated.jpg", "picked.jpg", "picked.xmp", "accepted.jpg", "emb.jpg", "IMG_1.jpg", "IMG_1.KDC", "IMG_1.xmp"):
        assert (photos / name).is_file(), name


# --- D5, D6: hostile sidecars -------------------------------------------------------------------

def test_fifo_and_device_sidecars_are_refused_without_blocking_or_reading(tmp_path):
    photos = tmp_path / "photos"
    save(blurred_image(0, 3), photos / "a.jpg")
    save(blurred_image(1, 9), photos / "b.jpg")
    os.mkfifo(photos / "a.jpg.xmp")
    (photos / "b.jpg.xmp").symlink_to("/dev/zero")
    big = photos / "big.xmp"
    with open(big, "wb") as fh:
        fh.truncate(65 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(SidecarRefused, match="64 MB"):
        read_sidecar(big)

    def cap_memory() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    proc = subprocess.run([sys.executable, "-m", "cull", "scan", str(photos), "--workers", "1"],
                          capture_output=True, text=True, timeout=180, preexec_fn=cap_memory,
                          env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert f"error: {photos / 'a.jpg.xmp'}: not a regular file (FIFO)" in proc.stderr
    assert f"error: {photos / 'b.jpg.xmp'}: not a regular file (character device)" in proc.stderr
    assert (photos / "b.jpg.xmp").is_symlink() and "XMP: 0 written" in proc.stdout


# --- D4, review D6: permissions -----------------------------------------------------------------

def test_a_sidecar_cull_creates_gets_the_umask_mode_and_is_never_refused_later(tmp_path):
    photo = save(blurred_image(0, 9), tmp_path / "locked.jpg")
    os.chmod(photo, 0o444)
    mask = os.umask(0o022)
    try:
        assert [o.action for o in write_verdict(photo, REJECT, XmpOptions())[0]] == ["written"]
    finally:
        os.umask(mask)
    sidecar = tmp_path / "locked.jpg.xmp"
    assert sidecar.stat().st_mode & 0o777 == 0o644  # not the photo's 0444
    os.chmod(sidecar, 0o444)  # as older versions of cull left it beside a read-only photo
    assert [o.action for o in write_verdict(photo, UNCERTAIN, XmpOptions())[0]] == ["written"]
    assert [o.action for o in clear_photo(photo)] == ["removed"] and not sidecar.exists()


def test_another_users_sidecar_is_not_taken_over(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    raw = shared / "r.NEF"
    raw.write_bytes(b"raw")
    sidecar = shared / "r.xmp"
    sidecar.write_bytes(user_xmp(Label="Blue"))
    os.chown(sidecar, 65534, 65534)  # nobody's, 0644: not writable by anyone else
    os.chmod(sidecar, 0o644)
    before = sidecar.read_bytes()
    script = ("from pathlib import Path; from cull.sidecars import XmpOptions, write_verdict; "
              "from cull.xmp import Verdict; "
              f"o, _ = write_verdict(Path({str(raw)!r}), Verdict('reject', 0.1, None, 'm'), XmpOptions()); "
              "print(o[0].action, o[0].detail)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          preexec_fn=drop_dac_override)  # an ordinary user: mode bits bind
    assert proc.stdout.startswith("error no write permission"), proc.stdout + proc.stderr
    assert sidecar.read_bytes() == before and sidecar.stat().st_uid == 65534
    # root (who may write anything) keeps the owner: the merged sidecar is still nobody's
    outcomes, _ = write_verdict(raw, REJECT, XmpOptions())
    assert outcomes[0].action == "written" and read_fields(sidecar.read_bytes())["xmp:Rating"] == "-1"
    assert (sidecar.stat().st_uid, sidecar.stat().st_gid) == (65534, 65534)


# --- D3, D13: embedded XMP clear ----------------------------------------------------------------

@needs_exiftool
@pytest.mark.parametrize("name", ["w.webp", "j.jpg"])
def test_xmp_clear_really_removes_embedded_xmp_and_says_so(tmp_path, name):
    pytest.importorskip("pyexiv2")
    photo = save(blurred_image(0, 9), tmp_path / name)
    original = photo.read_bytes()
    outcomes, _ = write_verdict(photo, REJECT, XmpOptions(embed=True))
    assert [o.action for o in outcomes] == ["written"] and exiftool_rating(photo) == {name: -1}
    result = CliRunner().invoke(app, ["xmp", "clear", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"removed XMP from {photo}" in result.stdout
    assert exiftool_rating(photo) == {name: None}
    assert photo.read_bytes() == original  # back byte for byte


def test_xmp_clear_never_claims_a_removal_that_did_not_happen(tmp_path, monkeypatch):
    pytest.importorskip("pyexiv2")
    import cull.sidecars

    photo = save(blurred_image(0, 9), tmp_path / "a.tif")
    write_verdict(photo, REJECT, XmpOptions(embed=True))
    monkeypatch.setattr(cull.sidecars, "write_embedded", lambda path, packet: None)  # a format that keeps its XMP
    outcomes = clear_photo(photo)
    assert [o.action for o in outcomes] == ["error"] and "still in the file" in (outcomes[0].detail or "")


def test_strip_webp_xmp_drops_the_chunk_and_the_flag():
    vp8 = b"VP8 " + (4).to_bytes(4, "little") + b"abcd"
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + bytes([0x04]) + bytes(9)
    xmp = b"XMP " + (3).to_bytes(4, "little") + b"xyz\x00"
    body = vp8x + vp8 + xmp
    data = b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WEBP" + body
    assert strip_webp_xmp(data) == b"RIFF" + (len(vp8) + 4).to_bytes(4, "little") + b"WEBP" + vp8


# --- D12, review D7: without the [embed] extra --------------------------------------------------

def test_without_pyexiv2_clear_skips_embedded_and_embed_is_a_usage_error(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    save(blurred_image(0, 9), photos / "never.jpg")
    rejected = save(blurred_image(1, 9), photos / "rej.jpg")
    write_verdict(rejected, REJECT, XmpOptions())
    monkeypatch.setitem(sys.modules, "pyexiv2", None)  # `import pyexiv2` now fails, as on `pip install cull-focus`
    cleared = CliRunner().invoke(app, ["xmp", "clear", str(photos)])
    assert cleared.exit_code == 0, cleared.output
    assert "needs pyexiv2" not in cleared.output and not (photos / "rej.jpg.xmp").exists()
    embed = CliRunner().invoke(app, ["scan", str(photos), "--embed", "--workers", "1"])
    assert embed.exit_code == 2 and "--embed needs pyexiv2" in embed.stderr
    assert sorted(p.name for p in photos.iterdir()) == ["never.jpg", "rej.jpg"]  # nothing scanned or written


@pytest.mark.skipif(load_pyexiv2() is None, reason="needs pyexiv2 to embed first")
def test_clear_without_pyexiv2_says_which_photos_keep_culls_xmp_inside(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    inside = save(blurred_image(1, 9), photos / "inside.jpg")
    write_verdict(inside, REJECT, XmpOptions(embed=True))
    monkeypatch.setitem(sys.modules, "pyexiv2", None)
    cleared = CliRunner().invoke(app, ["xmp", "clear", str(photos)])
    assert cleared.exit_code == 0, cleared.output
    assert "note: 1 photos keep cull's XMP inside the file" in cleared.stderr and "cull-focus[embed]" in cleared.stderr


# --- D15: --label -------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["Yel\x01low", "", "x" * 65, "two\nlines"])
def test_a_bad_label_is_a_usage_error_before_any_work(tmp_path, label):
    save(blurred_image(0, 9), tmp_path / "u.jpg")
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--label", label])
    assert result.exit_code == 2 and "--label" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.jpg"]


def test_label_colour_words_are_normalised_and_own_words_kept():
    assert validate_label("purple") == "Purple" and validate_label("YELLOW") == "Yellow"
    assert validate_label("To print") == "To print"
    assert read_fields(merge(None, Verdict("uncertain", 0.4, None, "m", label=validate_label("blue"))).packet)["xmp:Label"] == "Blue"


# --- D10: temp files of a killed run ------------------------------------------------------------

def test_a_temp_file_a_concurrent_run_is_writing_is_left_alone(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has ended
    in_flight = tmp_path / f".a.jpg.xmp.{os.getpid()}-ab12cd34.cull-tmp"  # a live process (here: this one)
    left = tmp_path / f".b.jpg.xmp.{dead_pid}-ab12cd34.cull-tmp"  # a killed run's
    for path in (in_flight, left):
        path.write_bytes(b"x")
    time.sleep(0.05)
    assert remove_stale_temps([tmp_path], time.time()) == [left]
    assert in_flight.exists()


def test_only_culls_own_stale_temp_files_are_removed(tmp_path):
    ours = [tmp_path / ".a.jpg.k2j_9x0q.cull-tmp.jpg", tmp_path / ".a.jpg.xmp.ab12cd34.cull-tmp"]
    others = [tmp_path / ".a.jpg.mine.tmp", tmp_path / "a.cull-tmp.jpg", tmp_path / ".a.jpg.toolong99.x.cull-tmp"]
    for path in ours + others:
        path.write_bytes(b"x")
    time.sleep(0.05)  # file-system timestamps are coarse: keep the two generations apart
    fresh = tmp_path / ".b.jpg.zz99zz99.cull-tmp.jpg"  # made by a run going on now: left alone
    fresh.write_bytes(b"x")
    started = fresh.stat().st_ctime
    assert sorted(remove_stale_temps([tmp_path], started)) == sorted(ours)
    assert all(p.exists() for p in others) and fresh.exists()


def test_a_temp_file_of_another_machine_sharing_the_folder_is_left_until_it_is_a_day_old(tmp_path):
    """On a shared folder (NFS/SMB) a temp another machine's cull is writing names a process this
    machine cannot check (the PID means nothing here): it used to be removed as stale whenever no
    local process had that PID. It is removed only when it is more than a day old."""
    from cull.fsutil import host_tag, temp_prefix

    mine = Path(temp_prefix(tmp_path / "a.jpg.xmp") + "ab12cd34.cull-tmp")
    assert mine.name.startswith(".a.jpg.xmp@") and host_tag() in mine.name
    other_host = "studio-mac" if host_tag() != "studio-mac" else "darkroom"
    theirs = tmp_path / f".b.jpg.xmp@{other_host}.{os.getpid() + 1}-ab12cd34.cull-tmp"
    theirs_embed = tmp_path / f".c.jpg@{other_host}.1-zz99zz99.cull-tmp.jpg"
    for path in (theirs, theirs_embed):
        path.write_bytes(b"x")
    time.sleep(0.05)
    now = time.time()
    assert remove_stale_temps([tmp_path], now) == []
    assert theirs.exists() and theirs_embed.exists()
    assert sorted(remove_stale_temps([tmp_path], now + 24 * 3600 + 60)) == sorted([theirs, theirs_embed])


def test_machines_whose_names_read_alike_get_different_tags_and_spare_each_others_temps(tmp_path, monkeypatch):
    """The host part is a readable prefix plus a hash of the whole name (and the PID namespace): names that
    sanitise alike, or share a long prefix, used to give one tag, so one machine took the other's live temp
    for a dead process's."""
    import socket

    from cull.fsutil import host_tag, temp_prefix

    tags = {}
    for name in ("müller-pc", "möller-pc", "photo-studio-workstation-number-01", "photo-studio-workstation-number-02",
                 "ws1.studio.lan", "ws1-studio-lan", "写真機", "フォト"):
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        tags[name] = host_tag()
        assert TEMP_NAME.match(temp_prefix(tmp_path / "a.jpg.xmp") + "ab12cd34.cull-tmp").group(1) == tags[name]
    assert len(set(tags.values())) == len(tags)
    monkeypatch.setattr(socket, "gethostname", lambda: "photo-studio-workstation-number-02")
    theirs = Path(temp_prefix(tmp_path / "a.jpg.xmp") + "ab12cd34.cull-tmp").name.replace(f".{os.getpid()}-", ".4000000-")
    (tmp_path / theirs).write_bytes(b"x")  # written by a process that only exists over there
    time.sleep(0.05)
    monkeypatch.setattr(socket, "gethostname", lambda: "photo-studio-workstation-number-01")
    assert remove_stale_temps([tmp_path], time.time()) == [] and (tmp_path / theirs).exists()


def test_a_temp_of_a_name_with_a_newline_is_recognised_and_swept(tmp_path):
    from cull.fsutil import temp_prefix

    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    left = tmp_path / (temp_prefix(tmp_path / "two\nlines.jpg.xmp").replace(f".{os.getpid()}-", f".{dead_pid}-") + "ab12cd34.cull-tmp")
    left.write_bytes(b"x")
    time.sleep(0.05)
    assert remove_stale_temps([tmp_path], time.time()) == [left]


def test_an_embedded_write_through_a_link_names_its_temp_after_the_link(tmp_path, monkeypatch):
    """--embed into a photo reached through a link to a file named anyhow (``IMG_1.JPG~``): the temp's
    extension came from the target's name, which TEMP_NAME does not accept, so a killed run's temp stayed."""
    import tempfile

    from cull.sidecars import load_pyexiv2, write_embedded

    if load_pyexiv2() is None:
        pytest.skip("needs pyexiv2 ([embed])")
    target = save(blurred_image(0, 9), tmp_path / "store" / "IMG_1.jpg")
    target = target.rename(target.with_name("IMG_1.JPG~orig"))
    (tmp_path / "IMG_1.jpg").symlink_to(target)
    made = []
    real_mkstemp = tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    write_embedded(tmp_path / "IMG_1.jpg", merge(None, Verdict("reject", 0.02, "defocus", "m")).packet)
    assert made and all(TEMP_NAME.match(p.name) and p.parent == target.parent for p in made)
    packet = read_embedded(target)
    assert (tmp_path / "IMG_1.jpg").is_symlink() and packet is not None and read_fields(packet)["xmp:Rating"] == "-1"


def test_a_photo_name_near_the_length_limit_still_gets_its_sidecar(tmp_path):
    """A 250-character photo name has a 254-character sidecar name, which fits; the temp file beside it
    (name + PID + random part) did not, and the write failed with "File name too long"."""
    from cull.fsutil import temp_prefix

    for name in ("a" * 246 + ".jpg", "é" * 121 + ".jpg"):  # 250 bytes: ASCII, and two-byte characters
        folder = tmp_path / name[:3]
        save(blurred_image(0, 9), folder / name)
        result = CliRunner().invoke(app, ["scan", str(folder), "--workers", "1"], env={"CULL_CACHE_DIR": str(tmp_path / "c")})
        assert result.exit_code == 0, result.output
        assert read_fields((folder / (name + ".xmp")).read_bytes())["xmp:Rating"] == "-1"
        assert sorted(p.name for p in folder.iterdir()) == sorted([name, name + ".xmp"])  # no temp left
        longest = temp_prefix(folder / (name + ".xmp")) + "k2j9x0q1.cull-tmp.jpeg"
        assert len(longest.encode()) <= 255 and TEMP_NAME.match(longest)


# --- embedded XMP found where the format keeps it, not by reading a whole RAW ---------------------

@needs_exiftool
@pytest.mark.parametrize("kind", ["dng", "jpeg"])
def test_an_embedded_rating_is_read_from_where_the_format_keeps_it(tmp_path, monkeypatch, kind):
    """exiftool (as Lightroom) writes the rating into a DNG's IFD0 XMLPacket tag or a JPEG's APP1
    segment; cull finds it there, without mapping the file to scan it (a 50 MB RAW read per photo
    made RAW scans a third slower)."""
    import mmap

    from tests.conftest import sharp_image
    from tests.rawfiles import write_dng

    preview = save(sharp_image(0).resize((640, 480)), tmp_path / "preview.jpg", quality=90)
    photo = preview
    if kind == "dng":
        photo = tmp_path / "IMG_0001.DNG"
        write_dng(preview, photo)
    embed_rating(photo, 3)
    monkeypatch.setitem(sys.modules, "pyexiv2", None)  # the default install: cull's own reading

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole file was scanned")

    monkeypatch.setattr(mmap, "mmap", no_scan)
    assert file_protection(photo) == "user rated it 3 stars"


def test_a_container_that_does_not_parse_is_still_scanned_for_xmp(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyexiv2", None)
    for name, head in (("odd.orf", b"IIRO\x08\x00\x00\x00"), ("cut.tif", b"II*\x00\xff\xff\xff\x7f"),
                       ("broken.jpg", b"\xff\xd8\xff\xe1\x00")):
        photo = tmp_path / name
        photo.write_bytes(head + b"\x00" * 4096 + user_xmp(Rating="2") + b"\x00" * 64)
        assert file_protection(photo) == "user rated it 2 stars", name


@pytest.mark.skipif(load_pyexiv2() is None, reason="--embed needs pyexiv2")
def test_embed_says_when_a_format_gets_a_sidecar_instead(tmp_path):
    pytest.importorskip("PIL.AvifImagePlugin")
    photos = tmp_path / "photos"
    photos.mkdir()
    blurred_image(1, 9).convert("RGB").save(photos / "a.avif")
    result = CliRunner().invoke(app, ["scan", str(photos), "--embed", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (photos / "a.avif.xmp").exists()  # the reject is in a sidecar, and a note says so
    assert "note: --embed: 1 photos" in result.stderr and "HEIC, AVIF" in result.stderr


@pytest.mark.parametrize("flag, words", [("--dry-run", "would not be marked rejected"), ("--no-xmp", "not a reject for cull move")])
def test_a_preview_names_the_rated_shot_it_lists_as_reject(tmp_path, flag, words):
    """--dry-run and --no-xmp print the conflict line a writing scan prints: the 5-star shot listed as
    reject is one the user keeps (it read as a reject about to be marked)."""
    photo = save(blurred_image(0, 8), tmp_path / "X.JPG")
    (tmp_path / "X.JPG.xmp").write_bytes(user_xmp(Rating="5"))
    result = CliRunner().invoke(app, ["scan", str(tmp_path), flag, "-j1"])
    assert result.exit_code == 0, result.output
    assert "reject" in result.stdout
    assert f"conflict: {photo}: user rated it 5 stars: {words}" in result.stderr
    assert (tmp_path / "X.JPG.xmp").read_bytes() == user_xmp(Rating="5")


def test_scan_packets_passes_over_what_is_no_regular_file(tmp_path):
    """A folder named like a photo (IMG.jpg/) in a folder cull looks through for its embedded XMP."""
    from cull.protect import scan_packets

    (tmp_path / "IMG.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    assert scan_packets(tmp_path / "IMG.jpg") == [] and scan_packets(tmp_path / "pipe.jpg") == []
