"""The data stream of a run: its seeds, the batches of every step (re-seeded at each checkpoint boundary, so that a
resumed run sees the very batches an uninterrupted one does), and the thread that prefetches them."""

from __future__ import annotations

import inspect
import math
import queue
import threading

import numpy as np
import torch

from .schema import UNLIMITED

def mix(*values) -> int:
    """A stable 63-bit seed from integers (numpy's SeedSequence: well spread, the same in every process)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def data_seed(seed, segment):
    return mix(seed, 1, segment)


def noise_seed(seed, rank):
    return mix(seed, 2, rank)


def choice_seed(seed):
    return mix(seed, 3)


def total_steps(train_cfg, dataset, world_size=1, section=None):
    steps = train_cfg.get("total_steps", -1)
    if steps and steps > 0:
        return steps
    section = train_cfg if section is None else section
    if train_cfg.get("time_limit") is not None and "epochs" not in section:
        return UNLIMITED  # the time limit ends the run
    per_epoch = max(1, math.ceil(len(dataset) / (dataset.batch_size * world_size)))
    return train_cfg.get("epochs", 1) * per_epoch


def takes_start(dataset):
    """Whether dataset.batches takes `start` (the built-in datasets do; the plugin contract does not ask it)."""
    try:
        parameters = inspect.signature(dataset.batches).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "start" for p in parameters)  # not **kwargs: a plugin might ignore it and restart at 0


def step_batches(dataset, seed, start, every, rank=0, world_size=1):
    """Clean batches for steps start, start+1, ...: the stream is re-seeded at every multiple of `every`
    (the checkpoint interval), so a run resumed from a checkpoint gets the very batches an uninterrupted run
    gets; a resume between boundaries (after Ctrl-C) skips forward within its segment, at no cost where the
    dataset's batches() takes `start` (batch b depends only on seed, rank and b), else by drawing them."""
    step, free_skip = start, takes_start(dataset)
    while True:
        segment = step // every
        skip = step - segment * every
        if free_skip:
            stream = dataset.batches(data_seed(seed, segment), rank, world_size, start=skip)
            skip = 0
        else:
            stream = dataset.batches(data_seed(seed, segment), rank, world_size)
        try:
            for _ in range(skip):
                next(stream)
            while True:
                yield next(stream)
                step += 1
                if step % every == 0:
                    break
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()


def copy_tensors(targets, sources):
    """targets[i].copy_(sources[i]) for all i, fused into one kernel launch where torch has _foreach_copy_."""
    if not targets:
        return
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)
    else:
        for target, source in zip(targets, sources):
            target.copy_(source)


class Prefetcher:
    """Pulls batches from an iterator in a background thread (pinned when going to CUDA), `depth` ahead."""

    def __init__(self, iterator, depth, pin=False):
        self.iterator, self.pin = iterator, pin
        self.queue = queue.Queue(maxsize=max(1, depth))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.work, name="bfcnn-prefetch", daemon=True)
        self.thread.start()

    def work(self):
        try:
            for item in self.iterator:
                if self.pin:
                    item = item.pin_memory()
                while not self.stopped.is_set():
                    try:
                        self.queue.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stopped.is_set():
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self.queue.put(("error", error))

    def __iter__(self):
        return self

    def __next__(self):
        kind, item = self.queue.get()
        if kind == "error":
            raise item
        return item

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)

