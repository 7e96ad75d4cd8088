"""Two CPU processes under torchrun (gloo): the ranks end in sync, and the result equals a single-process
run of plain steps on the same global batch (both ranks' batches and noise, concatenated)."""

from __future__ import annotations

import gc
import json
import socket
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import load_file

import bfcnn
from bfcnn.train import Trainer, noise_seed, step_batches

from _train_common import PYTHON, env, one_thread, tiny


def ddp_config():
    # no batch norm: with it each rank normalizes by its own half batch, which a single process cannot mimic
    config = tiny(total_steps=4, checkpoint_every=2, validate_every=100, iterations_choice=[1, 2],
                  optimizer={"type": "adam", "learning_rate": 0.01})
    config["model"]["batchnorm"] = False
    return config


def tail(output, size=3000):
    """The end of a timed-out child's output (bytes or None there, whatever text=True asked for)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return (output or "")[-size:]


def reference_weights(config, tmp_path, world_size=2):
    """A plain loop: each step, every rank's batch and noise (made as the trainer makes them), concatenated."""
    config = bfcnn.load_config(config)
    views = [Trainer(config, tmp_path / "unused", rank=r, world_size=world_size, distributed=False)
             for r in range(world_size)]
    ref = views[0]
    streams = [step_batches(v.dataset, v.seed, 0, v.every, r, world_size) for r, v in enumerate(views)]
    generators = [torch.Generator().manual_seed(noise_seed(ref.seed, r)) for r in range(world_size)]
    for step in range(ref.steps):
        ref.set_lr(step)
        cleans = [next(s) for s in streams]
        noisy = torch.cat([ref.noise(c, g) for c, g in zip(cleans, generators)])
        clean = torch.cat(cleans)
        k = ref.pick_iterations()
        out = noisy
        for _ in range(k):
            out = ref.model(out)
        loss = ref.loss_fn(out, clean)
        ref.optimizer.zero_grad()
        loss.backward()
        ref.optimizer.step()
    return ref.model.state_dict()


def test_two_processes_with_gloo_match_one_process(tmp_path):
    config = ddp_config()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    # --local-addr: torchrun otherwise tells the ranks to meet at this machine's host name, and where that does
    # not resolve (a CI sandbox's name need not be in /etc/hosts) its own agent retries until killed
    command = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--local-addr", "127.0.0.1",
               "--nproc_per_node", "2", "-m", "bfcnn", "run", str(path), "-o", str(run)]
    try:
        done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"torchrun did not finish in {hung.timeout} s; it printed:\n{tail(hung.stdout)}\n{tail(hung.stderr)}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())["train"]
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert summary["replica_spread"] == 0.0  # the ranks hold identical weights
    # only rank 0 wrote: one set of files, no second temporary anything
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "step-00000002", "step-00000004"]
    state = load_file(str(run / "checkpoints" / "step-00000004" / "state.safetensors"))
    assert {"rng.noise.0", "rng.noise.1"} <= set(state)
    with one_thread():
        expected = reference_weights(config, tmp_path)
    trained = load_file(str(run / "model.safetensors"))
    assert trained.keys() == expected.keys()
    moved = False
    initial = Trainer(bfcnn.load_config(config), tmp_path / "unused2").model.state_dict()
    for key in trained:
        torch.testing.assert_close(trained[key], expected[key], rtol=1e-4, atol=1e-5)
        moved |= not torch.allclose(initial[key], trained[key])
    assert moved


@pytest.mark.parametrize("world_size", [2])
def test_ranks_see_different_data(tmp_path, world_size):
    config = bfcnn.load_config(ddp_config())
    views = [Trainer(config, tmp_path, rank=r, world_size=world_size, distributed=False) for r in range(world_size)]
    first = [next(step_batches(v.dataset, v.seed, 0, v.every, r, world_size)) for r, v in enumerate(views)]
    assert not torch.equal(first[0], first[1])


def test_ddp_lets_go_of_the_process_group_before_it_is_destroyed(tmp_path, monkeypatch):
    """DDP's reducer holds the process group. Left alive past destroy_process_group, it is the last holder, and
    gloo's destructor then runs with the GIL held and joins a worker thread that may be waiting for the GIL:
    about one torchrun run in ten hung at exit that way. The trainer drops its DDP wrapper first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    alive = []
    destroy = torch.distributed.destroy_process_group

    def watched_destroy(*args, **kwargs):
        ddp = torch.nn.parallel.DistributedDataParallel
        alive.extend(o for o in gc.get_objects() if issubclass(type(o), ddp))  # type(): no deprecated proxies
        return destroy(*args, **kwargs)

    monkeypatch.setattr(torch.distributed, "destroy_process_group", watched_destroy)
    trainer = Trainer(bfcnn.load_config(ddp_config()), tmp_path / "run", distributed=True)
    with one_thread():
        summary = trainer.run()
    assert trainer.owns_group and summary["replica_spread"] == 0.0  # it trained under a group of its own
    assert not torch.distributed.is_initialized()
    assert alive == []
