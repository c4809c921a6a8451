"""Is a shot protected? Read every place where the user's rating, pick or accept can live.

A shot is one photo plus its RAW/JPEG partner; one shot gets one verdict.  For each file of the shot
the places are:

- the XMP embedded in the file (Lightroom writes ratings *into* JPEG/TIFF/DNG; cameras into RAWs):
  read with pyexiv2 when it is installed, and always by cull itself (scan_packets: where the format
  keeps XMP, or by packet scanning, the XMP spec's fallback for any format), so the default install
  sees embedded ratings too;
- ``NAME.EXT.xmp`` (darktable, digiKam);
- ``NAME.xmp`` (Lightroom, Bridge, Capture One, digiKam's "commercial programs" naming), beside a
  JPEG too, unless a RAW of the same name owns it;
- and a sidecar whose name differs from those only in case or Unicode normalisation (``img_5.xmp``
  beside ``IMG_5.JPG``, an NFC name beside an NFD photo name): on macOS, Windows and SMB shares that
  *is* the sidecar, so a library made there and read here has it so.  Not when another photo of the
  folder has such a name too (``IMG_3.JPG`` beside ``IMG_3.jpg``): then only exact names count.

A sidecar is opened only when it is a regular file of at most 64 MB (a FIFO would block, a link
to /dev/zero would never end).  A sidecar that is malformed or cannot be read holds no rating any
application could show; it is skipped here, and the XMP writer reports it as an error.

Over many shots (a scan), a ``Places`` lists each folder once, so a sidecar that does not exist costs
no stat; with a ``cull.cache.FactCache`` a regular file whose stamp (inode, size, mtime, ctime) is the
one recorded is not opened again: any edit, by any application, changes the stamp and is read.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO

from cull import __version__
from cull.cache import FactCache, stamp_of
from cull.errors import CullError, SidecarRefused
from cull.formats import is_photo, is_raw, tiff_ifds
from cull.fsutil import file_type
from cull.xmp import MAX_PACKET_BYTES, Packet, XmpError, has_cull_fields, user_labels, user_protection, user_rejection

if TYPE_CHECKING:
    from cull.scan import PhotoResult

log = logging.getLogger(__name__)

USER_VERDICT = ("cull", "UserVerdict")  # a decision made in `cull review` (see cull.review.decisions)
DECISIONS = ("reject", "keep", "uncertain")

MAX_SIDECAR_BYTES = MAX_PACKET_BYTES
SCAN_BYTES = 64 * 1024 * 1024  # embedded packets are looked for in the first 64 MB of a photo
MAX_PACKETS = 16
EMBEDDABLE = frozenset({".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".dng", ".png", ".webp"})


# fact names in cull.cache.FactCache: another cull version reads the files again
PROTECTION_FACT = f"protection@{__version__}"
USER_VERDICT_FACT = f"user_verdict@{__version__}"
CULL_VERDICT_FACT = f"cull_verdict@{__version__}"
USER_REJECT_FACT = f"user_reject@{__version__}"
USER_LABELS_FACT = f"user_labels@{__version__}"
EMBEDS_CULL_FACT = f"embeds_cull@{__version__}"


def name_key(name: str) -> str:
    """A file name as macOS, Windows and SMB shares compare it: case and Unicode normalisation
    (NFC / NFD) do not count."""
    return unicodedata.normalize("NFC", name).casefold()


def index_names(names: list[str]) -> dict[str, list[str]]:
    """``names`` by name_key: the names each one stands for."""
    index: dict[str, list[str]] = {}
    for name in names:
        index.setdefault(name_key(name), []).append(name)
    return index


_DUPLICATE = re.compile(r"(.+)_(\d{2,3})(\.[^.]+)\.xmp", re.IGNORECASE)  # darktable: NAME_NN.EXT.xmp


def darktable_duplicates(names: list[str], by_key: dict[str, list[str]]) -> dict[str, list[str]]:
    """darktable's sidecars of the duplicates (virtual copies) of each photo of a folder, NAME_NN.EXT.xmp,
    by name_key of the photo's name NAME.EXT (``by_key``: the folder's names, index_names).  The
    sidecar of a photo that has that name itself (IMG_0001_03.CR2 beside IMG_0001.CR2) is not one."""
    found: dict[str, list[str]] = {}
    for name in names:
        match = _DUPLICATE.fullmatch(name)
        if match and name_key(f"{match[1]}_{match[2]}{match[3]}") not in by_key:
            found.setdefault(name_key(match[1] + match[3]), []).append(name)
    return found


def duplicates_of(photo: Path, found: dict[str, list[str]], twin: bool) -> list[str]:
    """``photo``'s duplicate sidecars among ``found`` (darktable_duplicates); with a ``twin`` photo
    (IMG_3.JPG beside IMG_3.jpg) only those named after exactly this one."""
    names = found.get(name_key(photo.name), [])
    if twin:
        names = [name for name in names if (match := _DUPLICATE.fullmatch(name)) and match[1] + match[3] == photo.name]
    return names


def has_twin(photo: Path, alike: list[str]) -> bool:
    """Whether another photo's name is among ``alike`` (the names of ``photo``'s folder equal to
    its name but for case or normalisation): IMG_3.JPG beside IMG_3.jpg."""
    return any(name != photo.name and is_photo(Path(name)) for name in alike)


class Places:
    """One pass over many shots: each folder listed once (``may_exist``), and the fact cache.

    A name missing from the listing is taken as absent (compared by name_key, so a case-insensitive
    file system costs at most a stat); a file created by someone else after its folder was listed is
    seen by the next pass. cull's own writes are noted (``noted``)."""

    def __init__(self, facts: FactCache | None = None) -> None:
        self.facts = facts
        self._names: dict[str, tuple[list[str], dict[str, list[str]]] | None] = {}  # by folder (str: no Path hashing)
        self._duplicates: dict[str, dict[str, list[str]]] = {}
        self._raw_stems: dict[str, frozenset[str]] = {}
        self._photos_by_stem: dict[str, dict[str, list[str]]] = {}
        self.embedders: dict[Path, frozenset[str]] = {}  # by folder: its photos whose own XMP holds cull's fields (cull.sidecars)

    def _listing(self, folder: str) -> tuple[list[str], dict[str, list[str]]] | None:
        if folder not in self._names:
            try:
                names = os.listdir(folder or ".")
            except OSError:
                self._names[folder] = None
            else:
                self._names[folder] = (names, index_names(names))
        return self._names[folder]

    def names(self, folder: Path) -> list[str] | None:
        """The names in ``folder`` (None: it cannot be listed)."""
        listing = self._listing(str(folder))
        return None if listing is None else listing[0]

    def alike(self, path: Path) -> list[str] | None:
        """The names in ``path``'s folder equal to its name but for case or normalisation, its own
        included when it exists (None: the folder cannot be listed)."""
        folder, name = os.path.split(str(path))
        listing = self._listing(folder)
        return None if listing is None else listing[1].get(name_key(name), [])

    def raw_stems(self, folder: Path) -> frozenset[str]:
        """The stems (lower case) of the RAW files in ``folder``, worked out once per folder."""
        key = str(folder)
        if key not in self._raw_stems:
            names = self.names(folder) or []
            self._raw_stems[key] = frozenset(Path(n).stem.lower() for n in names if is_raw(Path(n)))
        return self._raw_stems[key]

    def photos_by_stem(self, photo: Path) -> list[str]:
        """The photos of ``photo``'s folder whose stem is its stem but for case or normalisation
        (the photos that share its ``NAME.xmp``), worked out once per folder."""
        folder = os.path.split(str(photo))[0]
        if folder not in self._photos_by_stem:
            by_stem: dict[str, list[str]] = {}
            for name in self.names(Path(folder)) or []:
                if is_photo(Path(name)):
                    by_stem.setdefault(name_key(Path(name).stem), []).append(name)
            self._photos_by_stem[folder] = by_stem
        return self._photos_by_stem[folder].get(name_key(photo.stem), [])

    def duplicates(self, photo: Path) -> list[str]:
        """darktable's sidecars of ``photo``'s duplicates in its folder (darktable_duplicates, duplicates_of)."""
        folder = os.path.split(str(photo))[0]
        listing = self._listing(folder)
        if listing is None:
            return []
        if folder not in self._duplicates:
            self._duplicates[folder] = darktable_duplicates(*listing)
        return duplicates_of(photo, self._duplicates[folder], has_twin(photo, listing[1].get(name_key(photo.name), [])))

    def may_exist(self, path: Path) -> bool:
        folder, name = os.path.split(str(path))
        listing = self._listing(folder)
        return listing is None or name_key(name) in listing[1]

    def any_sidecar(self, photo: Path) -> bool:
        """Whether ``NAME.EXT.xmp``, ``NAME.xmp`` or a duplicate's ``NAME_NN.EXT.xmp`` of ``photo`` may exist
        (string work only)."""
        listing = self._listing(os.path.split(str(photo))[0])
        return (listing is None or name_key(photo.name + ".xmp") in listing[1] or name_key(photo.stem + ".xmp") in listing[1]
                or bool(self.duplicates(photo)))

    def noted(self, path: Path, exists: bool) -> None:
        """cull created (or removed) ``path``."""
        folder, name = os.path.split(str(path))
        listing = self._names.get(folder)
        if listing is not None and exists:
            alike = listing[1].setdefault(name_key(name), [])
            if name not in alike:
                alike.append(name)
                listing[0].append(name)

    def regular(self, path: Path) -> os.stat_result | None:
        """The lstat of ``path`` when it is a regular file (not a link) that facts may stand for."""
        if self.facts is None or not self.may_exist(path):
            return None
        try:
            info = os.lstat(path)
        except OSError:
            return None
        return info if stat.S_ISREG(info.st_mode) else None


