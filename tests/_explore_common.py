"""Shared by the explore tests: `bfcnn explore` started in a subprocess on a free port."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def serve(*args, env=None):
    """`bfcnn explore ... --port 0` in a subprocess; returns (process, the address it printed)."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "bfcnn", "explore", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    line = process.stdout.readline()
    if "serving at" not in line:
        process.kill()
        raise AssertionError(f"bfcnn explore did not start: {line}{process.stderr.read()}")
    return process, line.split("serving at ")[1].split()[0]
