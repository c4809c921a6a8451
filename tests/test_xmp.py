"""XMP: conventions read back by exiftool, merges that keep every foreign field, clear, safety."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.protect import load_pyexiv2
from cull.sidecars import (
    SidecarStyle,
    XmpOptions,
    clear_photo,
    targets_for,
    write_verdict,
)
from cull.xmp import Packet, Verdict, XmpError, canonical, clear, merge, read_fields
from tests.conftest import blurred_image, drop_dac_override, save, sharp_image

DATA = Path(__file__).parent / "data" / "xmp"
REJECT = Verdict("reject", 0.02, "defocus", "test-model")
UNCERTAIN = Verdict("uncertain", 0.4, "motion", "test-model")
OWNED = {"Rating", "Label", "pick", "good", "PickLabel"}
needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (.ci/run installs it)")


def exiftool(path: Path, *tags: str) -> dict[str, object]:
    out = subprocess.run(["exiftool", "-j", "-n", *[f"-{t}" for t in tags], str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {k: v for k, v in json.loads(out)[0].items() if k != "SourceFile"}


OWNED_TAGS = {"XMP-xmp:Rating", "XMP-xmp:Label", "XMP-xmpDM:Pick", "XMP-xmpDM:Good", "XMP-digiKam:PickLabel"}


def exiftool_foreign(path: Path) -> dict[str, object]:
    """exiftool's full view of every XMP tag in a file, minus what cull owns or may fill."""
    out = subprocess.run(["exiftool", "-j", "-n", "-struct", "-G1", "-XMP:all", str(path)],
                         capture_output=True, text=True, check=True).stdout
    tags = json.loads(out)[0]
    return {k: v for k, v in tags.items()
            if k != "SourceFile" and k not in OWNED_TAGS and not k.startswith("XMP-cull:") and k != "XMP-x:XMPToolkit"}


def foreign(packet: bytes) -> list:
    """Every element and attribute not owned by cull or by the fields cull may fill."""
    root = Packet(packet).root

    def strip(element):
        attrs = tuple(sorted((k, v) for k, v in element.attrib.items()
                             if "cull" not in k and k.rsplit("}", 1)[-1] not in OWNED))
        children = tuple(strip(c) for c in element if c.tag.rsplit("}", 1)[-1] not in OWNED and "cull" not in c.tag)
        return (element.tag, attrs, (element.text or "").strip(), children)

    return strip(root)


@pytest.mark.parametrize("name", ["lightroom.xmp", "darktable.xmp", "digikam.xmp"])
def test_merge_keeps_every_foreign_field_and_clear_restores_bytes(name):
    before = (DATA / name).read_bytes()
    for verdict in (REJECT, UNCERTAIN):
        after = merge(before, verdict).packet
        assert foreign(after) == foreign(before)  # field by field, nothing else touched
        assert merge(after, verdict).packet == after  # idempotent: same bytes
        assert clear(after) == before  # byte for byte


def test_reject_and_uncertain_conventions():
    fields = read_fields(merge(None, REJECT).packet)
    assert fields["xmp:Rating"] == "-1" and fields["xmpDM:pick"] == "-1" and fields["xmpDM:good"] == "False"
    assert fields["digiKam:PickLabel"] == "1" and fields["cull:Verdict"] == "reject" and fields["cull:Kind"] == "defocus"
    fields = read_fields(merge(None, Verdict("uncertain", 0.4, None, "m", label="Purple")).packet)
    assert fields["digiKam:PickLabel"] == "2" and fields["xmp:Label"] == "Purple" and fields["xmp:Rating"] is None


def test_user_values_are_never_replaced_and_a_rated_photo_is_never_rejected():
    digikam = (DATA / "digikam.xmp").read_bytes()  # has xmp:Label="Holiday"
    assert read_fields(merge(digikam, UNCERTAIN).packet)["xmp:Label"] == "Holiday"
    rated = (DATA / "darktable.xmp").read_bytes().replace(b'xmp:Rating="0"', b'xmp:Rating="3"')
    result = merge(rated, REJECT)
    fields = read_fields(result.packet)
    assert result.conflict == "user rated it 3 stars"
    assert fields["xmp:Rating"] == "3" and fields["xmpDM:pick"] is None and fields["digiKam:PickLabel"] is None
    user = Packet(None)
    user.set(("xmpDM", "pick"), "1")
    picked = merge(user.serialize(), REJECT)
    assert picked.conflict and read_fields(picked.packet)["xmpDM:pick"] == "1"


