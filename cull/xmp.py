"""Merge cull's verdict into an XMP packet without losing anything the user or another program wrote.

Pure: bytes in, bytes out.  Conventions (researched; see README "Where the verdicts show"):

- Reject: ``xmp:Rating = -1`` (XMP spec, part 2, xmp:Rating: "-1 = rejected"; darktable, Bridge and
  exiftool follow it); Lightroom Classic 13.2+ writes its own reject flag as ``xmpDM:pick = -1`` with
  ``xmpDM:good = False`` (exiftool knows both tags since 12.80); digiKam's ``digiKam:PickLabel = 1``
  (digiKam never writes rating -1; PickLabel 0 none, 1 rejected, 2 pending, 3 accepted).
- Uncertain: ``digiKam:PickLabel = 2`` and ``xmp:Label`` = a colour word (default "Yellow";
  Lightroom matches colour labels by that word).
- cull's own fields live in the cull namespace: score, verdict, kind, model, what cull changed
  and the values it replaced (so ``cull xmp clear`` can restore them), and the original packet.

A user's rating >= 1, pick = 1 or PickLabel = 3 (accepted) is never overridden by a reject: the
conflict is recorded and reported instead.  Existing values are never replaced, only empty ones filled.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import zlib
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from cull.errors import CullError

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpDM": "http://ns.adobe.com/xmp/1.0/DynamicMedia/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "cull": "https://github.com/cull-photo/cull/ns/1.0/",
}
RATING, LABEL = ("xmp", "Rating"), ("xmp", "Label")
PICK, GOOD = ("xmpDM", "pick"), ("xmpDM", "good")
PICK_LABEL = ("digiKam", "PickLabel")
CULL_FIELDS = ("Score", "Verdict", "Kind", "Model", "Changed", "Prior", "Conflict", "Original", "Burst", "BurstRank", "BurstSize",
               "Overruled", "Existed")
REJECT_FIELDS = {RATING: "-1", PICK: "-1", GOOD: "False", PICK_LABEL: "1"}
OWNED = frozenset({*REJECT_FIELDS, LABEL})  # the fields outside cull's namespace that cull sets
MAX_PACKET_BYTES = 64 * 1024 * 1024  # the largest sidecar cull reads (cull.protect), so the largest it writes
MAX_ORIGINAL_BYTES = 2 * 1024 * 1024  # a packet up to this size is kept whole inside (cull:Original) for `xmp clear`
DEFAULT_LABEL = "Yellow"


class XmpError(CullError):
    """An existing XMP packet is malformed or unsafe; it is left untouched."""


@dataclass(frozen=True)
class Verdict:
    """What cull has to say about one photo."""

    verdict: str  # keep | uncertain | reject
    score: float | None
    kind: str | None
    model: str
    label: str = DEFAULT_LABEL
    burst: tuple[str, int, int] | None = None  # (burst id, rank: 1 = sharpest, frames) with scan --bursts


@dataclass(frozen=True)
class MergeResult:
    packet: bytes
    conflict: str | None = None


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _key(prop: tuple[str, str]) -> str:
    return f"{prop[0]}:{prop[1]}"


class Packet:
    """A parsed XMP packet: find, set and remove simple properties wherever they are written."""

    def __init__(self, data: bytes | None) -> None:
        self.prefixes: dict[str, str] = {}
        if data is None or not data.strip():
            self.root = ET.Element(_q("x", "xmpmeta"))
            ET.SubElement(ET.SubElement(self.root, _q("rdf", "RDF")), _q("rdf", "Description"), {_q("rdf", "about"): ""})
            return
        if not _utf16(data):  # NUL padding after the packet (a crash, a padding writer): exiftool reads it too
            data = data.rstrip(b"\0 \t\r\n")
        else:  # the same in UTF-16: whole NUL characters at the end, never half of the last one
            while len(data) % 2 == 0 and data.endswith(b"\0\0"):
                data = data[:-2]
        try:
            for _event, (prefix, uri) in SafeET.iterparse(io.BytesIO(data), events=("start-ns",)):
                self.prefixes.setdefault(prefix, uri)
            root = SafeET.fromstring(data)
        except (ET.ParseError, DefusedXmlException, ValueError) as exc:
            raise XmpError(f"malformed or unsafe XMP ({type(exc).__name__}: {exc})") from None
        if root.tag == _q("rdf", "RDF"):  # a bare rdf:RDF packet: wrap it
            wrapper = ET.Element(_q("x", "xmpmeta"))
            wrapper.append(root)
            root = wrapper
        if root.tag != _q("x", "xmpmeta") or root.find(_q("rdf", "RDF")) is None:
            raise XmpError("not an XMP packet (no x:xmpmeta / rdf:RDF)")
        self.root = root

    # -- access ---------------------------------------------------------------------------------
    def descriptions(self) -> list[ET.Element]:
        rdf = self.root.find(_q("rdf", "RDF"))
        assert rdf is not None
        found = rdf.findall(_q("rdf", "Description"))
        if not found:
            found = [ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})]
        return found

    def get(self, prop: tuple[str, str]) -> str | None:
        """The property's value where it is first written (an attribute, an element, or a structured
        value: ``rdf:value`` or a container of one item, as exiftool reads them); None: absent."""
        values = self.values(prop, aliases=False)
        return values[0] if values else None

    def values(self, prop: tuple[str, str], aliases: bool = True) -> list[str]:
        """Every value the packet holds for ``prop`` (two rdf:Descriptions may each have one), with
        ``aliases`` also under a namespace URI other readers take for the same (xmp without its
        trailing slash).  Raises XmpError for a structure cull cannot read a value from."""
        tags = [_q(*prop), *(ALIASES.get(prop, ()) if aliases else ())]
        found = []
        for desc in self.descriptions():
            for tag in tags:
                if tag in desc.attrib:
                    found.append(desc.attrib[tag])
                for child in desc.findall(tag):
                    holder, attribute = _value_holder(child, prop)
                    found.append((holder.get(attribute) or "") if attribute else (holder.text or "").strip())
        return found

    def set(self, prop: tuple[str, str], value: str) -> None:
        """Set the property where it is first written (in place, structured values too), else add
        it to the first rdf:Description: a property is never written twice."""
        tag = _q(*prop)
        for desc in self.descriptions():
            if tag in desc.attrib:
                desc.attrib[tag] = value
                return
            child = desc.find(tag)
            if child is not None:
                holder, attribute = _value_holder(child, prop, create=True)
                if attribute:
                    holder.set(attribute, value)
                else:
                    holder.text = value
                return
        self.descriptions()[0].set(tag, value)

    def remove(self, prop: tuple[str, str]) -> None:
        tag = _q(*prop)
        for desc in self.descriptions():
            desc.attrib.pop(tag, None)
            for child in desc.findall(tag):
                desc.remove(child)

    def restore(self, prop: tuple[str, str], value: str | None) -> None:
        if value is None:
            self.remove(prop)
        else:
            self.set(prop, value)
            if value == "":
                self._empty_again(prop)

    def _empty_again(self, prop: tuple[str, str]) -> None:
        """An empty container that ``set`` gave an item to hold cull's value is empty again."""
        for desc in self.descriptions():
            child = desc.find(_q(*prop))
            if child is not None and len(child) == 1 and child[0].tag in _CONTAINERS:
                items = child[0].findall(_q("rdf", "li"))
                if len(items) == 1 and len(child[0]) == 1 and len(items[0]) == 0 and not (items[0].text or "").strip():
                    child[0].remove(items[0])

    def serialize(self) -> bytes:
        """Deterministic bytes (same packet in, same bytes out), prefixes as the source wrote them.

        The prefixes come from this packet alone (cull's own for its namespaces, then the source's,
        then ns0, ns1 ...): ElementTree's process-wide prefix registry is never touched, so one
        packet's output never depends on which packets were serialised before it."""
        root = copy.deepcopy(self.root)
        ET.indent(root, space=" ")
        prefix_of = _prefix_map(root, self.prefixes)
        _qualify(root, prefix_of)
        declared = {f"xmlns:{p}": uri for uri, p in sorted(prefix_of.items(), key=lambda item: item[1]) if p != "xml"}
        root.attrib = {**declared, **root.attrib}
        body = ET.tostring(root, encoding="unicode")
        return (
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n' + body + '\n<?xpacket end="w"?>\n'
        ).encode("utf-8")


