"""Contract tests over every registered measurement (plugins included), and the built-ins' own behaviour."""

import numpy as np
import pytest
import torch
from PIL import Image

import bfcnn
from bfcnn.errors import BfcnnError
from bfcnn.registry import default_registries, hookimpl, load_registries
from bfcnn.restore import Measurement, MeasurementFactory

SHAPES = [(3, 24, 32), (1, 21, 35)]  # the second: sizes no block divides


def every_measurement():
    return [pytest.param(name, id=name) for name in bfcnn.names("measurement")]


def build(name, shape, seed=0, registries=None):
    component = (registries or default_registries())["measurement"].get(name)
    params = (component.schema.get("examples") or [{}])[0]
    make = bfcnn.build("measurement", {"type": name, **params}, registries)
    try:
        return make(shape, seed=seed), shape
    except BfcnnError:  # e.g. block averaging needs the factor to divide the size
        shape = (shape[0], 32, 32)
        return make(shape, seed=seed), shape


def check_contract(m, shape):
    n = 2
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((n, *shape), generator=gen, dtype=torch.float32)
    y_of_x = m.measure(x)
    assert y_of_x.shape[0] == n and y_of_x.dtype == x.dtype
    y = torch.randn(y_of_x.shape, generator=gen)
    back = m.adjoint(y)
    assert back.shape == x.shape, "the adjoint maps measurements back to images"
    # adjointness: <M x, y> = <x, M^T y>
    lhs = (y_of_x.double() * y.double()).sum()
    rhs = (x.double() * back.double()).sum()
    assert abs(lhs - rhs) <= 1e-4 * (1 + abs(lhs)), (lhs, rhs)
    # orthonormal rows: M M^T = I, so M^T M is a projection (idempotent, and never longer)
    assert torch.allclose(m.measure(back), y, atol=1e-4), "M M^T must be the identity"
    p = m.project(x)
    assert torch.allclose(m.project(p), p, atol=1e-4)
    assert (p.flatten(1).norm(dim=1) <= x.flatten(1).norm(dim=1) * (1 + 1e-5)).all()
    # the degraded image a person sees leads back to the same measurements
    assert torch.allclose(m.from_degraded(m.degrade(x)), y_of_x, atol=1e-3)
    # its own defaults for the algorithm are valid parameters of it
    import jsonschema
    from bfcnn.restore import ALGORITHM_SCHEMA, check_params, DEFAULTS
    own = getattr(m, "restore_defaults", {}) or {}
    assert isinstance(own, dict) and set(own) <= set(ALGORITHM_SCHEMA), own
    jsonschema.validate(own, {"type": "object", "properties": ALGORITHM_SCHEMA, "additionalProperties": False})
    check_params(**{**DEFAULTS, **own})


@pytest.mark.parametrize("shape", SHAPES, ids=["color", "gray_odd"])
@pytest.mark.parametrize("name", every_measurement())
def test_measurement_contract(name, shape):
    m, shape = build(name, shape)
    assert isinstance(m, Measurement) and m.shape == shape
    check_contract(m, shape)
    # reproducible from the seed
    x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(1))
    again, _ = build(name, shape)
    assert torch.equal(m.measure(x), again.measure(x))


class SubsampleRowsPlugin:
    """A plugin measurement: every other row of the image."""

    class EveryOtherRow(Measurement):
        def measure(self, x):
            return self.check(x)[:, :, ::2]

        def adjoint(self, y):
            out = y.new_zeros((y.shape[0], *self.shape))
            out[:, :, ::2] = y
            return out

    @hookimpl
    def register_measurements(self, register):
        register("fake_every_other_row", lambda: MeasurementFactory(self.EveryOtherRow),
                 {"type": "object", "properties": {}}, "every other row")


def test_a_plugin_measurement_is_registered_and_meets_the_contract():
    registries = load_registries(extra_plugins=[SubsampleRowsPlugin()], autoload=False)
    assert registries["measurement"].get("fake_every_other_row").plugin == "SubsampleRowsPlugin"
    m, shape = build("fake_every_other_row", (3, 10, 12), registries=registries)
    check_contract(m, shape)


def test_random_pixels_keeps_the_fraction_and_the_seed_picks_them():
    a = bfcnn.build("measurement", {"type": "random_pixels", "fraction": 0.25})((3, 40, 40), seed=1)
    b = bfcnn.build("measurement", {"type": "random_pixels", "fraction": 0.25})((3, 40, 40), seed=2)
    assert int(a.known.sum()) == 400 and not torch.equal(a.known, b.known)


def test_block_average_degrades_to_the_small_image():
    m = bfcnn.build("measurement", {"type": "block_average", "factor": 2})((1, 4, 4))
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.allclose(m.degrade(x)[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert m.shape == bfcnn.build("measurement", {"type": "block_average", "factor": 2}).image_shape((1, 2, 2))


def test_blur_degrade_is_a_gaussian_blur_with_mirrored_borders():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(1, 1, 48, 40, generator=torch.Generator().manual_seed(0))
    m = bfcnn.build("measurement", {"type": "blur", "sigma": 1.5})((1, 48, 40))
    expected = gaussian_filter(x[0, 0].double().numpy(), 1.5, mode="reflect", truncate=6)
    assert np.abs(m.degrade(x)[0, 0].numpy() - expected).max() < 2e-3


def test_inpaint_mask_file(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    m = bfcnn.build("measurement", {"type": "inpaint", "mask": str(tmp_path / "mask.png")})((3, 20, 30))
    assert int((~m.known).sum()) == 50 and not m.known[7, 7] and m.known[0, 0]
    with pytest.raises(BfcnnError, match="same size"):
        bfcnn.build("measurement", {"type": "inpaint", "mask": str(tmp_path / "mask.png")})((3, 20, 31))


@pytest.mark.parametrize("spec, shape, message", [
    ({"type": "block_average", "factor": 4}, (3, 30, 32), "does not divide"),
    ({"type": "inpaint", "box": [10, 10, 30, 5]}, (3, 32, 32), "not inside"),
])
def test_bad_shapes_are_clear_errors(spec, shape, message):
    with pytest.raises(BfcnnError, match=message):
        bfcnn.build("measurement", spec)(shape)


@pytest.mark.parametrize("spec", [{"type": "random_pixels", "fraction": 0}, {"type": "random_pixels", "fraction": 1.5},
                                  {"type": "compressive", "fraction": -0.1}, {"type": "block_average", "factor": 3}])
def test_bad_params_are_config_errors(spec):
    with pytest.raises(bfcnn.ConfigError):
        bfcnn.build("measurement", spec)
