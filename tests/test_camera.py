"""`cull camera` with the replay source: live verdicts, auto capture, screening, failures, shutdown."""

from __future__ import annotations

import os
import select
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


def test_capture_on_keypress_through_a_real_terminal(tmp_path):
    """Drive `cull camera --capture-on-keypress` in a pseudo-terminal: a space takes a shot, q quits."""
    import pty

    source = frames(tmp_path / "f", "s" * 60)
    out = tmp_path / "out"
    pid, fd = pty.fork()
    if pid == 0:  # child: the real command, its stdin a terminal
        os.environ["CULL_CACHE_DIR"] = str(tmp_path / "c")
        os.execv(sys.executable, [sys.executable, "-m", "cull", "camera", "--source", f"folder:{source}",
                                  "--fps", "10", "--capture-on-keypress", "--out", str(out)])
    output = b""
    deadline = time.monotonic() + 60
    sent_space = sent_q = False
    while time.monotonic() < deadline:
        ready = select.select([fd], [], [], 0.1)[0]
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not sent_space and b"fps" in output:
            os.write(fd, b" ")
            sent_space = True
        elif sent_space and not sent_q and b"shot " in output:
            os.write(fd, b"q")
            sent_q = True
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text
    assert "shot cull_" in text and "stopped by q pressed" in text
    assert len(list(out.glob("*.jpg"))) == 1


class FakePicamera2:
    """A stand-in for picamera2.Picamera2 with the calls cull makes (configure, lores frames,
    capture requests saved as JPEG and DNG)."""

    instances: list = []

    def __init__(self):
        self.started = self.closed = False
        self.frames = [np.asarray(sharp_image(i).convert("L").resize((640, 480))) for i in range(3)]
        self.n = 0
        FakePicamera2.instances.append(self)

    def create_still_configuration(self, **kw):
        assert kw["lores"]["size"] == (640, 480) and kw["lores"]["format"] == "YUV420"
        return kw

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def capture_array(self, stream):
        assert stream == "lores"
        y = self.frames[self.n % 3]
        self.n += 1
        return np.concatenate([y, np.full((240, 640), 128, np.uint8)])  # Y plane then chroma (YUV420)

    def capture_request(self):
        camera = self

        class Request:
            def save(self, stream, path):
                assert stream == "main"
                sharp_image(camera.n % 3).save(path, "JPEG")

            def save_dng(self, path):
                Path(path).write_bytes(b"II*\x00fake dng")

            def release(self):
                pass

        return Request()

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_pi_camera_source_scores_lores_frames_and_saves_jpeg_and_dng(tmp_path, monkeypatch, card):
    import types

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    out = tmp_path / "out"
    summary = run_camera(open_source("picamera2"), card,
                         CameraOptions(out=out, trigger=Trigger.AUTO, auto_frames=2, dng=True, max_frames=4),
                         stream=open(os.devnull, "w"))
    assert [f.verdict for f in summary.frames[:2]] == [Verdict.KEEP, Verdict.KEEP]
    assert len(summary.shots) == 1 and summary.shots[0].verdict is Verdict.KEEP
    names = sorted(p.name for p in out.iterdir())
    assert [n.rsplit(".", 1)[1] for n in names] == ["dng", "jpg"] and not list(out.glob(".*partial"))
    assert FakePicamera2.instances[-1].closed