def test_a_new_verdict_undoes_the_old_one_but_not_user_edits():
    rejected = merge(None, REJECT).packet
    kept = merge(rejected, Verdict("keep", 0.95, "sharp", "m")).packet
    assert read_fields(kept)["xmp:Rating"] is None and read_fields(kept)["digiKam:PickLabel"] is None
    user_edit = rejected.replace(b'xmp:Rating="-1"', b'xmp:Rating="2"')  # the user re-rated it since
    assert read_fields(clear(user_edit))["xmp:Rating"] == "2"


@pytest.mark.parametrize("payload", [
    b"<x:xmpmeta",  # truncated
    b"not xml at all",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>',  # entity expansion
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',  # external entity
    b"<html><body>hello</body></html>",
])
def test_malformed_or_hostile_packets_are_refused(payload):
    with pytest.raises(XmpError):
        merge(payload, REJECT)


def test_sidecar_naming(tmp_path):
    raw, jpg, dng = tmp_path / "IMG_0001.CR2", tmp_path / "IMG_0001.JPG", tmp_path / "IMG_0003.DNG"
    adobe = XmpOptions()
    assert [t.path.name for t in targets_for(raw, adobe)] == ["IMG_0001.xmp"]
    assert [t.path.name for t in targets_for(raw, XmpOptions(sidecar_style=SidecarStyle.DARKTABLE))] == ["IMG_0001.CR2.xmp"]
    assert [t.path.name for t in targets_for(raw, XmpOptions(sidecar_style=SidecarStyle.BOTH))] == ["IMG_0001.xmp", "IMG_0001.CR2.xmp"]
    (tmp_path / "IMG_0001.CR2.xmp").write_bytes(b"")  # an existing darktable sidecar is updated too
    assert [t.path.name for t in targets_for(raw, adobe)] == ["IMG_0001.xmp", "IMG_0001.CR2.xmp"]
    assert [t.path.name for t in targets_for(jpg, adobe)] == ["IMG_0001.JPG.xmp"]
    assert targets_for(jpg, XmpOptions(embed=True))[0].embedded
    assert targets_for(dng, XmpOptions(embed=True))[0].embedded
    assert [t.path.name for t in targets_for(tmp_path / "no extension", adobe)] == ["no extension.xmp"]
    (tmp_path / "IMG_0001.xmp").write_bytes(b"")  # Lightroom's sidecar stays in step under darktable naming
    assert [t.path.name for t in targets_for(raw, XmpOptions(sidecar_style=SidecarStyle.DARKTABLE))] == [
        "IMG_0001.CR2.xmp", "IMG_0001.xmp"]
    # beside a JPEG of a RAW+JPEG shot, IMG_0001.xmp is the RAW's: the JPEG keeps its own sidecar
    assert [t.path.name for t in targets_for(jpg, adobe, partner=raw)] == ["IMG_0001.JPG.xmp"]
    solo = tmp_path / "solo.jpg"
    (tmp_path / "solo.xmp").write_bytes(b"")  # Capture One / digiKam naming beside a JPEG: updated, not shadowed
    assert [t.path.name for t in targets_for(solo, adobe)] == ["solo.xmp"]
    (tmp_path / "solo.jpg.xmp").write_bytes(b"")
    assert [t.path.name for t in targets_for(solo, adobe)] == ["solo.jpg.xmp", "solo.xmp"]


