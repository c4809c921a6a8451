"""Hand-edited or hostile model cards end in one clear line, before any work: never a traceback, and
never after a whole scan (a bad version used to crash the XMP writer, losing every result)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cull.card import load_card
from cull.cli import app
from cull.errors import ModelError
from tests.test_scan_faults import custom_card


def edited(tmp_path, change) -> object:  # type: ignore[no-untyped-def]
    path = custom_card(tmp_path)
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("change,message", [
    (lambda raw: raw.__setitem__("version", 5), "version must be a name"),
    (lambda raw: raw.__setitem__("version", None), "version must be a name"),
    (lambda raw: raw.__setitem__("version", "v" * 10_000), "version must be a name"),
    (lambda raw: raw["aggregate"].__setitem__("k", float("inf")), "OverflowError"),
    (lambda raw: raw["photo_head"].__setitem__("top", float("inf")), "OverflowError"),
])
def test_hostile_card_values_are_refused_on_load(tmp_path, change, message):
    path = edited(tmp_path, change)
    with pytest.raises(ModelError, match=message):
        load_card(path)
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--model", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_deeply_nested_json_is_a_malformed_card(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="cannot read model card"):
        load_card(path)


def test_a_nul_byte_in_the_calibration_folder_is_no_crash(tmp_path):
    from cull.evaluate import calibration_note

    path = edited(tmp_path, lambda raw: raw.__setitem__("calibration", {"folder": "a\x00b"}))
    assert calibration_note(tmp_path, load_card(path)) is None