XML_NS = "http://www.w3.org/XML/1998/namespace"


def _utf16(data: bytes) -> bool:
    """Whether ``data`` is UTF-16 text (a BOM, or a NUL in its first two bytes, as ASCII markup has),
    where NUL bytes are half of every character."""
    return data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\0" in data[:2]
# Read as the same property (never written): exiftool and exiv2 take xmp's URI without its slash for xmp's.
ALIASES = {RATING: ("{http://ns.adobe.com/xap/1.0}Rating",)}
_CONTAINERS = tuple(_q("rdf", kind) for kind in ("Bag", "Seq", "Alt"))


def _value_holder(element: ET.Element, prop: tuple[str, str], create: bool = False) -> tuple[ET.Element, str | None]:
    """Where a property element keeps its value: (element, None) for its text, (element, name) for
    an attribute.  A simple value; a qualified one (``rdf:value`` as an attribute, a child, or in a
    nested rdf:Description); a container of exactly one item, or of none (no value: with ``create``,
    an item is added to hold one).  Raises XmpError for anything else."""
    value = _q("rdf", "value")
    if len(element) == 0:
        return (element, value) if value in element.attrib else (element, None)
    nested = element.find(_q("rdf", "Description"))
    for holder in (element, nested):
        if holder is None:
            continue
        if value in holder.attrib:
            return holder, value
        inner = holder.find(value)
        if inner is not None and len(inner) == 0:
            return inner, None
    if len(element) == 1 and element[0].tag in _CONTAINERS:
        items = element[0].findall(_q("rdf", "li"))
        if len(items) == 1 and len(items[0]) == 0:
            return items[0], None
        if not items and len(element[0]) == 0:  # an empty Bag / Seq / Alt: no value
            return (ET.SubElement(element[0], _q("rdf", "li")), None) if create else (element[0], None)
    raise XmpError(f"{_key(prop)} is written in a form cull cannot read")


