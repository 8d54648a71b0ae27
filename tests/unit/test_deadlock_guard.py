"""The suite's last resort against a test stuck below Python (tests/conftest.py, DEADLOCK_S)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_stuck_test_is_dumped_and_ends_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_stuck.py").write_text("import time\n\n\ndef test_stuck():\n    time.sleep(60)\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_stuck.py"), "-q", "-p", "no:cacheprovider",
         "-p", "tests.conftest", "--rootdir", str(tmp_path), "-o", "timeout=0"],
        cwd=REPO,
        env={**os.environ, "TESTS_DEADLOCK_S": "2"},
        capture_output=True,
        text=True,
        timeout=50,  # far less than the stuck test's 60 s: only the guard can end it in time
    )  # fmt: skip
    assert done.returncode != 0
    # faulthandler wrote every thread's stack to the real stderr (not pytest's capture, lost on exit)
    assert "Timeout (0:00:02)!" in done.stderr, done.stderr[-1500:]
    assert 'test_stuck.py", line 5 in test_stuck' in done.stderr
