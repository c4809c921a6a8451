"""The package and the model builder type-check (mypy), so the type hints stay honest. mypy is part of
the [test] extra; train/ needs the [train] extra's packages to resolve its imports ([dev] has both)."""

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_package_type_checks():
    proc = subprocess.run([sys.executable, "-m", "mypy", "cull"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="train/ needs the [train] extra")
def test_model_builder_type_checks():
    proc = subprocess.run([sys.executable, "-m", "mypy", "train"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