@needs_exiftool
def test_scan_of_raw_jpeg_shots_marks_rejects_for_exiftool_and_clear_restores(tmp_path):
    shots = tmp_path / "shoot day ünïcode"
    save(sharp_image(0), shots / "IMG_0001.JPG")
    (shots / "IMG_0001.CR2").write_bytes(b"raw data")
    save(blurred_image(1, 9), shots / "IMG_0002.JPG")
    (shots / "IMG_0002.CR2").write_bytes(b"raw data")
    shutil.copy(DATA / "lightroom.xmp", shots / "IMG_0002.xmp")  # Lightroom had been here
    save(blurred_image(2, 9), shots / "IMG_0003.JPG")
    (shots / "IMG_0003.CR2").write_bytes(b"raw data")
    shutil.copy(DATA / "darktable.xmp", shots / "IMG_0003.CR2.xmp")
    before = {p.name: p.read_bytes() for p in shots.iterdir()}
    foreign_before = {n: exiftool_foreign(shots / n) for n in ("IMG_0002.xmp", "IMG_0003.CR2.xmp")}
    result = CliRunner().invoke(app, ["scan", str(shots), "--workers", "1"])
    assert result.exit_code == 0, result.output
    for name in ("IMG_0002.xmp", "IMG_0002.JPG.xmp", "IMG_0003.xmp", "IMG_0003.CR2.xmp", "IMG_0003.JPG.xmp"):
        tags = exiftool(shots / name, "XMP-xmp:Rating", "XMP-xmpDM:Pick", "XMP-xmpDM:Good", "XMP-digiKam:PickLabel")
        assert tags == {"Rating": -1, "Pick": -1, "Good": False, "PickLabel": 1}, name
    assert not (shots / "IMG_0001.xmp").exists() and not (shots / "IMG_0001.JPG.xmp").exists()  # keep: no clutter
    for name, tags in foreign_before.items():  # every foreign tag survives, as exiftool sees it
        assert exiftool_foreign(shots / name) == tags, name
    assert foreign_before["IMG_0002.xmp"]["XMP-dc:Subject"] == ["Paris", "street"]
    assert [h["Operation"] for h in foreign_before["IMG_0003.CR2.xmp"]["XMP-darktable:History"]] == ["exposure", "filmicrgb"]
    written = {p.name: p.read_bytes() for p in shots.iterdir()}
    assert CliRunner().invoke(app, ["scan", str(shots), "--workers", "1"]).exit_code == 0
    assert {p.name: p.read_bytes() for p in shots.iterdir()} == written  # idempotent
    cleared = CliRunner().invoke(app, ["xmp", "clear", str(shots)])
    assert cleared.exit_code == 0, cleared.output
    assert {p.name: p.read_bytes() for p in shots.iterdir()} == before  # every byte back, created ones gone


@needs_exiftool
def test_uncertain_label_and_picklabel_read_by_exiftool(tmp_path):
    photo = save(sharp_image(), tmp_path / "a b.jpg")
    outcomes, conflict = write_verdict(photo, UNCERTAIN, XmpOptions())
    assert [o.action for o in outcomes] == ["written"] and conflict is None
    assert exiftool(tmp_path / "a b.jpg.xmp", "XMP-xmp:Label", "XMP-digiKam:PickLabel") == {"Label": "Yellow", "PickLabel": 2}


@needs_exiftool
def test_embedded_xmp_is_lossless_and_clear_restores(tmp_path):
    photo = save(sharp_image(), tmp_path / "IMG_0009.jpg", quality=90)
    original = photo.read_bytes()
    outcomes, _ = write_verdict(photo, REJECT, XmpOptions(embed=True))
    assert [o.action for o in outcomes] == ["written"] and not list(tmp_path.glob("*.xmp"))
    tags = exiftool(photo, "XMP-xmp:Rating", "XMP-xmpDM:Pick", "XMP-digiKam:PickLabel")
    assert tags == {"Rating": -1, "Pick": -1, "PickLabel": 1}
    after = photo.read_bytes()
    sos = lambda data: data[data.index(b"\xff\xda"):]  # noqa: E731 - compressed image data from start of scan
    assert sos(after) == sos(original)
    assert write_verdict(photo, REJECT, XmpOptions(embed=True))[0][0].action == "unchanged"
    assert [o.action for o in clear_photo(photo)] == ["removed"]
    assert sos(photo.read_bytes()) == sos(original)
    assert exiftool(photo, "XMP-xmp:Rating") == {}


