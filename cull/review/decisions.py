"""The user's own decisions from `cull review`, written into XMP as *user* values.

A decision is not one of cull's verdicts: cull's fields are first removed exactly as ``cull xmp
clear`` would (``cull.xmp.clear``), then the user's values are set in the standard fields and
recorded as ``cull:UserVerdict``.  They are not listed in ``cull:Changed``, so a later ``cull scan``
(whose merge only fills empty fields and only undoes what it wrote itself) keeps them, and
``cull xmp clear`` leaves them alone:

- reject (X): ``xmp:Rating`` -1, ``xmpDM:pick`` -1 with ``xmpDM:good`` False, ``digiKam:PickLabel`` 1.
- keep (P): ``xmpDM:pick`` 1 with ``xmpDM:good`` True, ``digiKam:PickLabel`` 3 (accepted); a -1 rating
  goes.  cull's merge never marks a picked or accepted photo rejected.
- uncertain (U): ``digiKam:PickLabel`` 2 (pending) and the colour label; reject / pick marks go.

Writes go through ``cull scan``'s writer (``cull.sidecars``): atomic, keeping the file's mode, owner
and group, warning of hard links, never replacing a read-only file; every foreign field of an
existing sidecar is kept.  Where ``cull scan --embed`` wrote its verdict inside
the photo, the decision is written there too.  Each decision remembers the bytes it replaced, so
Z (undo) puts them back exactly, unless the file was changed in between.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cull.errors import CullError
from cull.protect import (  # noqa: F401 - read_user_verdict / apply_user_verdicts re-exported for callers
    DECISIONS, EMBEDDABLE, USER_VERDICT, apply_user_verdicts, embedded_packets, load_pyexiv2, read_embedded,
    read_sidecar, read_user_verdict,
)
from cull.sidecars import Target, XmpOptions, check_writable, targets_for, write_target
from cull.xmp import GOOD, LABEL, PICK, PICK_LABEL, RATING, Packet, XmpError, clear, has_cull_fields, user_labels

log = logging.getLogger(__name__)



class DecisionError(Exception):
    """A decision could not be written (the message says which file and why)."""


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def user_packet(existing: bytes | None, decision: str, label: str = "Yellow", held: frozenset[str] = frozenset()) -> bytes:
    """``existing`` (or a new packet) with cull's fields removed and the user's ``decision`` set.

    What the decision changes (a star rating, a pick flag, labels) is recorded in ``cull:UserPrior``,
    each field's value before and the value written, and undone before the next decision is applied
    where the field still holds what was written: X on a photo rated 5 stars, then P or U, ends with
    the 5 stars again, and U's colour label goes again with P or X.  A field the user changed since
    (re-rated 4 stars in Lightroom) keeps the user's value.
    Pure. Raises XmpError for a malformed packet, ValueError for an unknown decision.
    """
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}")
    packet = Packet(clear(existing) if existing is not None and existing.strip() else None)
    _put_back_prior(packet)
    record: dict[str, dict[str, str | None]] = {}
    for prop, value in _changes(packet, decision, label, held):
        before = packet.get(prop)
        if before == value:
            continue
        record[f"{prop[0]}:{prop[1]}"] = {"was": before, "set": value}
        if value is None:
            packet.remove(prop)
        else:
            packet.set(prop, value)
    if record:
        packet.set(USER_PRIOR, json.dumps(record, sort_keys=True))
    packet.set(USER_VERDICT, decision)
    return packet.serialize()


def _changes(packet: Packet, decision: str, label: str, held: frozenset[str] = frozenset()) -> list[tuple[tuple[str, str], str | None]]:
    """The fields ``decision`` sets (None: removes) on ``packet``. ``held``: the uncertain fields the
    user owns elsewhere in the shot (as for ``cull scan``: one shot never shows two colours)."""
    if decision == "reject":
        return [(RATING, "-1"), (PICK, "-1"), (GOOD, "False"), (PICK_LABEL, "1")]
    unrejected = [(RATING, None)] if _int(packet.get(RATING)) == -1 else []
    if decision == "keep":
        return [(PICK, "1"), (GOOD, "True"), (PICK_LABEL, "3"), *unrejected]
    coloured = packet.get(LABEL) or _LABEL_KEY in user_labels(packet) | held
    return [(PICK, None), (GOOD, None), (PICK_LABEL, "2"), *unrejected, *([] if coloured else [(LABEL, label)])]


_LABEL_KEY = f"{LABEL[0]}:{LABEL[1]}"
USER_PRIOR = ("cull", "UserPrior")  # what the last decision made in `cull review` changed: {field: {was, set}} (JSON)


def _put_back_prior(packet: Packet) -> None:
    """Undo what the last decision made here changed (``cull:UserPrior``), then forget it: a field
    goes back to its value before only where it still holds what that decision wrote; one the user
    set since keeps the user's value."""
    raw = packet.get(USER_PRIOR)
    if raw is None:
        return
    packet.remove(USER_PRIOR)
    try:
        record = json.loads(raw)
    except ValueError:
        return
    if not isinstance(record, dict):
        return
    for name, entry in record.items():
        prefix, _, local = str(name).partition(":")
        prop = (prefix, local)
        if prop not in _DECIDED_PROPS or not _valid_entry(entry) or packet.get(prop) != entry["set"]:
            continue
        if entry["was"] is None:
            packet.remove(prop)
        else:
            packet.set(prop, entry["was"])


def _valid_entry(entry: object) -> bool:
    return (isinstance(entry, dict) and set(entry) == {"was", "set"}
            and all(value is None or isinstance(value, str) for value in entry.values()))


_DECIDED_PROPS = {RATING, PICK, GOOD, PICK_LABEL, LABEL}


