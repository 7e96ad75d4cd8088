"""The prepared GPU sitting of the flagship (benchmarks/gpu_flagship.sh): its --dry-run runs every step on the
CPU in seconds (install skipped, two training steps on the photos scikit-image ships, tiny benchmarks), so the
one command that a GPU session gets is known to work before it is spent."""

import json
import os
import shutil
import subprocess

import pytest

from _train_common import REPO, env

SCRIPT = REPO / "benchmarks" / "gpu_flagship.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_writes_weights_metrics_and_benchmarks(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], env=env(), cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + (out / "train.log").read_text()[-2000:]
    for name in ("model.safetensors", "metrics.jsonl", "config.yaml", "bench_train.txt", "bench_denoise.txt",
                 "bench_explain.txt", "env.txt"):
        assert (out / name).is_file(), name
    for name in ("bench_train.txt", "bench_denoise.txt", "bench_explain.txt"):
        assert "failed" not in (out / name).read_text(), (out / name).read_text()[-1500:]
    explain = json.loads((out / "bench_explain.txt").read_text())
    assert explain["jacobian"]["shape"] == [12 * 12 * 3, 12 * 12 * 3]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("step") == 2 and r.get("loss") is not None for r in steps)
    import bfcnn
    from bfcnn.checkpoint import read_model_spec
    import yaml
    flagship = yaml.safe_load((REPO / "configs" / "flagship.yaml").read_text())
    assert read_model_spec(out / "model.safetensors") == flagship["model"]  # the flagship's architecture
    assert bfcnn.load_model(str(out / "model.safetensors")).module.bias_free


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--minutes", "ten"], ["--frobnicate"]):
        result = subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, **env()}, cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "gpu_flagship.sh:" in result.stderr
