"""The package type-checks (mypy), so the type hints stay honest. mypy is part of the [test] extra."""

import subprocess
import sys

from tests.conftest import REPO


def test_package_type_checks():
    proc = subprocess.run([sys.executable, "-m", "mypy", "cull"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
