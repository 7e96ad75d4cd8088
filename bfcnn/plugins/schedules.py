"""Built-in learning-rate schedules: `schedule(step) -> float`, a multiplier of the base learning rate."""

from __future__ import annotations

import math

from bfcnn.registry import hookimpl


def constant():
    return lambda step: 1.0


def exponential_decay(decay_rate=0.9, decay_steps=10000, staircase=False):
    """The seed's schedule: multiply the rate by decay_rate every decay_steps steps."""
    def schedule(step):
        exponent = step // decay_steps if staircase else step / decay_steps
        return decay_rate ** exponent
    return schedule


def cosine(total_steps=None, warmup_steps=0, min_factor=0.0):
    """Cosine annealing from 1 to min_factor over total_steps (the trainer fills in the run's length when
    it is left out), after an optional linear warm-up."""
    if total_steps is None:
        from bfcnn.errors import ConfigError
        raise ConfigError("schedule.total_steps: the cosine schedule needs it outside a training run")

    def schedule(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))
    return schedule


def step(milestones, gamma=0.1):
    return lambda s: gamma ** sum(s >= m for m in milestones)


STEPS = {"type": "integer", "minimum": 1}


@hookimpl
def register_schedules(register):
    register("constant", constant, {"type": "object", "additionalProperties": False, "properties": {}},
             "the base rate throughout")
    register("exponential_decay", exponential_decay, {
        "type": "object", "additionalProperties": False,
        "properties": {"decay_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                       "decay_steps": STEPS, "staircase": {"type": "boolean"}},
    }, "the seed's exponential decay: rate * decay_rate ** (step / decay_steps)")
    register("cosine", cosine, {
        "type": "object", "additionalProperties": False, "examples": [{"total_steps": 1000, "warmup_steps": 10}],
        "properties": {"total_steps": {**STEPS, "description": "default: the run's total steps"},
                       "warmup_steps": {"type": "integer", "minimum": 0},
                       "min_factor": {"type": "number", "minimum": 0, "maximum": 1}},
    }, "cosine annealing with optional linear warm-up")
    register("step", step, {
        "type": "object", "additionalProperties": False, "required": ["milestones"],
        "examples": [{"milestones": [100, 1000], "gamma": 0.5}],
        "properties": {"milestones": {"type": "array", "items": STEPS, "minItems": 1},
                       "gamma": {"type": "number", "exclusiveMinimum": 0}},
    }, "multiply by gamma at each milestone step")