def _split(name: str) -> tuple[str | None, str]:
    if name.startswith("{"):
        uri, local = name[1:].split("}", 1)
        return uri, local
    return None, name


def _prefix_map(root: ET.Element, source: dict[str, str]) -> dict[str, str]:
    """URI -> prefix for every namespace used under ``root``, decided from this packet alone."""
    used: list[str] = []
    for element in root.iter():
        for name in (element.tag, *element.attrib):
            uri, _local = _split(name)
            if uri is not None and uri not in used:
                used.append(uri)
    prefix_of: dict[str, str] = {XML_NS: "xml"}
    taken = {"xml"}
    wanted = [(p, uri) for p, uri in NS.items()] + [(p, uri) for p, uri in source.items()]
    for prefix, uri in wanted:
        if uri in used and uri not in prefix_of and prefix and prefix not in taken and not prefix.lower().startswith("xml"):
            prefix_of[uri] = prefix
            taken.add(prefix)
    counter = 0
    for uri in used:
        while uri not in prefix_of:
            if f"ns{counter}" not in taken:
                prefix_of[uri] = f"ns{counter}"
                taken.add(prefix_of[uri])
            counter += 1
    return {uri: p for uri, p in prefix_of.items() if uri in used or uri == XML_NS}


def _qualify(root: ET.Element, prefix_of: dict[str, str]) -> None:
    """Rewrite ``{uri}name`` tags and attributes as literal ``prefix:name`` (in place)."""

    def qname(name: str) -> str:
        uri, local = _split(name)
        return local if uri is None else f"{prefix_of[uri]}:{local}"

    for element in root.iter():
        if isinstance(element.tag, str):
            element.tag = qname(element.tag)
        if element.attrib:
            element.attrib = {qname(k): v for k, v in element.attrib.items()}


