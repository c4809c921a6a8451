"""XMP as other programs write it and change it: structured and duplicated values, odd numbers, padding,
UTF-16, big and empty sidecars, and a user who takes back cull's reject in another application.

exiftool and exiv2 (what darktable and digiKam read XMP with) are the oracles where they are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cull.xmp
from cull.cli import app
from cull.protect import shot_protection
from cull.xmp import Packet, Verdict, XmpError, clear, has_cull_fields, merge, read_fields, user_protection
from tests.conftest import blurred_image, save

REJECT = Verdict("reject", 0.02, "defocus", "test-model")
UNCERTAIN = Verdict("uncertain", 0.4, "motion", "test-model")
HEAD = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"')
TAIL = "</rdf:RDF></x:xmpmeta>"
needs_exiv2 = pytest.mark.skipif(shutil.which("exiv2") is None, reason="exiv2 not installed (.ci/run installs it)")


def packet(body: str) -> bytes:
    """A packet whose one rdf:Description (xmp bound) holds ``body`` (attributes, then '>' children)."""
    return (HEAD + body + TAIL).encode()


def exiv2_rating(path: Path) -> str:
    run = subprocess.run(["exiv2", "-g", "Xmp.xmp.Rating", "-Pv", str(path)], capture_output=True, text=True)
    assert "Error" not in run.stderr, run.stderr
    return run.stdout.strip()


@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "NaN", "abc"])
def test_a_rating_that_is_no_usable_number_is_left_alone_and_stops_nothing(value):
    data = packet(f' xmp:Rating="{value}"/>')
    assert user_protection(Packet(data)) is None
    fields = read_fields(merge(data, REJECT).packet)
    assert fields["xmp:Rating"] == value and fields["xmpDM:pick"] == "-1"  # the user's text stays; cull flags beside it


@pytest.mark.parametrize(("body", "stars"), [
    ('><xmp:Rating rdf:parseType="Resource"><rdf:value>4</rdf:value></xmp:Rating></rdf:Description>', 4),
    ('><xmp:Rating><rdf:Description><rdf:value>3</rdf:value></rdf:Description></xmp:Rating></rdf:Description>', 3),
    ('><xmp:Rating rdf:value="2"/></rdf:Description>', 2),
    ('><xmp:Rating><rdf:Bag><rdf:li>5</rdf:li></rdf:Bag></xmp:Rating></rdf:Description>', 5),
    (' xmp:Rating="0"/><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/>',
     5),  # the rating twice: 0, then 5 in a second rdf:Description
    ('/><rdf:Description rdf:about="" xmlns:xap="http://ns.adobe.com/xap/1.0" xap:Rating="4"/>', 4),  # no trailing slash
])
def test_ratings_written_in_other_forms_protect_as_exiftool_reads_them(body, stars):
    data = packet(body)
    assert user_protection(Packet(data)) == f"user rated it {stars} star{'s' if stars > 1 else ''}"
    result = merge(data, REJECT)
    assert result.conflict and b'"-1"' not in result.packet and b">-1<" not in result.packet


@needs_exiv2
def test_a_structured_rating_of_zero_is_set_in_place_never_twice(tmp_path):
    """A second xmp:Rating beside the structured one made exiv2 refuse the whole sidecar (darktable and
    digiKam would lose every field in it); clear gives back the file that was there."""
    original = packet('><xmp:Rating><rdf:Bag><rdf:li>0</rdf:li></rdf:Bag></xmp:Rating></rdf:Description>')
    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_bytes(merge(original, REJECT).packet)
    assert exiv2_rating(sidecar) == "-1"
    assert Packet(sidecar.read_bytes()).values(("xmp", "Rating")) == ["-1"]
    assert clear(sidecar.read_bytes()) == original


def test_nul_padding_after_the_packet_is_read_as_exiftool_reads_it():
    assert user_protection(Packet(packet(' xmp:Rating="5"/>') + b"\n" + b"\0" * 64)) == "user rated it 5 stars"


def test_a_sidecar_cull_cannot_parse_protects_the_shot_when_it_names_a_rating(tmp_path):
    """exiftool and exiv2 read a rating from packets cull's strict parser refuses: cull does not reject."""
    photo = save(blurred_image(1, 8.0), tmp_path / "IMG_8.JPG")
    (tmp_path / "IMG_8.KDC").write_bytes(b"raw data")
    (tmp_path / "IMG_8.KDC.xmp").write_bytes(packet(' xmp:Rating="5" xmp:Label="caf\xe9"/>').replace(b"\xc3\xa9", b"\xe9"))
    assert "IMG_8.KDC.xmp cannot be read, and may hold a rating" in (shot_protection(photo, tmp_path / "IMG_8.KDC") or "")
    (tmp_path / "IMG_8.KDC.xmp").write_bytes(b"notes, not XMP")  # nothing any program reads a rating from
    assert shot_protection(photo, tmp_path / "IMG_8.KDC") is None