def test_atomic_write_keeps_permissions_and_survives_a_crash(tmp_path, monkeypatch):
    photo = tmp_path / "IMG_1.CR2"
    photo.write_bytes(b"raw")
    sidecar = tmp_path / "IMG_1.xmp"
    shutil.copy(DATA / "lightroom.xmp", sidecar)
    os.chmod(sidecar, 0o640)
    original = sidecar.read_bytes()

    def crash(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    outcomes, _ = write_verdict(photo, REJECT, XmpOptions())
    assert outcomes[0].action == "error" and "No space" in outcomes[0].detail
    assert sidecar.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["IMG_1.CR2", "IMG_1.xmp"]
    monkeypatch.undo()
    assert write_verdict(photo, REJECT, XmpOptions())[0][0].action == "written"
    assert os.stat(sidecar).st_mode & 0o777 == 0o640


def test_linked_sidecar_and_photo_are_written_through_their_links(tmp_path):
    """A sidecar or photo that is a symbolic link keeps being a link: the file it names gets the
    merged XMP (every foreign field kept), as an editor writing through the link would do; a link
    to nothing is refused and nothing is created."""
    shared = tmp_path / "catalogue"
    shared.mkdir()
    real_sidecar = shared / "IMG_1.xmp"
    shutil.copy(DATA / "lightroom.xmp", real_sidecar)
    os.chmod(real_sidecar, 0o640)
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (shoot / "IMG_1.CR2").write_bytes(b"raw")
    (shoot / "IMG_1.xmp").symlink_to(real_sidecar)
    outcomes, _ = write_verdict(shoot / "IMG_1.CR2", REJECT, XmpOptions())
    assert outcomes[0].action == "written", outcomes
    assert (shoot / "IMG_1.xmp").is_symlink() and os.readlink(shoot / "IMG_1.xmp") == str(real_sidecar)
    fields = read_fields(real_sidecar.read_bytes())
    assert fields["xmp:Rating"] == "-1" and b"Exposure2012" in real_sidecar.read_bytes()
    assert os.stat(real_sidecar).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in shared.iterdir()) == ["IMG_1.xmp"]  # no temp file left beside it
    assert [o.action for o in clear_photo(shoot / "IMG_1.CR2")] == ["restored"]
    assert real_sidecar.read_bytes() == (DATA / "lightroom.xmp").read_bytes() and (shoot / "IMG_1.xmp").is_symlink()

    (shoot / "IMG_2.CR2").write_bytes(b"raw")
    (shoot / "IMG_2.xmp").symlink_to(shared / "gone.xmp")
    outcomes, _ = write_verdict(shoot / "IMG_2.CR2", REJECT, XmpOptions())
    assert outcomes[0].action == "error" and "symbolic link to a missing file" in outcomes[0].detail
    assert not (shared / "gone.xmp").exists() and (shoot / "IMG_2.xmp").is_symlink()

    if load_pyexiv2() is not None and shutil.which("exiftool"):  # --embed into a photo reached through a link
        original = save(blurred_image(0, 5), shared / "soft.jpg")
        before = original.read_bytes()
        (shoot / "soft.jpg").symlink_to(original)
        outcomes, _ = write_verdict(shoot / "soft.jpg", REJECT, XmpOptions(embed=True))
        assert outcomes[0].action == "written", outcomes
        assert (shoot / "soft.jpg").is_symlink() and original.read_bytes() != before
        assert exiftool(original, "XMP-xmp:Rating") == {"Rating": -1}


def test_a_hard_linked_sidecar_is_written_atomically_and_the_other_names_are_named(tmp_path, caplog):
    """A rename cannot keep a hard link: the name cull writes gets the merged XMP, the other name keeps
    the previous bytes (nothing lost), and the user is told which file that happened to."""
    photo = tmp_path / "IMG_5.CR2"
    photo.write_bytes(b"raw")
    sidecar = tmp_path / "IMG_5.xmp"
    shutil.copy(DATA / "lightroom.xmp", sidecar)
    os.link(sidecar, tmp_path / "backup-IMG_5.xmp")
    with caplog.at_level("WARNING", logger="cull.sidecars"):
        outcomes, _ = write_verdict(photo, REJECT, XmpOptions())
    assert [o.action for o in outcomes] == ["written"]
    assert read_fields(sidecar.read_bytes())["xmp:Rating"] == "-1"
    assert (tmp_path / "backup-IMG_5.xmp").read_bytes() == (DATA / "lightroom.xmp").read_bytes()
    assert "has 2 hard links" in caplog.text and str(sidecar) in caplog.text