def canonical(element: ET.Element) -> Any:
    """Structure and values only (namespace prefixes, declarations and whitespace ignored)."""
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        (element.text or "").strip(),
        tuple(canonical(child) for child in element),
    )


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (ValueError, OverflowError):  # "abc", "NaN", "inf", "1e400": not a number cull can use
        return None


def _ints(values: list[str]) -> list[int]:
    return [number for number in map(_int, values) if number is not None]


def _record(packet: Packet, field: str) -> dict[str, Any]:
    """One of cull's JSON fields (Changed, Prior, Overruled) as a dict: {} when absent or not such JSON."""
    text = packet.get(("cull", field)) or "{}"
    if len(text) > 65536:  # cull writes a few fields here; anything bigger is not its own
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return {}
    return value if isinstance(value, dict) else {}


def _prop(key: str) -> tuple[str, str] | None:
    """"xmp:Rating" -> ("xmp", "Rating"); None for anything but the fields cull writes (a forged
    cull:Changed must not make clear remove rdf:about or a field of the user's)."""
    prefix, _, name = key.partition(":")
    return (prefix, name) if (prefix, name) in OWNED else None


def _undo(packet: Packet) -> None:
    """Put back the values cull replaced, where the user has not changed them since."""
    prior = _record(packet, "Prior")
    for key, wrote in _record(packet, "Changed").items():
        prop = _prop(key)
        if prop is not None and packet.get(prop) == wrote:
            value = prior.get(key)
            packet.restore(prop, value if isinstance(value, str) else None)


def overruled(packet: Packet) -> dict[str, str]:
    """The fields the user changed after cull set them ("xmp:Rating" -> the value cull had written):
    those of cull:Changed that hold another value now (or none), and those recorded before
    (cull:Overruled).  They are the user's from then on: cull never sets them again."""
    found = {key: value for key, value in _record(packet, "Overruled").items() if isinstance(value, str)}
    for key, wrote in _record(packet, "Changed").items():
        prop = _prop(key)
        if prop is not None and isinstance(wrote, str) and packet.get(prop) != wrote:
            found[key] = wrote
    return found


def user_protection(packet: Packet) -> str | None:
    """Why a photo must not be marked rejected (the user rated, picked or accepted it), or None.

    ``xmp:Rating`` 0 means unrated (XMP spec), -1 rejected: neither protects.  A packet that holds a
    field twice (two rdf:Descriptions) is protected when either value protects."""
    rating = max(_ints(packet.values(RATING)), default=None)
    if rating is not None and rating >= 1:
        return f"user rated it {rating} star{'s' if rating > 1 else ''}"
    if 1 in _ints(packet.values(PICK)):
        return "user picked it (flagged)"
    if 3 in _ints(packet.values(PICK_LABEL)):
        return "user accepted it (digiKam pick label)"
    if packet.get(("cull", "UserVerdict")) == "keep":
        return "user kept it (cull review)"
    taken_back = [key for key, wrote in overruled(packet).items()  # and not rejected again by the user since
                  if (prop := _prop(key)) is not None and REJECT_FIELDS.get(prop) == wrote and packet.get(prop) != wrote]
    if taken_back:
        return f"user took back cull's reject ({', '.join(sorted(taken_back))})"
    return None


def user_rejection(packet: Packet) -> str | None:
    """Whether the user rejected the photo in another program (darktable's or Lightroom's reject: a
    reject value cull did not write), as "user rejected it (xmp:Rating)", or None."""
    wrote = _record(packet, "Changed")
    mine = [_key(prop) for prop, value in REJECT_FIELDS.items()
            if value in packet.values(prop) and wrote.get(_key(prop)) != value]
    return f"user rejected it ({', '.join(mine)})" if mine else None