@dataclass(frozen=True)
class Write:
    target: Path
    before: bytes | None  # None: the sidecar (or the photo's XMP block) did not exist
    after: bytes
    embedded: bool = False  # the XMP block inside the photo (where `cull scan --embed` wrote)


@dataclass
class Change:
    """One decision: which item, what the user had decided before, and the files it wrote."""

    item: int
    previous: str | None
    decision: str
    writes: list[Write] = field(default_factory=list)


def write_decision(photos: list[Path], decision: str, options: XmpOptions) -> list[Write]:
    """Write ``decision`` into the sidecars of every file of one shot (photo and partner).

    All packets are computed before anything is written; a failure part-way puts back what was
    already written. Raises DecisionError.
    """
    planned: list[Write] = []
    sidecar_options = XmpOptions(False, options.sidecar_style, options.label)
    held = _held_labels(photos, sidecar_options)
    for photo in photos:
        partner = next((p for p in photos if p != photo), None)
        for path in _sidecars(photo, sidecar_options, partner):
            try:
                before = read_sidecar(path)
                check_writable(path)
                after = user_packet(before, decision, options.label, held)
            except XmpError as exc:
                raise DecisionError(f"{path.name}: existing XMP left untouched: {exc}") from None
            except CullError as exc:
                raise DecisionError(f"{path.name}: {exc}") from None
            except OSError as exc:
                raise DecisionError(f"{path.name}: {exc.strerror or exc}") from None
            if before != after:
                planned.append(Write(path, before, after))
        planned += _embedded_plan(photo, decision, options.label, held)
    done: list[Write] = []
    try:
        for write in planned:
            write_target(Target(write.target, embedded=write.embedded), write.after)
            if write.embedded:
                write = Write(write.target, write.before, read_embedded(write.target) or b"", embedded=True)  # as exiv2 stored it
            done.append(write)
    except (OSError, CullError) as exc:
        restore(done)
        what = getattr(exc, "filename", None) or "XMP"
        raise DecisionError(f"cannot write {what}: {getattr(exc, 'strerror', None) or exc}") from None
    return done


def _held_labels(photos: list[Path], options: XmpOptions) -> frozenset[str]:
    """The uncertain fields the user owns anywhere in the shot (its sidecars, darktable's or digiKam's own
    colour, inside the photo), not counting what an earlier decision of the review wrote there."""
    held: set[str] = set()
    for photo in photos:
        partner = next((p for p in photos if p != photo), None)
        packets = []
        for path in _sidecars(photo, options, partner):
            try:
                packets.append(read_sidecar(path))
            except (OSError, CullError):
                continue
        if photo.suffix.lower() in EMBEDDABLE:
            packets += embedded_packets(photo)
        for data in packets:
            if data is None:
                continue
            try:
                packet = Packet(clear(data) if data.strip() else None)
                _put_back_prior(packet)
                held |= user_labels(packet)
            except XmpError:
                continue
    return frozenset(held)


def _sidecars(photo: Path, options: XmpOptions, partner: Path | None) -> list[Path]:
    """The sidecars a decision on ``photo`` goes to (the photo's own XMP block: ``_embedded_plan``)."""
    return [target.path for target in targets_for(photo, options, partner) if not target.embedded]


def write_decisions(plan: Sequence[tuple[list[Path], str]], options: XmpOptions) -> list[list[Write]]:
    """Write several shots' decisions as one step (``cull review``'s B on a burst): each entry is
    (the files of one shot, its decision). A failure puts back everything this step wrote and
    raises DecisionError, so a step lands whole or not at all."""
    done: list[list[Write]] = []
    try:
        for photos, decision in plan:
            done.append(write_decision(photos, decision, options))
    except DecisionError:
        restore([write for writes in done for write in writes])
        raise
    return done


def _embedded_plan(photo: Path, decision: str, label: str, held: frozenset[str] = frozenset()) -> list[Write]:
    """Where `cull scan --embed` put its verdict inside the photo, the decision goes there too
    (Lightroom reads only that for JPEG/TIFF/DNG); never into a photo cull has not written into."""
    if photo.suffix.lower() not in EMBEDDABLE or load_pyexiv2() is None:
        return []
    try:
        before = read_embedded(photo)
    except CullError as exc:  # exiv2 cannot read the file (a damaged JPEG judged by its RAW partner)
        if any(has_cull_fields(packet) for packet in embedded_packets(photo)):
            raise DecisionError(f"{photo.name}: {exc}") from None  # cull wrote into it, and cannot again
        return []  # cull never wrote into it: the decision goes to the sidecars
    try:
        if not has_cull_fields(before):
            return []
        check_writable(photo)
        return [Write(photo, before, user_packet(before, decision, label, held), embedded=True)]
    except XmpError as exc:
        raise DecisionError(f"{photo.name}: embedded XMP left untouched: {exc}") from None
    except CullError as exc:
        raise DecisionError(f"{photo.name}: {exc}") from None


def restore(writes: list[Write]) -> list[tuple[Write, str]]:
    """Put back what ``writes`` replaced, newest first; a file changed since is left as it is.

    Returns the writes that could not be put back, each with why."""
    failed = []
    for write in reversed(writes):
        try:
            current = read_embedded(write.target) if write.embedded else read_sidecar(write.target)
            if (current or b"") != write.after:
                failed.append((write, f"{write.target.name} changed since; left as it is"))
                continue
            write_target(Target(write.target, embedded=write.embedded), write.before, ours=write.before is None)
        except (OSError, CullError) as exc:
            failed.append((write, f"{write.target.name}: {getattr(exc, 'strerror', None) or exc}"))
    return failed
