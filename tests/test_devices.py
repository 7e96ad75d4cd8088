"""Host-side process settings: glibc's malloc keeps freed memory for the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bfcnn.devices import MALLOC_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
PAGE_FAULTS = """
import resource, sys, torch
from bfcnn.devices import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("left alone")
    sys.exit()
net = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)])
x = torch.rand(1, 16, 320, 240)  # 4.9 MB activations, freed and asked for again layer after layer
with torch.no_grad():
    net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode, **env):
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES}
    done = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_commands_keep_freed_memory_instead_of_paging_it_in_again():
    kept = page_faults("keep")
    if kept == "left alone":
        pytest.skip("not glibc: malloc is left as it is")
    default = int(page_faults("default"))
    assert default > 1000, "the workload no longer makes glibc page memory in again; make it larger"
    assert int(kept) < default / 5


def test_the_users_malloc_settings_win():
    if page_faults("keep") == "left alone":
        pytest.skip("not glibc: malloc is left as it is")
    assert page_faults("keep", MALLOC_TRIM_THRESHOLD_="131072") == "left alone"
    assert page_faults("keep", MALLOC_MMAP_THRESHOLD_="131072") == "left alone"