def _own_colour_label(packet: Packet) -> bool:
    """Whether the user gave the photo a colour label where digiKam (``digiKam:ColorLabel``, 0 = none)
    or darktable (``darktable:colorlabels``, a list) keep theirs: cull's xmp:Label would then show
    one colour in Lightroom and the user's in those."""
    try:
        if any(number not in (None, 0) for number in map(_int, packet.values(("digiKam", "ColorLabel")))):
            return True
    except XmpError:
        return True
    tag = "{http://darktable.sf.net/}colorlabels"  # read only: not among the namespaces cull writes (NS)
    return any(tag in desc.attrib or any((item.text or "").strip() for element in desc.findall(tag)
                                          for item in element.iter(_q("rdf", "li")))
               for desc in packet.descriptions())


def user_labels(packet: Packet) -> set[str]:
    """Which of cull's uncertain fields ("xmp:Label", "digiKam:PickLabel") the user owns in this packet:
    a colour or pick of their own (not what cull:Changed says cull wrote), or one they took off (Overruled)."""
    owned = set(overruled(packet)) & {_key(LABEL), _key(PICK_LABEL)}
    wrote = _record(packet, "Changed")
    if _own_colour_label(packet) or any(v.strip() and wrote.get(_key(LABEL)) != v for v in packet.values(LABEL)):
        owned.add(_key(LABEL))
    if any(v.strip() and _int(v) not in (0, None) and wrote.get(_key(PICK_LABEL)) != v for v in packet.values(PICK_LABEL)):
        owned.add(_key(PICK_LABEL))
    return owned


def merge(existing: bytes | None, verdict: Verdict, protected: str | None = None,
          held: frozenset[str] = frozenset()) -> MergeResult:
    """Return the packet with ``verdict`` applied. Raises XmpError for a malformed packet.

    ``protected``: why the shot must not be marked rejected although this packet does not say so
    (the user's value lives elsewhere: the partner, the other sidecar, the embedded XMP).
    ``held``: the uncertain fields ("xmp:Label", "digiKam:PickLabel") the user owns in another place of
    the shot (user_labels there): not set here either, so one shot never shows two colours."""
    packet = Packet(existing)
    original = packet.get(("cull", "Original"))
    existed = packet.get(("cull", "Existed"))  # a packet of the user's too big to keep whole inside
    if original is None and existed is None and existing is not None and not has_cull_fields(existing):
        if len(existing) <= MAX_ORIGINAL_BYTES:
            original = base64.b64encode(zlib.compress(existing, 9)).decode("ascii")  # an empty file too: it comes back
        else:
            existed = "True"
    users = overruled(packet)  # before cull's earlier values are taken back
    conflict = (user_protection(packet) or protected) if verdict.verdict == "reject" else None
    _undo(packet)
    for field in CULL_FIELDS:
        packet.remove(("cull", field))
    wanted: dict[tuple[str, str], str] = {}
    if verdict.verdict == "reject" and conflict is None:
        wanted = dict(REJECT_FIELDS)
    elif verdict.verdict == "uncertain":
        wanted = {PICK_LABEL: "2"} if _own_colour_label(packet) else {PICK_LABEL: "2", LABEL: verdict.label}
    changed: dict[str, str] = {}
    prior: dict[str, str | None] = {}
    for prop, value in wanted.items():
        if _key(prop) in users or _key(prop) in held:
            continue
        current = packet.get(prop)
        empty = all(v == "" or (prop in (RATING, PICK, PICK_LABEL) and _int(v) == 0) for v in packet.values(prop))
        if empty and current != value:
            prior[_key(prop)] = current
            changed[_key(prop)] = value
            packet.set(prop, value)
    packet.set(("cull", "Verdict"), verdict.verdict)
    if verdict.score is not None:
        packet.set(("cull", "Score"), f"{verdict.score:.4f}")
    if verdict.kind:
        packet.set(("cull", "Kind"), verdict.kind)
    packet.set(("cull", "Model"), verdict.model)
    if verdict.burst is not None:
        burst_id, rank, size = verdict.burst
        packet.set(("cull", "Burst"), burst_id)
        packet.set(("cull", "BurstRank"), str(rank))
        packet.set(("cull", "BurstSize"), str(size))
    if changed:
        packet.set(("cull", "Changed"), json.dumps(changed, sort_keys=True))
        packet.set(("cull", "Prior"), json.dumps(prior, sort_keys=True))
    if users:
        packet.set(("cull", "Overruled"), json.dumps(users, sort_keys=True))
    if conflict:
        packet.set(("cull", "Conflict"), conflict)
    if original is not None:
        packet.set(("cull", "Original"), original)
    elif existed is not None:
        packet.set(("cull", "Existed"), existed)
    merged = packet.serialize()
    if len(merged) > MAX_PACKET_BYTES:
        raise XmpError(f"with cull's fields it would be {len(merged) / 2**20:.0f} MB, over the "
                       f"{MAX_PACKET_BYTES >> 20} MB cull reads back")
    return MergeResult(merged, conflict)