def _exists(path: Path, places: Places | None) -> bool:
    return (places is None or places.may_exist(path)) and path.exists()


def adobe_sidecar(photo: Path) -> Path:
    return photo.with_suffix(".xmp")


def darktable_sidecar(photo: Path) -> Path:
    return photo.with_name(photo.name + ".xmp")


def raw_owns_adobe_sidecar(photo: Path, partner: Path | None = None, places: Places | None = None) -> bool:
    """Whether ``NAME.xmp`` beside a non-RAW ``photo`` belongs to a RAW of the same name instead."""
    if is_raw(photo):
        return False
    if partner is not None and is_raw(partner) and partner.stem == photo.stem:
        return True
    if not _exists(adobe_sidecar(photo), places):
        return False
    return photo.stem.lower() in (places or Places()).raw_stems(photo.parent)


def sidecar_places(photo: Path, partner: Path | None = None, places: Places | None = None) -> list[Path]:
    """The sidecar names that belong to ``photo`` (existing or not): darktable's, then Adobe's."""
    found = [darktable_sidecar(photo)]
    if not raw_owns_adobe_sidecar(photo, partner, places):
        found.append(adobe_sidecar(photo))
    return list(dict.fromkeys(found))


def existing_name(place: Path, photo: Path, places: Places | None = None) -> Path:
    """``place`` (a sidecar name of ``photo``), or the one existing sidecar whose name differs from it
    only in case or normalisation (the same file on macOS, Windows and SMB shares) when ``place``
    itself does not exist and no other photo has the photo's name but for case: cull writes into the
    user's ``img_5.jpg.xmp`` rather than beside it (copied back there, the two would collide)."""
    if os.path.lexists(place):
        return place
    places = places or Places()
    alike = [name for name in places.alike(place) or [] if name != place.name]
    if len(alike) == 1 and not has_twin(photo, places.alike(photo) or []):
        return place.with_name(alike[0])
    return place


