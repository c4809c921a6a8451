"""The Lightroom Classic plug-in (integrations/lightroom): Lua 5.1 syntax, lint, its harness, real reports.

The plug-in's own tests run under `lua5.1` against a stand-in SDK (integrations/lightroom/tests);
this file drives them and cross-checks the plug-in's report reader against Python's json/csv on
the reports `cull scan --report` really writes. Without lua5.1 the tests skip, except in CI
(CI=true), where a missing interpreter is a failure.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from tests.conftest import EXAMPLES, REPO

LIGHTROOM = REPO / "integrations" / "lightroom"
PLUGIN = LIGHTROOM / "cull.lrplugin"
RUNNER = LIGHTROOM / "tests" / "run.lua"
LUA_FILES = sorted(PLUGIN.glob("*.lua")) + sorted((LIGHTROOM / "tests").glob("*.lua"))
FIELDS = ("version", "path", "absPath", "partner", "partnerAbs", "verdict", "score", "kind", "size", "mtime",
          "error", "unmatchable")
REPORT_KEYS = {"report_version": "version", "path": "path", "abs_path": "absPath", "partner": "partner",
               "partner_abs": "partnerAbs", "verdict": "verdict", "score": "score", "kind": "kind", "size": "size",
               "mtime": "mtime", "error": "error"}


def tool(name: str) -> str:
    """Path of a Debian tool the tests need: skip without it, fail in CI (.ci/run installs it)."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing; .ci/run installs it")
        pytest.skip(f"{name} is not installed")
    return found