def test_a_reject_the_user_takes_back_elsewhere_is_not_set_again():
    """darktable sets the rating back to 0: the user's answer. The next scan leaves it, takes back
    cull's other reject marks, and the shot counts as protected (no reject in its other sidecars)."""
    first = merge(packet("/>"), REJECT).packet
    edited = Packet(first)
    edited.set(("xmp", "Rating"), "0")  # what darktable writes for "0 stars"
    user_copy = edited.serialize()
    assert user_protection(Packet(user_copy)) == "user took back cull's reject (xmp:Rating)"
    again = merge(user_copy, REJECT)
    fields = read_fields(again.packet)
    assert again.conflict == "user took back cull's reject (xmp:Rating)"
    assert fields["xmp:Rating"] == "0" and fields["xmpDM:pick"] is None and fields["digiKam:PickLabel"] is None
    third = merge(again.packet, REJECT)  # remembered (cull:Overruled), not only while cull:Changed says so
    assert third.conflict == again.conflict and read_fields(third.packet)["xmp:Rating"] == "0"
    assert b"Overruled" not in clear(third.packet)  # xmp clear: only the user's 0 is left


def test_a_label_the_user_removed_is_not_put_back():
    first = merge(packet("/>"), UNCERTAIN).packet
    edited = Packet(first)
    edited.remove(("xmp", "Label"))
    again = read_fields(merge(edited.serialize(), UNCERTAIN).packet)
    assert again["xmp:Label"] is None and again["digiKam:PickLabel"] == "2"
    assert user_protection(Packet(merge(edited.serialize(), UNCERTAIN).packet)) is None  # not a reject taken back


def test_scan_keeps_a_reject_the_user_took_back_in_another_program(tmp_path):
    photo = save(blurred_image(1, 8.0), tmp_path / "a.jpg", quality=92)
    runner = CliRunner()
    assert runner.invoke(app, ["scan", str(tmp_path), "--workers", "1"]).exit_code == 0
    sidecar = tmp_path / "a.jpg.xmp"
    assert read_fields(sidecar.read_bytes())["xmp:Rating"] == "-1"
    edited = Packet(sidecar.read_bytes())
    edited.set(("xmp", "Rating"), "0")
    sidecar.write_bytes(edited.serialize())
    again = runner.invoke(app, ["scan", str(tmp_path), "--workers", "1"])
    assert again.exit_code == 0 and "user took back cull's reject" in again.stderr
    assert read_fields(sidecar.read_bytes())["xmp:Rating"] == "0"
    moved = runner.invoke(app, ["move", str(tmp_path), "--rejects", "--workers", "1"])
    assert "kept in place:" in moved.stderr and photo.is_file()


def test_a_big_sidecar_is_not_copied_into_itself_and_nothing_grows_past_what_cull_reads(monkeypatch):
    big = packet(' xmp:Label="Red" xmlns:dt="http://darktable.sf.net/" dt:history="' + "x" * 3_000_000 + '"/>')
    merged = merge(big, REJECT).packet
    assert len(merged) < len(big) + 4096 and b"Original" not in merged  # a 2 MB+ original is not kept whole
    cleared = clear(merged)
    assert cleared is not None and read_fields(cleared)["xmp:Rating"] is None and b"x" * 3_000_000 in cleared
    monkeypatch.setattr(cull.xmp, "MAX_PACKET_BYTES", 1_000_000)
    with pytest.raises(XmpError, match="MB cull reads back"):
        merge(big, REJECT)


@pytest.mark.parametrize("existing", [b"", b"\n  \n"])
def test_an_empty_sidecar_that_was_there_comes_back_as_it_was(existing):
    assert clear(merge(existing, REJECT).packet) == existing


def test_a_sidecar_rewritten_in_utf16_still_counts_as_culls():
    text = merge(packet("/>"), REJECT).packet.decode("utf-8").replace('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n', "")
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        assert has_cull_fields(text.encode(encoding))


def test_clear_leaves_a_broken_sidecar_of_another_program_alone():
    broken = b"<x:xmpmeta><rdf:RDF>truncated"
    assert clear(broken) is broken