def sidecars_to_read(photo: Path, partner: Path | None = None, places: Places | None = None) -> list[Path]:
    """Where ``photo``'s user rating, pick or decision may be: sidecar_places, then the existing
    sidecars whose names differ from those only in case or normalisation (see the module docstring),
    then darktable's sidecars of the photo's duplicates (a 5-star virtual copy keeps the shot too)."""
    places = places or Places()  # one listing of the folder for the names below (pass one for many photos)
    exact = sidecar_places(photo, partner, places)
    duplicates = [photo.with_name(name) for name in places.duplicates(photo)]
    if has_twin(photo, places.alike(photo) or []):
        return exact + duplicates
    alike = [place.with_name(name) for place in exact for name in places.alike(place) or []]
    return list(dict.fromkeys(exact + alike + duplicates))


def read_sidecar(path: Path, places: Places | None = None) -> bytes | None:
    """The bytes of a sidecar, or None when there is none (``places``: absent from its folder's listing).

    Raises SidecarRefused for something that is not a regular file (FIFO, device, folder) or is
    over 64 MB, and OSError when it cannot be read."""
    if places is not None and not places.may_exist(path):
        return None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise SidecarRefused(f"not a regular file ({file_type(info.st_mode)}); left alone")
    if info.st_size > MAX_SIDECAR_BYTES:
        raise SidecarRefused(f"XMP sidecar of {info.st_size / 1e6:.0f} MB is over the 64 MB cull reads; left alone")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never blocks, even if swapped for a FIFO
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise SidecarRefused("not a regular file; left alone")
        data = fh.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarRefused("XMP sidecar is over the 64 MB cull reads; left alone")
    return data


