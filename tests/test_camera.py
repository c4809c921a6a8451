"""`cull camera` with the replay source: live verdicts, auto capture, screening, failures, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cull.camera.assist import AutoCapture, render_line
from cull.camera.run import CameraOptions, Trigger, run_camera
from cull.camera.sources import CameraError, ReplaySource, open_source
from cull.cli import app
from cull.decide import Verdict
from cull.xmp import read_fields
from tests.conftest import CLEARLY_SHARP, blurred_image, sharp_image


def frames(folder: Path, pattern: str) -> Path:
    """Write a frame sequence: 's' = in-focus frame, 'b' = blurred frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(pattern):
        image = sharp_image(i % CLEARLY_SHARP) if kind == "s" else blurred_image(i % 4, 6)
        image.save(folder / f"frame_{i:03d}.png")
    return folder


def test_in_focus_and_blurred_sequences_give_the_expected_live_verdicts(tmp_path, card):
    summary = run_camera(ReplaySource(frames(tmp_path / "f", "ssssbbbb")), card, CameraOptions(out=tmp_path / "out"),
                         stream=open(os.devnull, "w"))
    verdicts = [f.verdict for f in summary.frames]
    assert verdicts[:4] == [Verdict.KEEP] * 4
    assert Verdict.KEEP not in verdicts[4:]
    assert "IN FOCUS" in render_line(summary.frames[0], 12.0) and "12.0 fps" in render_line(summary.frames[0], 12.0)
    assert "soft" in render_line(summary.frames[-1], 12.0)
    assert summary.frames[0].sharp_boxes and not summary.shots  # no trigger: no shots


def test_auto_capture_policy():
    auto = AutoCapture(3)
    fired = [auto.update(x) for x in [True, True, False, True, True, True, True, True, False, True, True, True]]
    assert [i for i, f in enumerate(fired) if f] == [5, 11]
    with pytest.raises(ValueError):
        AutoCapture(0)


def test_auto_capture_fires_only_on_in_focus_runs(tmp_path, card):
    fired_at = []
    out = tmp_path / "out"
    summary = run_camera(
        ReplaySource(frames(tmp_path / "f", "bbbsssssbbbsssbbssssss")), card,
        CameraOptions(out=out, trigger=Trigger.AUTO, auto_frames=4), stream=open(os.devnull, "w"),
        on_frame=lambda frame, fps: fired_at.append(len(fired_at)),
    )
    assert len(summary.shots) == 2  # the 3-frame run is too short
    assert all(s.verdict is Verdict.KEEP for s in summary.shots)
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == sorted(s.path.name for s in summary.shots)


def test_shots_are_screened_flagged_and_moved(tmp_path, card):
    out = tmp_path / "out"
    summary = run_camera(
        ReplaySource(frames(tmp_path / "f", "bbbb")), card,
        CameraOptions(out=out, trigger=Trigger.INTERVAL, interval=0.0001, move_rejects=True, max_shots=2),
        stream=open(os.devnull, "w"),
    )
    assert len(summary.shots) == 2 and all(s.verdict is Verdict.REJECT for s in summary.shots)
    for shot in summary.shots:
        assert shot.moved_to is not None and shot.moved_to.is_file() and "_culled" in shot.moved_to.parts
        sidecar = shot.moved_to.with_name(shot.moved_to.name + ".xmp")
        assert read_fields(sidecar.read_bytes())["xmp:Rating"] == "-1"  # the sidecar moved with the shot
    assert not list(out.glob("*.jpg")) and not list(out.rglob("*.partial"))


def test_video_file_replay(tmp_path, card):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (500, 500))
    for i in range(3):
        writer.write(np.asarray(sharp_image(i))[:, :, ::-1])
    writer.release()
    summary = run_camera(open_source(f"folder:{video}"), card, CameraOptions(out=tmp_path / "o"), stream=open(os.devnull, "w"))
    assert len(summary.frames) == 3 and all(f.photo.score is not None for f in summary.frames)


def test_camera_that_fails_to_open_or_disconnects_is_a_clear_error(tmp_path, monkeypatch, card):
    import cv2

    result = CliRunner().invoke(app, ["camera", "--source", "opencv:9", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "cannot open camera opencv:9" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for bad in ("folder:" + str(tmp_path / "missing"), "telescope:1", "opencv:x"):
        with pytest.raises(CameraError):
            open_source(bad)

    class FlakyCapture:
        def __init__(self, *a):
            self.n = 0

        def isOpened(self):
            return True

        def read(self):
            self.n += 1
            return (self.n <= 3), np.asarray(sharp_image(0))[:, :, ::-1].copy() if self.n <= 3 else None

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FlakyCapture)
    with pytest.raises(CameraError, match="stopped delivering frames after 3"):
        run_camera(open_source("opencv:0"), card, CameraOptions(out=tmp_path / "o"), stream=open(os.devnull, "w"))


def test_pi_camera_without_picamera2_says_what_to_install():
    with pytest.raises(CameraError, match="picamera2"):
        open_source("picamera2")


def test_sigterm_stops_cleanly_without_half_written_files(tmp_path):
    source = frames(tmp_path / "f", "s" * 40)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cull", "camera", "--source", f"folder:{source}", "--fps", "8", "--interval", "0.2",
         "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "c")},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.is_dir() and list(out.glob("*.jpg"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM" in stdout and "Traceback" not in stderr
    assert list(out.glob("*.jpg")) and not list(out.rglob("*.partial"))
    for still in out.glob("*.jpg"):
        Image.open(still).verify()  # complete files only
