"""Writes through symbolic links (cull.fsutil.write_through): what the link names gets the bytes, the
link stays a link, and nothing that is not a regular file is ever replaced."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.errors import NotWritable
from cull.fsutil import atomic_write_bytes, write_through
from cull.sidecars import XmpOptions, check_writable, clear_photo, write_verdict
from cull.xmp import Verdict, has_cull_fields, read_fields
from tests.conftest import blurred_image, drop_dac_override, save

DATA = Path(__file__).parent / "data" / "xmp"
REJECT = Verdict("reject", 0.02, "defocus", "test-model")


def special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a folder and (as root) a character device like /dev/null, made in ``folder``."""
    made = {"fifo": folder / "fifo.jsonl", "folder": folder / "folder.jsonl"}
    os.mkfifo(made["fifo"])
    made["folder"].mkdir()
    if os.geteuid() == 0:
        made["device"] = folder / "null.jsonl"
        os.mknod(made["device"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return made


def test_fifos_devices_and_folders_are_never_replaced_directly_or_through_a_link(tmp_path):
    """A rename onto /dev/null (a report linked to it, run as root) put a plain file in its place."""
    for kind, path in special_files(tmp_path).items():
        before = os.lstat(path)
        link = tmp_path / f"link-to-{kind}"
        link.symlink_to(path.name)
        word = {"fifo": "FIFO", "folder": "folder", "device": "character device"}[kind]
        for target in (path, link):
            with pytest.raises(OSError, match=rf"not a regular file \({word}\); not replaced"):
                atomic_write_bytes(target, b"data")
        after = os.lstat(path)
        assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino), kind
        assert link.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".cull-tmp")]


def test_a_report_linked_elsewhere_is_written_through_and_one_linked_to_a_device_is_refused(tmp_path):
    library = tmp_path / "library"
    save(blurred_image(0, 6), library / "soft.jpg")
    elsewhere = tmp_path / "reports"
    elsewhere.mkdir()
    (elsewhere / "real.jsonl").write_text("old\n")
    link = tmp_path / "report.jsonl"
    link.symlink_to(Path("reports") / "real.jsonl")  # relative
    env = {"CULL_CACHE_DIR": str(tmp_path / "cache")}
    result = CliRunner().invoke(app, ["scan", str(library), "--workers", "1", "--no-xmp", "--report", str(link)], env=env)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(Path("reports") / "real.jsonl")
    assert [json.loads(line)["path"].endswith("soft.jpg") for line in (elsewhere / "real.jsonl").read_text().splitlines()] == [True]

    fifo = special_files(tmp_path / "library")["fifo"]
    link.unlink()
    link.symlink_to(fifo)
    result = CliRunner().invoke(app, ["scan", str(library), "--workers", "1", "--no-xmp", "--report", str(link)], env=env)
    assert result.exit_code == 2 and "not a regular file" in result.output, result.output  # refused before scanning
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()