def load_pyexiv2() -> ModuleType | None:
    """The pyexiv2 module, or None when the ``[embed]`` extra is not installed."""
    try:
        import pyexiv2
    except ImportError:
        return None
    pyexiv2.set_log_level(4)  # exiv2's warnings ("[warn] Directory ...") would reach the terminal raw, without a file name
    return pyexiv2


def read_embedded(photo: Path) -> bytes | None:
    """The XMP packet inside ``photo`` through pyexiv2. Raises CullError (also when pyexiv2 is missing)."""
    pyexiv2 = load_pyexiv2()
    if pyexiv2 is None:
        raise CullError("--embed needs pyexiv2: pip install 'cull-focus[embed]'")
    try:
        with pyexiv2.Image(str(photo)) as image:
            text = image.read_raw_xmp()
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError with its own message
        raise CullError(f"cannot read embedded XMP: {exc}") from None
    return text.encode("utf-8") if text and text.strip() else None


def scan_packets(photo: Path) -> list[bytes]:
    """XMP packets inside ``photo``, from where its format keeps them (XMP spec part 3): a TIFF-based
    file's (TIFF, DNG, NEF, CR2, ARW, ...) XMLPacket tags, a JPEG's marker segments before the image
    data; any other format (PNG, HEIC, CR3, RAF, ...) or a container that does not parse is scanned
    in its first 64 MB for ``<x:xmpmeta ... </x:xmpmeta>``.  A 50 MB RAW so costs an IFD walk, not
    a read of the whole file."""
    try:
        fd = os.open(photo, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return []
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:  # a folder named like a photo, a FIFO ...
        os.close(fd)
        return []
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        placed: bytes | None = None
        if head[:2] == b"\xff\xd8":
            placed = _jpeg_segments(fh)
        elif head in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            placed = _tiff_packets(fh, photo.name)
        if placed is not None:
            return _find_packets(placed, len(placed))
        end = min(info.st_size, SCAN_BYTES)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _find_packets(data, end)


def _find_packets(data: bytes | mmap.mmap, end: int) -> list[bytes]:
    packets: list[bytes] = []
    for opening, closing in ((b"<x:xmpmeta", b"</x:xmpmeta>"), (b"<x:xapmeta", b"</x:xapmeta>")):
        at = data.find(opening, 0, end)
        while at >= 0 and len(packets) < MAX_PACKETS:
            stop = data.find(closing, at, min(end, at + MAX_SIDECAR_BYTES))
            if stop < 0:
                break
            packets.append(bytes(data[at:stop + len(closing)]))
            at = data.find(opening, stop, end)
    return packets


def _jpeg_segments(fh: BinaryIO) -> bytes | None:
    """The payloads of a JPEG's APPn and COM segments (where XMP lives), up to the image data; None
    when the marker structure breaks before it (the caller scans the file instead)."""
    fh.seek(2)
    found = bytearray()
    while fh.tell() < SCAN_BYTES:
        marker = fh.read(2)
        while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
            marker = marker[1:] + fh.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in (0xDA, 0xD9):  # start of scan / end of image: no metadata after it
            return bytes(found)
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:  # no length
            continue
        size = fh.read(2)
        if len(size) < 2 or int.from_bytes(size, "big") < 2:
            return None
        length = int.from_bytes(size, "big") - 2
        if 0xE0 <= marker[1] <= 0xEF or marker[1] == 0xFE:
            payload = fh.read(length)
            if len(payload) < length:
                return None
            found += payload
        else:
            fh.seek(length, os.SEEK_CUR)
    return bytes(found)


def _tiff_packets(fh: BinaryIO, name: str) -> bytes | None:
    """The XMLPacket (tag 700) values of a TIFF-based file's IFDs and SubIFDs; None when the
    container does not parse (the caller scans the file instead)."""
    found = b""
    try:
        with tiff_ifds(fh, name) as ifds:
            if ifds is None:
                return None
            for ifd in ifds:
                tag = ifd.tags.get(700)
                if tag is not None:
                    value = tag.value
                    found += value.encode("utf-8") if isinstance(value, str) else bytes(value)
    except Exception:  # noqa: BLE001 - an odd container: scan it
        log.debug("TIFF structure not parsed; scanning for XMP", exc_info=True)
        return None
    return found


def embedded_packets(photo: Path) -> list[bytes]:
    """Every XMP packet inside ``photo`` that cull can find (pyexiv2 when installed, and a scan)."""
    found: list[bytes] = []
    if photo.suffix.lower() in EMBEDDABLE and load_pyexiv2() is not None:
        try:
            packet = read_embedded(photo)
        except CullError as exc:
            log.info("%s: %s; scanning the file for XMP instead", photo, exc)
        else:
            if packet is not None:
                found.append(packet)
    return found + scan_packets(photo)


def sidecar_protection(data: bytes) -> str | None:
    """The user's rating, pick or accept in one sidecar's bytes. Raises XmpError."""
    return user_protection(Packet(data))


_USER_VERDICT_WORDS = tuple("UserVerdict".encode(encoding) for encoding in ("utf-8", "utf-16-le", "utf-16-be"))


def sidecar_user_verdict(data: bytes) -> str | None:
    """The decision of `cull review` in one sidecar's bytes, or None. Raises XmpError."""
    if not any(word in data for word in _USER_VERDICT_WORDS):  # a quick no; Packet reads UTF-16 sidecars too
        return None
    return _packet_user_verdict(Packet(data))


def _known(places: Places | None, path: Path, fact: str) -> tuple[bool, object, str | None]:
    """(known, value, stamp): the cached ``fact`` of ``path`` when its stamp is unchanged."""
    info = places.regular(path) if places is not None else None
    if info is None or places is None or places.facts is None:
        return False, None, None
    stamp = stamp_of(info)
    if stamp is None:
        return False, None, None
    facts = places.facts.get(path, stamp)
    return fact in facts, facts.get(fact), stamp


def _learn(places: Places | None, path: Path, stamp: str | None, fact: str, value: str | None) -> None:
    if places is not None and places.facts is not None and stamp is not None:
        places.facts.put(path, stamp, **{fact: value})


def file_protection(photo: Path, partner: Path | None = None, places: Places | None = None) -> str | None:
    """Why ``photo`` itself (its sidecars and embedded XMP) must not be marked rejected, or None."""
    reason = _from_sidecars(photo, partner, places, PROTECTION_FACT, sidecar_protection, unreadable_protects=True)
    if reason:
        return reason
    fact = f"embedded-{PROTECTION_FACT}-{load_pyexiv2() is not None}"
    known, value, stamp = _known(places, photo, fact)
    if known:
        return str(value) if value else None
    reason = _embedded_protection(photo)
    _learn(places, photo, stamp, fact, reason)
    return reason


def _embedded_protection(photo: Path) -> str | None:
    return _first_embedded(photo, user_protection)


def _first_embedded(photo: Path, read: Callable[[Packet], str | None]) -> str | None:
    """The first non-empty ``read`` of an XMP packet inside ``photo``; unreadable packets are skipped."""
    for packet in embedded_packets(photo):
        try:
            reason = read(Packet(packet))
        except XmpError as exc:
            log.info("%s: an embedded XMP packet is unreadable (%s)", photo, exc)
            continue
        if reason:
            return reason
    return None


def shot_protection(photo: Path, partner: Path | None, places: Places | None = None) -> str | None:
    """Why the shot (``photo`` and its RAW/JPEG ``partner``) must never be marked or treated as
    rejected: "user rated it 3 stars", "user picked it (flagged)", "user accepted it (digiKam pick
    label)", an XMP that cannot be read ... or None when nothing protects it."""
    for member, other in ((photo, partner), (partner, photo)):
        if member is not None:
            reason = file_protection(member, other, places)
            if reason:
                return reason
    return None


def protected_shots(results: Sequence[PhotoResult], facts: FactCache | None = None) -> dict[Path, str]:
    """The rejected shots among ``results`` that the user's rating, pick, accept or decision keeps
    (path -> why), as the XMP writer and `cull move` judge them; each folder listed once.  With
    ``facts``, a sidecar or photo unchanged since cull last read it is not read again."""
    places = Places(facts)
    found = {}
    for result in results:
        if result.verdict is not None and result.verdict.value == "reject":
            why = shot_protection(result.path, result.partner, places)
            if why:
                found[result.path] = why
    return found


def sidecar_user_rejection(data: bytes) -> str | None:
    """The user's own reject (user_rejection) in one sidecar's bytes, or None. Raises XmpError."""
    return user_rejection(Packet(data))


def shot_user_rejection(photo: Path, partner: Path | None, places: Places | None = None) -> str | None:
    """Whether the user rejected the shot in another program (a reject value in any of its sidecars or
    its embedded XMP that cull did not write), or None: such a frame sets no bar for --keep-best."""
    for member, other in ((photo, partner), (partner, photo)):
        if member is None:
            continue
        found = _from_sidecars(member, other, places, USER_REJECT_FACT, sidecar_user_rejection) or (
            _first_embedded(member, user_rejection) if member.suffix.lower() in EMBEDDABLE else None)
        if found:
            return found
    return None


def sidecar_cull_verdict(data: bytes) -> str | None:
    """The verdict a cull scan wrote into one sidecar's bytes (cull:Verdict), or None. Raises XmpError."""
    return Packet(data).get(("cull", "Verdict")) if has_cull_fields(data) else None


def read_cull_verdict(photo: Path, partner: Path | None = None, places: Places | None = None) -> str | None:
    """The verdict the last scan wrote into ``photo``'s sidecars (it may have judged with another card
    or strictness than the caller), or None."""
    return _from_sidecars(photo, partner, places, CULL_VERDICT_FACT, sidecar_cull_verdict)


def read_user_verdict(photo: Path, partner: Path | None = None, places: Places | None = None,
                      unreadable_counts: bool = False) -> str | None:
    """The decision recorded in ``photo``'s sidecars by an earlier review, or None.  With
    ``unreadable_counts``, a sidecar cull cannot parse that may hold a decision or rating answers with why
    it cannot be read (not a decision: what the user decided is unknown)."""
    found = _from_sidecars(photo, partner, places, USER_VERDICT_FACT, sidecar_user_verdict, unreadable_protects=unreadable_counts)
    if found or photo.suffix.lower() not in EMBEDDABLE or not embeds_cull_fields(photo, places):
        return found  # the review writes into a photo only where a scan with --embed put cull's fields
    # where `scan --embed` put cull's fields, the review wrote the decision inside the photo too: it
    # still holds it when the photo and its sidecar part (Lightroom renames or moves only the photo)
    fact = f"embedded-{USER_VERDICT_FACT}-{load_pyexiv2() is not None}"
    known, value, stamp = _known(places, photo, fact)
    if known:
        return str(value) if value else None
    found = _first_embedded(photo, _packet_user_verdict)
    _learn(places, photo, stamp, fact, found)
    return found


def _packet_user_verdict(packet: Packet) -> str | None:
    value = packet.get(USER_VERDICT)
    return value if value in DECISIONS else None


def shot_user_verdict(photo: Path, partner: Path | None = None, places: Places | None = None,
                      unreadable_counts: bool = False) -> str | None:
    """The shot's decision from `cull review`: ``photo``'s, else its RAW/JPEG ``partner``'s, or None
    (``unreadable_counts``: see read_user_verdict)."""
    return read_user_verdict(photo, partner, places, unreadable_counts) or (
        read_user_verdict(partner, photo, places, unreadable_counts) if partner else None)


def _from_sidecars(
    photo: Path, partner: Path | None, places: Places | None, fact: str, read: Callable[[bytes], str | None],
    unreadable_protects: bool = False,
) -> str | None:
    """The first non-empty ``read(sidecar bytes)`` over ``photo``'s sidecar places, in order.

    With ``places``, a folder without sidecars costs nothing and a sidecar whose stamp is the one
    recorded under ``fact`` is not opened again.  A sidecar that is refused (not a regular file, too
    big), unreadable or malformed is reported by the XMP writer as an error; here it is skipped, or
    with ``unreadable_protects`` it is the answer: another program may well read a rating in it
    (exiftool and exiv2 read a packet cull refuses), and when unsure cull does not reject."""
    if places is not None and not places.any_sidecar(photo):
        return None
    for place in sidecars_to_read(photo, partner, places):
        if places is not None and not places.may_exist(place):
            continue
        known, value, stamp = _known(places, place, fact)
        if known:
            if value:
                return str(value)
            continue
        data = None
        try:
            data = read_sidecar(place)  # regular files only, size-capped (never blocks on a FIFO)
            if data is None:
                continue
            found = read(data)
        except (OSError, CullError) as exc:  # SidecarRefused and XmpError are CullErrors
            log.info("%s: not read for the user's rating or decision: %s", place, exc)
            if unreadable_protects and (data is None or _names_a_rating(data)):
                return f"its sidecar {place.name} cannot be read, and may hold a rating ({_why(exc)})"
            continue
        _learn(places, place, stamp, fact, found)
        if found:
            return found
    return None


_RATING_WORDS = tuple(word.encode(encoding) for word in ("Rating", "pick", "Pick", "UserVerdict")
                      for encoding in ("utf-8", "utf-16-le", "utf-16-be"))


def _names_a_rating(data: bytes) -> bool:
    """Whether bytes cull cannot parse as XMP could still hold a rating, pick or decision for a reader
    more forgiving than cull's (the property's name is in them)."""
    return any(word in data for word in _RATING_WORDS)


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)).rstrip(".")