def lua(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("lua5.1"), str(RUNNER), *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_plugin_is_an_installable_folder():
    assert PLUGIN.is_dir() and PLUGIN.suffix == ".lrplugin"
    info = (PLUGIN / "Info.lua").read_text(encoding="utf-8")
    for key in ("LrSdkVersion", "LrSdkMinimumVersion", "LrToolkitIdentifier", "LrPluginName", "LrLibraryMenuItems",
                "LrMetadataProvider"):
        assert key in info
    assert "Apply cull verdicts…" in info and "Undo cull verdicts…" in info
    code = "\n".join(p.read_text(encoding="utf-8") for p in PLUGIN.glob("*.lua"))
    for forbidden in ("os.execute", "io.popen", "LrTasks.execute", "addPhoto", "deletePhoto"):
        assert forbidden not in code, f"the plug-in must not {forbidden}"  # never runs cull, imports or deletes


def test_every_lua_file_parses_under_lua51():
    luac = tool("luac5.1")
    assert len(LUA_FILES) >= 15
    for path in LUA_FILES:
        result = subprocess.run([luac, "-p", str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_luacheck_is_clean():
    luacheck = tool("luacheck")
    result = subprocess.run([luacheck, "--no-color", "--config", str(LIGHTROOM / ".luacheckrc"), "."],
                            cwd=LIGHTROOM, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lua_harness_passes():
    result = lua()
    lines = result.stdout.splitlines()
    failures = [line for line in lines if line.startswith("FAIL")]
    assert result.returncode == 0 and not failures, result.stdout[-4000:] + result.stderr
    passed = {line[3:] for line in lines if line.startswith("ok ")}
    assert len(passed) >= 40
    for name in ("apply: 450 photos -> 3 write-access steps of at most 200, one per undo step",
                 "apply: cancel between chunks stops, what was written stays, rest not reached",
                 "apply command: every look-up happens before the first write access",
                 "apply command: 0 matches -> clear message, remap set in the dialog, then applied and remembered",
                 "undo command: clears exactly what cull set, keeps what the user changed since",
                 "sdk stand-in: yielding inside write access raises; plain pcall around a yield fails",
                 "apply command: a protected reject on a photo cull labelled before loses the label, is never flagged",
                 "apply command: a protected reject cull flagged before: the flag comes off, as the preview says",
                 "apply command: re-applying leaves a reject the user unflagged and a label the user removed",
                 "apply command: ignore case never lands on a virtual copy; the master gets the verdict",
                 "plan: a virtual copy flagged, rated or labelled by hand keeps its master as it is",
                 "plan: masters kept through a virtual copy count as hand-set; the preview says why",
                 "apply: a master whose virtual copy is rated, picked or labelled: nothing written, counted hand-set",
                 "apply: a virtual copy marked by hand after the preview keeps its master as it is",
                 "apply: only a photo with virtual copies has its copies read",
                 "apply: cull's earlier flag comes off a master whose copy was marked since; nothing else is written",
                 "apply command: a master whose virtual copy you rated is never flagged; cull's earlier flag comes off",
                 "plan: a master cull flagged or labelled before its virtual copy was marked loses only cull's values",
                 "apply command: a setting changed in the preview, then Apply: matched again and shown before writing",
                 "report: a 100 000-line JSON Lines report is read whole, in place, with progress ticks"):
        assert name in passed


def lua_rows(report: Path) -> tuple[str, list[dict[str, object]]]:
    """The plug-in's reading of a report, decoded from the runner's hex dump."""
    result = lua("dump", report)
    assert result.returncode == 0, result.stderr
    rows: dict[int, dict[str, object]] = {}
    fmt = ""
    for line in result.stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "error":
            raise AssertionError(bytes.fromhex(parts[1]).decode("utf-8", "replace"))
        elif parts[0] == "row":
            index, key, kind, value = int(parts[1]), parts[2], parts[3], parts[4] if len(parts) > 4 else ""
            decoded: object = float(value) if kind == "n" else bytes.fromhex(value).decode("utf-8", "surrogateescape")
            rows.setdefault(index, {})[key] = decoded
    return fmt, [rows[i] for i in sorted(rows)]


def expected(row: dict[str, object]) -> dict[str, object]:
    """What the plug-in should make of one report row (Python's reading)."""
    out: dict[str, object] = {}
    for key, name in REPORT_KEYS.items():
        value = row.get(key)
        if value is None or value == "":
            continue
        out[name] = float(value) if name in ("version", "score", "size", "mtime") else value
    return out


def compare(lua_row: dict[str, object], py_row: dict[str, object], *, from_json: bool) -> None:
    want = expected(py_row)
    got = {k: v for k, v in lua_row.items() if k != "unmatchable"}
    if "partnerAbs" in want and not valid_utf8(str(want["partnerAbs"])):
        del want["partnerAbs"]  # a partner name that is not UTF-8 is dropped, the photo still matches
    if from_json:  # a lone surrogate from JSON is kept as its 3-byte (WTF-8) form
        want = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape") if isinstance(v, str) else v
                for k, v in want.items()}
    assert got == want


def valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


EDGE_NAMES = ["plain.jpg", "café é.jpg", "photo, \"quoted\".jpg", "two\nlines.jpg", "emoji 📷.jpg",
              "tab\there.jpg", "back\\slash.jpg", "caf\udce9.jpg"]


def edge_rows(root: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    verdicts = ["reject", "uncertain", "keep", None]
    for i, name in enumerate(EDGE_NAMES):
        verdict = verdicts[i % 4]
        rows.append({"report_version": 1, "path": name, "abs_path": f"{root}/{name}", "verdict": verdict,
                     "score": None if verdict is None else round(0.1 * i, 3),
                     "kind": None if verdict is None else "defocus",
                     "partner": f"{name}.CR3" if i % 2 else None,
                     "partner_abs": f"{root}/{name}.CR3" if i % 2 else None,
                     "size": 1000 + i, "mtime": 1700000000.25 + i,
                     "error": "truncated, \"bad\" file" if verdict is None else None})
    return rows


def test_plugin_reads_jsonl_exactly_as_python(tmp_path):
    rows = edge_rows(Path("/Volumes/Fotos ü"))
    report = tmp_path / "edge.jsonl"
    report.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows), encoding="ascii")
    fmt, got = lua_rows(report)
    assert fmt == "jsonl" and len(got) == len(rows)
    for lua_row, py_row in zip(got, rows):
        compare(lua_row, py_row, from_json=True)
        bad_name = not valid_utf8(str(py_row["abs_path"]))
        assert ("unmatchable" in lua_row) == bad_name  # a non-UTF-8 name is unmatchable, never a crash


def test_plugin_reads_csv_exactly_as_python(tmp_path):
    rows = edge_rows(Path("C:\\Users\\Åsa\\Pictures"))
    report = tmp_path / "edge.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(REPORT_KEYS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    report.write_bytes(buffer.getvalue().encode("utf-8", "surrogateescape"))
    fmt, got = lua_rows(report)
    assert fmt == "csv" and len(got) == len(rows)
    python_rows = list(csv.DictReader(io.StringIO(report.read_bytes().decode("utf-8", "surrogateescape"))))
    for lua_row, py_row in zip(got, python_rows):
        compare(lua_row, py_row, from_json=False)
        assert ("unmatchable" in lua_row) == (not valid_utf8(py_row["abs_path"]))


def scan_report(photos: Path, report: Path) -> list[dict[str, object]]:
    result = CliRunner().invoke(app, ["scan", str(photos), "--report", str(report), "--workers", "1", "--no-xmp"])
    assert result.exit_code == 0, result.output
    if report.suffix == ".jsonl":
        return [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    return list(csv.DictReader(io.StringIO(report.read_bytes().decode("utf-8", "surrogateescape"))))


def test_real_cull_scan_reports_drive_the_plugin(tmp_path):
    photos = tmp_path / "Fotos für LrC"
    photos.mkdir()
    for i, src in enumerate(sorted(EXAMPLES.glob("*.jpg"))):
        name = src.name if i % 3 else f"{src.stem}, \"copy\" é.jpg"  # commas, quotes, non-ASCII
        shutil.copy(src, photos / name)
        if i % 2:  # a RAW+JPEG shot: scored through the JPEG, the RAW reported as partner
            (photos / name).with_suffix(".CR2").write_bytes(b"not really raw")
    shutil.copy(EXAMPLES / "kodim05.jpg", photos / os.fsdecode(b"caf\xe9 latin-1.jpg"))  # not valid UTF-8
    for suffix in (".jsonl", ".csv"):
        report = tmp_path / f"scan{suffix}"
        rows = scan_report(photos, report)
        assert all(r["abs_path"] and str(r["report_version"]) == "1" for r in rows)
        assert any(r["verdict"] in ("reject", "uncertain") for r in rows)  # the blurred examples
        fmt, got = lua_rows(report)
        assert fmt == suffix[1:] and len(got) == len(rows)
        for lua_row, py_row in zip(got, rows):
            compare(lua_row, py_row, from_json=suffix == ".jsonl")
            assert ("unmatchable" in lua_row) == (not valid_utf8(str(py_row["abs_path"])))
        assert sum(bool(r["partner_abs"]) for r in rows) == 4
        # Every photo in a stand-in catalog; "Apply cull verdicts…" with the defaults. Then again with
        # each RAW+JPEG shot imported as one photo under the RAW's path (matched through partner_abs).
        for mode in ("files", "pairs"):
            result = lua("e2e", report, mode)
            assert result.returncode == 0 and "taskerror" not in result.stdout, result.stdout + result.stderr
            state = {}
            for line in result.stdout.splitlines():
                parts = line.split(" ")
                if parts[0] == "photo":
                    state[bytes.fromhex(parts[1]).decode("utf-8")] = (int(parts[2]), parts[3], parts[4])
            matchable = [r for r in rows if valid_utf8(str(r["abs_path"]))]
            assert len(state) == len(matchable) == len(rows) - 1
            for row in matchable:
                key = row["partner_abs"] if mode == "pairs" and row["partner_abs"] else row["abs_path"]
                pick, label, receipt = state[str(key)]
                verdict = row["verdict"]
                assert pick == (-1 if verdict == "reject" else 0), row
                assert label == ("yellow" if verdict == "uncertain" else "none"), row
                assert receipt == (verdict if verdict in ("reject", "uncertain") else "nil"), row