def test_malformed_existing_sidecar_is_reported_and_untouched(tmp_path):
    photo = tmp_path / "IMG_2.NEF"
    photo.write_bytes(b"raw")
    (tmp_path / "IMG_2.xmp").write_bytes(b"<x:xmpmeta><broken")
    outcomes, _ = write_verdict(photo, REJECT, XmpOptions())
    assert outcomes[0].action == "error" and "untouched" in outcomes[0].detail
    assert (tmp_path / "IMG_2.xmp").read_bytes() == b"<x:xmpmeta><broken"




def test_read_only_folder_gives_a_clear_error_and_exit_1(tmp_path):
    folder = tmp_path / "ro"
    save(blurred_image(0, 9), folder / "soft.jpg")
    os.chmod(folder, 0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "cull", "scan", str(folder), "--workers", "1"],
                              capture_output=True, text=True, preexec_fn=drop_dac_override,
                              env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
    finally:
        os.chmod(folder, 0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "permission denied" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["soft.jpg"]


def test_serialising_never_depends_on_other_packets():
    """Prefixes come from the packet itself, never from ElementTree's process-wide registry."""
    default_ns = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                  b'<rdf:Description rdf:about=""><Note xmlns="http://example.com/notes/">hi</Note></rdf:Description>'
                  b'</rdf:RDF></x:xmpmeta>')
    clashing = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                b'<rdf:Description rdf:about="" xmlns:zz="http://example.com/notes/" xmlns:xmp="urn:not-adobe" '
                b'zz:a="1" xmp:b="2"/></rdf:RDF></x:xmpmeta>')
    alone = [Packet(p).serialize() for p in (default_ns, clashing)]
    for order in ((default_ns, clashing, default_ns), (clashing, default_ns, clashing)):
        for packet in order:
            assert Packet(packet).serialize() == alone[0 if packet is default_ns else 1]
    assert canonical(Packet(alone[1]).root) == canonical(Packet(clashing).root)  # same content, valid XML


def test_canonical_ignores_prefixes_and_whitespace():
    a = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:p="http://ns.adobe.com/xap/1.0/" p:Rating="1"/></rdf:RDF></x:xmpmeta>'
    b = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n  <rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="1"/>\n </rdf:RDF>\n</x:xmpmeta>'
    assert canonical(Packet(a).root) == canonical(Packet(b).root)


def test_a_packet_cull_created_is_never_mistaken_for_an_original():
    once = merge(None, REJECT).packet
    twice = merge(once, Verdict("reject", 0.01, "motion", "test-model")).packet
    assert read_fields(twice)["cull:Kind"] == "motion"
    assert clear(twice) is None  # cull created it: clearing removes it entirely


def test_read_only_sidecar_and_photo_are_refused_not_replaced(tmp_path):
    raw = tmp_path / "IMG_7.ARW"
    raw.write_bytes(b"raw")
    sidecar = tmp_path / "IMG_7.xmp"
    shutil.copy(DATA / "lightroom.xmp", sidecar)
    os.chmod(sidecar, 0o444)
    outcomes, _ = write_verdict(raw, REJECT, XmpOptions())
    assert outcomes[0].action == "error" and "read-only file" in outcomes[0].detail
    assert sidecar.read_bytes() == (DATA / "lightroom.xmp").read_bytes()
    photo = save(sharp_image(), tmp_path / "locked.jpg")
    os.chmod(photo, 0o444)
    before = photo.read_bytes()
    outcomes, _ = write_verdict(photo, REJECT, XmpOptions(embed=True))
    assert outcomes[0].action == "error" and photo.read_bytes() == before