def apply_user_verdicts(results: Sequence[PhotoResult], places: Places | None = None) -> list[PhotoResult]:
    """``results`` with each shot's decision from `cull review` in place of cull's verdict.

    A hook for callers that act on verdicts (scan's report and XMP writer, `cull move`): with it,
    a photo the user left uncertain or kept is never rejected or moved, and one the user rejected
    is treated as a reject. Reads only sidecars; results without a user decision are returned as is.
    """
    from cull.decide import Decision, Verdict

    out = []
    for result in results:
        user = shot_user_verdict(result.path, result.partner, places) if result.decision is not None else None
        if user is not None and result.decision is not None and user != result.decision.verdict.value:
            result = replace(result, decision=Decision(Verdict(user), f"your decision in cull review (cull said {result.decision.verdict.value})"))
        out.append(result)
    return out


def shot_user_labels(photo: Path, partner: Path | None, places: Places | None = None) -> frozenset[str]:
    """The fields of an *uncertain* verdict ("xmp:Label", "digiKam:PickLabel") the user owns anywhere in
    the shot: in any sidecar or embedded packet of the photo or its partner (xmp.user_labels).  cull
    sets them in no place of the shot, so a shot never shows the user's colour in one place and cull's
    yellow in another, nor the label the user took off.  With ``places``, files whose stamp is the one
    recorded are not read again."""
    owned: set[str] = set()
    for member, other in ((photo, partner), (partner, photo)):
        if member is None:
            continue
        if places is None or places.any_sidecar(member):
            for place in sidecars_to_read(member, other, places):
                if places is None or places.may_exist(place):
                    owned |= _known_labels(places, place, USER_LABELS_FACT, partial(_sidecar_labels, place))
        if member.suffix.lower() in EMBEDDABLE:
            owned |= _known_labels(places, member, f"embedded-{USER_LABELS_FACT}-{load_pyexiv2() is not None}",
                                   partial(_embedded_labels, member))
    return frozenset(owned)