COLOUR_LABELS = ("Red", "Yellow", "Green", "Blue", "Purple")
MAX_LABEL = 64


def validate_label(label: str) -> str:
    """The label to write: a colour word in its usual spelling (any case accepted), or any other
    printable text up to 64 characters. Raises ValueError (control characters, empty, too long)."""
    for colour in COLOUR_LABELS:
        if label.strip().lower() == colour.lower():
            return colour
    if not label.strip():
        raise ValueError("--label must not be empty (one of Red, Yellow, Green, Blue, Purple, or your own word)")
    if len(label) > MAX_LABEL:
        raise ValueError(f"--label is longer than {MAX_LABEL} characters")
    if not label.isprintable():
        raise ValueError(f"--label contains a control or non-printable character: {label!r}")
    return label


def same_content(a: bytes, b: bytes) -> bool:
    """Equal bytes, or the same XMP content however it is formatted (exiv2 reformats embedded packets)."""
    return a == b or canonical(Packet(a).root) == canonical(Packet(b).root)


_CULL_URI = tuple(NS["cull"].encode(encoding) for encoding in ("utf-8", "utf-16-le", "utf-16-be"))


def has_cull_fields(data: bytes | None) -> bool:
    """Whether cull has written into this packet before (cheap text check, no parse; a packet
    another program rewrote in UTF-16 too)."""
    return data is not None and any(uri in data for uri in _CULL_URI)


def clear(existing: bytes) -> bytes | None:
    """Remove exactly what cull wrote. Returns the bytes to keep, ``existing`` itself if cull never
    wrote here, the original bytes when nothing else changed since, or None when cull created the
    packet and nothing else is in it (the sidecar can go).  A packet without cull's namespace is not
    parsed: another program's broken sidecar is none of clear's business."""
    if not has_cull_fields(existing):
        return existing
    packet = Packet(existing)
    if all(packet.get(("cull", f)) is None for f in CULL_FIELDS):
        return existing
    original_b64 = packet.get(("cull", "Original"))
    existed = packet.get(("cull", "Existed")) is not None  # the user's, too big for a copy inside: never removed
    _undo(packet)
    for field in CULL_FIELDS:
        packet.remove(("cull", field))
    if existed:
        return packet.serialize()
    if original_b64:
        original = zlib.decompress(base64.b64decode(original_b64))
        if canonical(Packet(original).root) == canonical(packet.root):
            return original  # byte for byte what was there before cull
        return packet.serialize()  # the user edited since: keep their edits, drop ours
    if all(not d.attrib.keys() - {_q("rdf", "about")} and len(d) == 0 for d in packet.descriptions()):
        return None
    return packet.serialize()


def read_fields(data: bytes) -> dict[str, str | None]:
    """The fields cull reads and writes, for reports and tests."""
    packet = Packet(data)
    fields = {_key(p): packet.get(p) for p in (RATING, LABEL, PICK, GOOD, PICK_LABEL)}
    fields.update({f"cull:{f}": packet.get(("cull", f)) for f in ("Score", "Verdict", "Kind", "Conflict")})
    return fields
