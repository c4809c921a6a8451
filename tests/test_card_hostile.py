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
    (lambda raw: raw["aggregate"].__setitem__("k", float("inf")), "aggregate.k must be a whole number"),
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


def test_an_input_name_or_patch_size_the_model_does_not_have_is_refused_before_scoring(tmp_path):
    from cull.score import OnnxScorer

    wrong_name = edited(tmp_path / "a", lambda raw: raw["input"].__setitem__("name", "nope"))
    with pytest.raises(ModelError, match="has no input 'nope'"):
        OnnxScorer(load_card(wrong_name))
    wrong_size = edited(tmp_path / "b", lambda raw: raw["analysis"].update(patch_size=32, tile_stride=16))
    with pytest.raises(ModelError, match="takes 64x64 patches, its card says patch_size 32"):
        OnnxScorer(load_card(wrong_size))
    from tests.conftest import save, sharp_image

    save(sharp_image(0), tmp_path / "photos" / "a.jpg")
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "photos"), "--model", str(wrong_size), "--workers", "1"])
    assert result.exit_code == 2 and "patch_size 32" in result.output and "a.jpg" not in result.output


def test_a_whole_number_setting_given_as_text_or_fraction_is_refused(tmp_path):
    for value in ("3", 2.9):
        path = edited(tmp_path / str(value), lambda raw, v=value: raw["aggregate"].__setitem__("k", v))
        with pytest.raises(ModelError, match="aggregate.k must be a whole number"):
            load_card(path)


def test_a_calibrated_card_after_a_model_change_says_to_calibrate_again(tmp_path):
    path = edited(tmp_path, lambda raw: (raw.__setitem__("sha256", "0" * 64),
                                         raw.__setitem__("calibration", {"folder": "/photos/labelled"})))
    with pytest.raises(ModelError, match="run `cull calibrate /photos/labelled --out"):
        load_card(path)


def test_a_card_reached_through_a_link_finds_the_model_beside_the_card(tmp_path):
    import shutil

    from cull.card import default_card_path

    home = tmp_path / "models"
    home.mkdir()
    shutil.copy(default_card_path(), home / "focus.json")
    shutil.copy(default_card_path().with_suffix(".onnx"), home / "focus.onnx")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mine.json").symlink_to(home / "focus.json")
    assert load_card(tmp_path / "elsewhere" / "mine.json").model_path == home / "focus.onnx"


def test_a_card_linked_from_a_content_addressed_store_finds_the_model_beside_the_link(tmp_path):
    """git-annex and DVC link every file to its own folder: the model sits beside the link, not beside
    the file the link leads to."""
    import shutil

    from cull.card import default_card_path

    store = tmp_path / "store" / "ab12"
    store.mkdir(parents=True)
    shutil.copy(default_card_path(), store / "focus.json")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(default_card_path().with_suffix(".onnx"), work / "focus.onnx")
    (work / "focus.json").symlink_to(store / "focus.json")
    assert load_card(work / "focus.json").model_path == work / "focus.onnx"


def test_with_a_model_beside_the_link_and_beside_the_card_the_one_matching_the_card_wins(tmp_path):
    import shutil

    from cull.card import default_card_path

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(default_card_path(), home / "focus.json")
    shutil.copy(default_card_path().with_suffix(".onnx"), home / "focus.onnx")
    work = tmp_path / "work"
    work.mkdir()
    (work / "focus.onnx").write_bytes(b"another model of that name")
    (work / "focus.json").symlink_to(home / "focus.json")
    assert load_card(work / "focus.json").model_path == home / "focus.onnx"