def exiv2_values(path: Path, *keys: str) -> dict[str, str]:
    out = subprocess.run(["exiv2", *[a for k in keys for a in ("-g", k)], "-Pkv", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: line.split(None, 1)[1].strip() for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(shutil.which("exiv2") is None, reason="exiv2 not installed (.ci/run installs it)")
def test_exiv2_reads_the_same_conventions_and_foreign_fields(tmp_path):
    rejected = tmp_path / "IMG_0002.xmp"
    rejected.write_bytes(merge((DATA / "lightroom.xmp").read_bytes(), REJECT).packet)
    assert exiv2_values(rejected, "Xmp.xmp.Rating", "Xmp.xmpDM.pick", "Xmp.xmpDM.good", "Xmp.digiKam.PickLabel",
                        "Xmp.crs.Exposure2012", "Xmp.dc.subject") == {
        "Xmp.xmp.Rating": "-1", "Xmp.xmpDM.pick": "-1", "Xmp.xmpDM.good": "False", "Xmp.digiKam.PickLabel": "1",
        "Xmp.crs.Exposure2012": "+0.35", "Xmp.dc.subject": "Paris, street"}
    uncertain = tmp_path / "IMG_0003.CR2.xmp"
    uncertain.write_bytes(merge((DATA / "darktable.xmp").read_bytes(), UNCERTAIN).packet)
    assert exiv2_values(uncertain, "Xmp.xmp.Label", "Xmp.digiKam.PickLabel", "Xmp.darktable.history_end") == {
        "Xmp.xmp.Label": "Yellow", "Xmp.digiKam.PickLabel": "2", "Xmp.darktable.history_end": "2"}


def test_embedding_keeps_the_cache_valid_so_a_rescan_decodes_nothing(tmp_path, monkeypatch):
    import cull.analyse

    photo = save(blurred_image(0, 9), tmp_path / "p" / "soft.jpg", quality=90)
    first = CliRunner().invoke(app, ["scan", str(photo.parent), "--embed", "--workers", "1", "--report", str(tmp_path / "r.jsonl")])
    assert first.exit_code == 0, first.output
    assert "XMP: 1 written" in first.stdout and read_fields(read_embedded_bytes(photo))["xmp:Rating"] == "-1"

    def no_decode(*a, **k):
        raise AssertionError("the embedded photo's score must still be cached")

    monkeypatch.setattr(cull.analyse, "decode_levels", no_decode)
    again = CliRunner().invoke(app, ["scan", str(photo.parent), "--embed", "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert "(1 from cache)" in again.stdout and "XMP: 0 written, 1 unchanged" in again.stdout


def read_embedded_bytes(photo: Path) -> bytes:
    from cull.sidecars import read_embedded

    data = read_embedded(photo)
    assert data is not None
    return data


def test_a_photo_kept_after_an_earlier_verdict_ends_with_no_sidecar_of_culls(tmp_path):
    """A photo rejected (or placed in a burst) by an earlier scan and kept now: the sidecar cull created
    goes, a sidecar the user had comes back byte for byte (README: a kept photo gets no sidecar)."""
    import os

    from cull.cli import app

    photos = tmp_path / "p"
    save(blurred_image(0, 8), photos / "mine.jpg")
    save(blurred_image(1, 8), photos / "theirs.jpg")
    users = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>harbour</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>'
    (photos / "theirs.jpg.xmp").write_bytes(users)
    runner = CliRunner()
    first = runner.invoke(app, ["scan", str(photos), "--workers", "1", "--show", "none"])
    assert first.exit_code == 0 and read_fields((photos / "mine.jpg.xmp").read_bytes())["cull:Verdict"] == "reject"
    assert read_fields((photos / "theirs.jpg.xmp").read_bytes())["cull:Verdict"] == "reject"
    for i, name in enumerate(("mine.jpg", "theirs.jpg")):  # the photos are replaced by sharp ones
        save(sharp_image(i), photos / name)
        os.utime(photos / name, (2_000_000_000 + i, 2_000_000_000 + i))
    again = runner.invoke(app, ["scan", str(photos), "--workers", "1", "--show", "none"])
    assert again.exit_code == 0 and "2 keep" in again.stdout and "XMP: 2 written" in again.stdout
    assert not (photos / "mine.jpg.xmp").exists() and (photos / "theirs.jpg.xmp").read_bytes() == users
    third = runner.invoke(app, ["scan", str(photos), "--workers", "1", "--show", "none"])
    assert "XMP: 0 written" in third.stdout and not (photos / "mine.jpg.xmp").exists()
