"""The package type-checks (mypy), so the type hints stay honest."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("mypy") is None and not shutil.which(sys.executable), reason="mypy missing")
def test_package_type_checks():
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "cull"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