@pytest.mark.skipif(os.geteuid() != 0, reason="root writes anywhere; an ordinary user is kept out by os.access")
def test_root_leaves_a_folder_locked_without_write_bits_alone(tmp_path):
    """A root cron job or NAS container: a 555 folder is locked on purpose, as a 444 sidecar is."""
    folder = tmp_path / "locked"
    save(blurred_image(1, 8.0), folder / "c.jpg", quality=92)
    folder.chmod(0o555)
    try:
        result = CliRunner().invoke(app, ["scan", str(folder), "--workers", "1"])
        assert result.exit_code == 1 and "read-only folder" in result.output
        assert sorted(p.name for p in folder.iterdir()) == ["c.jpg"]
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(("body", "own"), [
    (' xmlns:digiKam="http://www.digikam.org/ns/1.0/" digiKam:ColorLabel="5"/>', True),  # blue in digiKam
    (' xmlns:digiKam="http://www.digikam.org/ns/1.0/" digiKam:ColorLabel="0"/>', False),  # none
    (' xmlns:darktable="http://darktable.sf.net/"><darktable:colorlabels><rdf:Seq><rdf:li>0</rdf:li>'
     '<rdf:li>3</rdf:li></rdf:Seq></darktable:colorlabels></rdf:Description>', True),  # red and blue in darktable
    (' xmlns:darktable="http://darktable.sf.net/"><darktable:colorlabels><rdf:Seq/></darktable:colorlabels>'
     '</rdf:Description>', False),
])
def test_an_uncertain_photo_the_user_colour_labelled_in_digikam_or_darktable_gets_no_yellow(body, own):
    fields = read_fields(merge(packet(body), UNCERTAIN).packet)
    assert fields["digiKam:PickLabel"] == "2" and fields["xmp:Label"] == (None if own else "Yellow")


def test_utf16_packets_are_read_whole():
    """NUL padding is stripped from 8-bit packets only: in UTF-16 every other byte is a NUL."""
    text = ('<?xml version="1.0" encoding="UTF-16"?>' + HEAD + ' xmp:Rating="3"/>' + TAIL)
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        assert user_protection(Packet(text.encode(encoding))) == "user rated it 3 stars", encoding


def test_a_reject_the_user_gives_again_after_taking_it_back_is_not_called_taken_back():
    edited = Packet(merge(packet("/>"), REJECT).packet)
    edited.set(("xmp", "Rating"), "0")
    taken_back = merge(edited.serialize(), REJECT).packet
    again = Packet(taken_back)
    again.set(("xmp", "Rating"), "-1")  # the user agrees with cull after all
    assert user_protection(Packet(again.serialize())) is None
    result = merge(again.serialize(), REJECT)
    assert result.conflict is None and read_fields(result.packet)["xmp:Rating"] == "-1"


def test_culls_json_fields_that_are_not_its_own_are_ignored_not_a_crash():
    deep = packet(' xmlns:cull="https://github.com/cull-photo/cull/ns/1.0/" cull:Verdict="reject" cull:Overruled="'
                  + "[" * 200_000 + '"/>')
    assert read_fields(merge(deep, REJECT).packet)["xmp:Rating"] == "-1"
    forged = packet(' xmp:Label="Red" xmlns:cull="https://github.com/cull-photo/cull/ns/1.0/" cull:Verdict="reject" '
                    "cull:Changed='{\"rdf:about\": \"\", \"xmp:Label\": \"Blue\"}'/>")
    cleared = clear(forged)
    assert cleared is not None and b'rdf:about=""' in cleared  # only the fields cull writes are ever taken back
    assert read_fields(cleared)["xmp:Label"] == "Red"  # and only where they still hold what cull wrote


def test_clear_never_removes_a_big_sidecar_of_the_users():
    big = packet('/>') + b" " * (3 << 20)
    merged = merge(big, REJECT).packet
    assert b"Existed" in merged and b"Original" not in merged
    cleared = clear(merged)
    assert cleared is not None and read_fields(cleared)["xmp:Rating"] is None


def test_an_empty_container_is_no_value_and_is_filled_in_place():
    data = packet('><xmp:Rating><rdf:Bag/></xmp:Rating></rdf:Description>')
    assert user_protection(Packet(data)) is None
    merged = merge(data, REJECT).packet
    assert Packet(merged).values(("xmp", "Rating")) == ["-1"]
    assert clear(merged) == data  # the empty container comes back as it was, byte for byte
    for body in ('<xmp:Label><rdf:Alt/></xmp:Label>', '<digiKam:PickLabel xmlns:digiKam="http://www.digikam.org/ns/1.0/">'
                 '<rdf:Bag/></digiKam:PickLabel>'):
        original = packet(">" + body + "</rdf:Description>")
        assert clear(merge(original, UNCERTAIN).packet) == original


def test_utf16_packets_with_nul_padding_are_read():
    text = HEAD + ' xmp:Rating="4"/>' + TAIL
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        assert user_protection(Packet(text.encode(encoding) + b"\0" * 64)) == "user rated it 4 stars", encoding