def test_a_report_linked_into_a_read_only_folder_is_refused_before_the_scan(tmp_path):
    """The check made before any work looks at the folder of the file the link names, not the link's."""
    library = tmp_path / "library"
    save(blurred_image(0, 6), library / "soft.jpg")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "real.jsonl").write_text("old\n")
    os.chmod(locked / "real.jsonl", 0o444)
    os.chmod(locked, 0o555)
    link = tmp_path / "report.jsonl"
    link.symlink_to(locked / "real.jsonl")
    try:
        proc = subprocess.run([sys.executable, "-m", "cull", "scan", str(library), "--workers", "1", "--no-xmp",
                               "--report", str(link)], capture_output=True, text=True, preexec_fn=drop_dac_override,
                              env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
    finally:
        os.chmod(locked, 0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot write to {locked / 'real.jsonl'}" in proc.stderr and "Scanned" not in proc.stdout + proc.stderr
    assert (locked / "real.jsonl").read_text() == "old\n" and link.is_symlink()


def test_link_chains_relative_links_and_loops(tmp_path):
    real = tmp_path / "cat" / "IMG_1.xmp"
    real.parent.mkdir()
    shutil.copy(DATA / "lightroom.xmp", real)
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (shoot / "IMG_1.CR2").write_bytes(b"raw")
    (shoot / "hop").symlink_to(Path("..") / "cat" / "IMG_1.xmp")
    (shoot / "IMG_1.xmp").symlink_to("hop")  # a chain of two relative links
    assert write_through(shoot / "IMG_1.xmp") == real.resolve()
    outcomes, _ = write_verdict(shoot / "IMG_1.CR2", REJECT, XmpOptions())
    assert [o.action for o in outcomes] == ["written"]
    assert os.readlink(shoot / "IMG_1.xmp") == "hop" and (shoot / "hop").is_symlink()
    assert read_fields(real.read_bytes())["xmp:Rating"] == "-1"

    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="symbolic link loop"):  # was "a link to a missing file"
        atomic_write_bytes(tmp_path / "loop", b"x")
    with pytest.raises(NotWritable, match="symbolic link loop"):
        check_writable(tmp_path / "loop")
    assert os.readlink(tmp_path / "loop") == "loop"
    (tmp_path / "dangling").symlink_to("nothing")
    with pytest.raises(FileNotFoundError, match="symbolic link to a missing file"):
        atomic_write_bytes(tmp_path / "dangling", b"x")
    assert not (tmp_path / "nothing").exists()


def test_clearing_a_linked_sidecar_keeps_the_link_and_clears_the_file_it_names(tmp_path):
    """`cull xmp clear` on a sidecar that links to one cull created: the link used to be deleted
    (the user's link lost) and the file it names kept cull's reject while "removed" was reported."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / "IMG_1.CR2").write_bytes(b"raw")
    assert [o.action for o in write_verdict(first / "IMG_1.CR2", REJECT, XmpOptions())[0]] == ["written"]
    (second / "IMG_1.xmp").symlink_to(first / "IMG_1.xmp")
    if os.geteuid() == 0:
        os.chown(first / "IMG_1.xmp", 65534, 65534)  # someone else's: root keeps the owner
    assert [o.action for o in clear_photo(second / "IMG_1.CR2")] == ["removed"]
    if os.geteuid() == 0:
        assert (os.stat(first / "IMG_1.xmp").st_uid, os.stat(first / "IMG_1.xmp").st_gid) == (65534, 65534)
    assert (second / "IMG_1.xmp").is_symlink() and os.readlink(second / "IMG_1.xmp") == str(first / "IMG_1.xmp")
    assert not has_cull_fields((first / "IMG_1.xmp").read_bytes())
    assert read_fields((first / "IMG_1.xmp").read_bytes())["xmp:Rating"] is None
    assert clear_photo(first / "IMG_1.CR2") == []  # nothing of cull's left there either
    # a scan that comes again writes through the same link
    assert [o.action for o in write_verdict(second / "IMG_1.CR2", REJECT, XmpOptions())[0]] == ["written"]
    assert (second / "IMG_1.xmp").is_symlink() and read_fields((first / "IMG_1.xmp").read_bytes())["xmp:Rating"] == "-1"

    # the same through the CLI, on a link to a sidecar with the user's own values (restored)
    shutil.copy(DATA / "lightroom.xmp", tmp_path / "user.xmp")
    (tmp_path / "third").mkdir()
    (tmp_path / "third" / "IMG_2.CR2").write_bytes(b"raw")
    (tmp_path / "third" / "IMG_2.xmp").symlink_to(tmp_path / "user.xmp")
    write_verdict(tmp_path / "third" / "IMG_2.CR2", REJECT, XmpOptions())
    result = CliRunner().invoke(app, ["xmp", "clear", str(tmp_path / "third")], env={"CULL_CACHE_DIR": str(tmp_path / "c")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "user.xmp").read_bytes() == (DATA / "lightroom.xmp").read_bytes()
    assert (tmp_path / "third" / "IMG_2.xmp").is_symlink()


def test_a_killed_write_through_a_link_leaves_no_temp_beside_the_file_it_names(tmp_path):
    """A run killed while writing through a linked sidecar left its temp in the folder of the file the
    link names, where the sweep of the photo folders never looked; the next scan or `xmp clear` that
    rewrites that file removes it (a live process's temp stays)."""
    library, shared = tmp_path / "library", tmp_path / "shared"
    save(blurred_image(0, 9), library / "soft.jpg")
    shared.mkdir()
    shutil.copy(DATA / "lightroom.xmp", shared / "user.xmp")
    (library / "soft.jpg.xmp").symlink_to(shared / "user.xmp")
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout)  # that process has ended
    live = shared / f".user.xmp.{os.getpid()}-ab12cd34.cull-tmp"  # a run going on now (this process)

    def killed_run_left() -> Path:
        left = shared / f".user.xmp.{dead_pid}-zz99zz99.cull-tmp"
        left.write_bytes(b"half a packet")
        os.utime(left, (1, 1))
        return left

    live.write_bytes(b"x")
    left = killed_run_left()
    time.sleep(0.05)  # coarse file-system clocks: the temps predate the run
    env = {"CULL_CACHE_DIR": str(tmp_path / "cache")}
    result = CliRunner().invoke(app, ["scan", str(library), "--workers", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert read_fields((shared / "user.xmp").read_bytes())["xmp:Rating"] == "-1"  # written through the link
    assert (library / "soft.jpg.xmp").is_symlink()
    assert not left.exists() and live.exists()

    left = killed_run_left()
    time.sleep(0.05)
    result = CliRunner().invoke(app, ["xmp", "clear", str(library)], env=env)
    assert result.exit_code == 0, result.output
    assert (shared / "user.xmp").read_bytes() == (DATA / "lightroom.xmp").read_bytes()
    assert not left.exists() and live.exists()


def test_a_link_to_another_users_file_is_judged_by_that_file(tmp_path, monkeypatch):
    real = tmp_path / "theirs.xmp"
    shutil.copy(DATA / "lightroom.xmp", real)
    os.chmod(real, 0o666)  # writable by anyone, but not ours: a rename would take it over
    (tmp_path / "IMG_1.xmp").symlink_to(real)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(real).st_uid + 1)
    with pytest.raises(NotWritable, match="belongs to another user"):
        check_writable(tmp_path / "IMG_1.xmp")


def test_a_link_into_a_read_only_folder_is_refused_for_an_ordinary_user(tmp_path):
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    shutil.copy(DATA / "lightroom.xmp", catalogue / "IMG_1.xmp")
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (shoot / "IMG_1.CR2").write_bytes(b"raw")
    (shoot / "IMG_1.xmp").symlink_to(catalogue / "IMG_1.xmp")
    os.chmod(catalogue, 0o555)
    script = ("from pathlib import Path; from cull.sidecars import XmpOptions, write_verdict; from cull.xmp import Verdict; "
              f"o, _ = write_verdict(Path({str(shoot / 'IMG_1.CR2')!r}), Verdict('reject', 0.1, None, 'm'), XmpOptions()); "
              "print(o[0].action, o[0].detail)")
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              preexec_fn=drop_dac_override, env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "c")})
    finally:
        os.chmod(catalogue, 0o755)
    assert proc.stdout.startswith("error permission denied (folder"), proc.stdout + proc.stderr
    assert (catalogue / "IMG_1.xmp").read_bytes() == (DATA / "lightroom.xmp").read_bytes()
    assert sorted(p.name for p in catalogue.iterdir()) == ["IMG_1.xmp"] and (shoot / "IMG_1.xmp").is_symlink()