def _known_labels(places: Places | None, path: Path, fact: str, read: Callable[[], set[str]]) -> set[str]:
    known, value, stamp = _known(places, path, fact)
    if known:
        return set(str(value).split(",")) if value else set()
    found = read()
    _learn(places, path, stamp, fact, ",".join(sorted(found)) or None)
    return found


def _sidecar_labels(place: Path) -> set[str]:
    try:
        data = read_sidecar(place)
        return user_labels(Packet(data)) if data is not None else set()
    except (OSError, CullError) as exc:  # reported by the XMP writer when it is the target
        log.info("%s: not read for the user's labels: %s", place, exc)
        return set()


def _embedded_labels(photo: Path) -> set[str]:
    owned: set[str] = set()
    for packet in embedded_packets(photo):
        try:
            owned |= user_labels(Packet(packet))
        except XmpError as exc:
            log.info("%s: an embedded XMP packet is unreadable (%s)", photo, exc)
    return owned


def embeds_cull_fields(photo: Path, places: Places | None) -> bool:
    """Whether the XMP inside ``photo`` holds cull's fields (an earlier scan with --embed)."""
    if places is None:
        return _holds_cull_fields(photo)
    return photo.name in _embedders(photo.parent, places)


def _embedders(folder: Path, places: Places) -> frozenset[str]:
    """The photos of ``folder`` whose own XMP holds cull's fields: a walk of each one's metadata segments
    (cull.protect.scan_packets), remembered for the folder's version in the fact cache (cull embeds by a
    rename in the folder, which changes it), so an unchanged folder costs one look-up, not one per photo."""
    if folder in places.embedders:
        return places.embedders[folder]
    try:
        stamp = stamp_of(os.lstat(folder)) if places.facts is not None else None
    except OSError:
        stamp = None
    known = places.facts.get(folder, stamp).get(EMBEDS_CULL_FACT) if places.facts is not None and stamp else None
    if isinstance(known, list):
        found = frozenset(str(name) for name in known)
    else:
        names = places.names(folder) or []
        found = frozenset(name for name in names if Path(name).suffix.lower() in EMBEDDABLE
                          and _holds_cull_fields(folder / name))
        if places.facts is not None and stamp:
            places.facts.put(folder, stamp, **{EMBEDS_CULL_FACT: sorted(found)})
    places.embedders[folder] = found
    return found


def _holds_cull_fields(photo: Path) -> bool:
    return any(has_cull_fields(packet) for packet in scan_packets(photo))
