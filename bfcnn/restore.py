"""restore images (inpainting, super-resolution, deblurring, compressive sensing) with the denoiser's prior

The prior implicit in a blind denoiser (Kadkhodaie & Simoncelli, NeurIPS 2021, arXiv 2007.13640): a stochastic
coarse-to-fine gradient ascent on the log density of noisy images.

A blind least-squares denoiser's residual f(y) - y is sigma^2 times the gradient of log p_sigma(y) (Miyasawa,
Tweedie), and its size tells the noise level sigma that remains. Starting from noise of std `sigma_0`, each
step moves y along the residual in the unmeasured subspace and towards the measurements in the measured one,

    d_t = (I - M^T M) (f(y) - y) + M^T m - M^T M y,      sigma_t = |d_t| / sqrt(N)
    h_t = h0 t / (1 + h0 (t - 1)),   gamma_t = sigma_t sqrt((1 - beta h_t)^2 - (1 - h_t)^2)
    y  <- y + h_t d_t + gamma_t z,   z ~ N(0, I)

until sigma_t reaches `sigma_L`; the result is f(y). beta in (0, 1] sets how much noise is injected (1: none).
Without a measurement (`sample`) the same steps draw an image from the prior.

A measurement M is any linear map with orthonormal rows (M M^T = I, so M^T M is the orthogonal projection on
what is measured): see `Measurement`; the built-ins live in bfcnn/plugins/measurements.py and plugins add more
through the `register_measurements` hook.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field

import torch

from .errors import BfcnnError
from .measurement import Measurement, MeasurementFactory  # noqa: F401 (the interface, as it was here)

log = logging.getLogger("bfcnn")

# the shipped model that `restore` and `sample` use without one given: a bias-free UNet (DRUNet-shaped), whose
# four scales see across a hole, where the default denoiser's 21-pixel view sees its edge; the prior then adds
# to the data's smooth fill instead of keeping it (BENCHMARKS.md, "A prior that sees across the hole")
DEFAULT_PRIOR = "bf_drunet_small_cpu"

# the algorithm's defaults, on the [0, 1] pixel scale, tuned on 12 crops of Kodak24 / Set12 with DEFAULT_PRIOR
# (benchmarks/bench_restore.py, BENCHMARKS.md): from the data's smooth fill plus noise of 0.4, with more noise
# injected (beta 0.05) than the paper's start from grey noise of 1.0; a measurement's `restore_defaults` win
DEFAULTS = {"sigma_0": 0.4, "sigma_L": 0.01, "h0": 0.01, "beta": 0.05, "max_iterations": 1000, "average": 1,
            "start": "smooth"}
SAMPLE_DEFAULTS = {"sigma_0": 1.0, "sigma_L": 0.01, "h0": 0.01, "beta": 0.5, "max_iterations": 1000, "average": 1,
                   "start": "noise"}
STARTS = ("noise", "smooth")
TRAJECTORY_FRAMES = 8  # frames kept at even steps of log sigma between sigma_0 and sigma_L

ALGORITHM_SCHEMA = {
    "sigma_0": {"type": "number", "exclusiveMinimum": 0, "description": "starting noise level ([0, 1] scale)"},
    "sigma_L": {"type": "number", "exclusiveMinimum": 0, "description": "stop at this effective noise level"},
    "h0": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "first step size"},
    "beta": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
             "description": "injected noise: 1 none, smaller more"},
    "max_iterations": {"type": "integer", "minimum": 1},
    "start": {"enum": list(STARTS),
              "description": "noise: the paper's start (grey plus noise of sigma_0; pair it with sigma_0 1 and "
                             "beta 0.01); smooth: the data's smoothest fill plus noise of sigma_0 (the default)"},
    "average": {"type": "integer", "minimum": 1,
                "description": "mean of this many draws (nearer the posterior mean, higher PSNR; that many times "
                               "the work)"},
}


class Replicated(Measurement):
    """A one-channel measurement applied to each of `channels` channels alike: gray data through a colour model.
    (Feeding the model gray images replicated to colour would give it noise equal in every channel, which a
    colour denoiser mostly keeps as structure; here the noise stays independent and the data agree.)"""

    def __init__(self, measurement, channels):
        super().__init__((channels, *measurement.shape[1:]), measurement.seed, measurement.device)
        self.inner = measurement

    def measure(self, x):
        return torch.stack([self.inner.measure(x[:, i:i + 1]) for i in range(x.shape[1])], dim=1)

    def adjoint(self, y):
        return torch.cat([self.inner.adjoint(y[:, i]) for i in range(y.shape[1])], dim=1)


@dataclass
class Result:
    """What `restore` and `sample` return: the image (N x C x H x W), frames of y along the way, a report."""

    image: torch.Tensor
    trajectory: list = field(default_factory=list)  # N x C x H x W tensors, from sigma_0 down to sigma_L
    report: dict = field(default_factory=dict)


def as_denoiser(model, device="cpu"):
    """A model, a Denoiser, or a name/path -> (fn: N x C x H x W -> denoised, the torch module, channels)."""
    from .denoise import Denoiser
    from .layers import model_channels

    model = load_prior(model, device)
    if isinstance(model, Denoiser):
        return model.forward, model.module, model.channels
    if not isinstance(model, torch.nn.Module):
        raise BfcnnError(f"restore needs a denoiser (a torch model, a Denoiser, a name or path), got {type(model)}")
    module = model.eval()

    def fn(x):
        with torch.inference_mode():
            return module(x).float()
    return fn, module, model_channels(module)


def load_prior(model, device="cpu"):
    """A name or a path loaded as a Denoiser (None: DEFAULT_PRIOR); a model or Denoiser as it is."""
    if model is None or isinstance(model, str) or hasattr(model, "__fspath__"):
        from .denoise import load_denoiser

        return load_denoiser(DEFAULT_PRIOR if model is None else model, device=device)
    return model


def check_prior(module) -> list[str]:
    """Warnings for a model whose residual does not measure the noise level (the algorithm relies on it)."""
    notes = []
    if getattr(module, "bias_free", None) is not True:
        notes.append(f"the model ({type(module).__name__}) is not bias-free: its residual's size may not track "
                     "the noise level, and the steps may not converge")
    if getattr(module, "blind", True) is False:
        notes.append(f"the model ({type(module).__name__}) is not blind (trained for one noise level): the "
                     "effective noise level read from its residual is not reliable")
    for note in notes:
        log.warning("restore: %s", note)
    return notes


def check_params(sigma_0, sigma_L, h0, beta, max_iterations, average=1, start=DEFAULTS["start"]):
    for name, value in (("sigma_0", sigma_0), ("sigma_L", sigma_L), ("h0", h0), ("beta", beta)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise BfcnnError(f"{name} must be a positive number, got {value!r}")
    if h0 > 1 or beta > 1:
        raise BfcnnError(f"h0 and beta must be in (0, 1], got h0={h0}, beta={beta}")
    if sigma_L >= sigma_0:
        raise BfcnnError(f"sigma_L ({sigma_L}) must be below sigma_0 ({sigma_0})")
    if int(max_iterations) < 1:
        raise BfcnnError(f"max_iterations must be at least 1, got {max_iterations}")
    if int(average) < 1:
        raise BfcnnError(f"average must be at least 1, got {average}")
    if start not in STARTS:
        raise BfcnnError(f"start must be one of {', '.join(STARTS)}, got {start!r}")


def restore(model, measurement, measured, sigma_0=None, sigma_L=None, h0=None, beta=None, max_iterations=None,
            average=None, start=None, seed=0, progress=True, clean=None, device="cpu", frames=TRAJECTORY_FRAMES,
            defaults=None, consistent=True) -> Result:
    """Solve M x = measured for x with the denoiser's prior.

    model: a torch model (N x C x H x W -> denoised), a Denoiser, a name or a path (None: DEFAULT_PRIOR).
    measurement: a `Measurement` built for the image shape (None: no constraint, i.e. sampling).
    measured: M x of the unknown images (N x ...), or for measurement None the batch shape (N, C, H, W).
    sigma_0, sigma_L, h0, beta, start: the algorithm's parameters on the [0, 1] pixel scale (defaults: `DEFAULTS`,
    updated by the measurement's `restore_defaults`).
    clean: the true images where known, for PSNR / SSIM in the report.
    consistent: replace the result's measured part by the data's, M^T m (an orthogonal projection, so the result
    can only come closer to the truth when the data are exact; the paper's code leaves f(y) as it is).
    Returns a `Result`: the image (unclamped), `frames` frames of y, and a report (iterations, final sigma in
    0..255 units, seconds, the sigma of every step, PSNR / SSIM where `clean` is given, and then for the smooth
    start also `start_psnr`, the fill's alone).
    """
    params = dict(defaults or DEFAULTS)
    params.update(getattr(measurement, "restore_defaults", None) or {})  # what suits this measurement
    for key, value in (("sigma_0", sigma_0), ("sigma_L", sigma_L), ("h0", h0), ("beta", beta),
                       ("max_iterations", max_iterations), ("average", average), ("start", start)):
        if value is not None:
            params[key] = value
    check_params(**params)
    denoise, module, channels = as_denoiser(model, device)
    notes = check_prior(module)
    device = next(iter(module.parameters()), torch.empty(0)).device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    gray_through_color = False
    draws = int(params["average"])
    if measurement is None:
        n, c, height, width = (int(s) for s in measured)
        n *= draws
        gray_through_color = c == 1 and channels > 1
        shape = (n, channels if gray_through_color else c, height, width)
        project = lambda x: torch.zeros_like(x)  # noqa: E731
        back = torch.zeros(shape, device=device)
    else:
        expected = tuple(measurement.measure(torch.zeros((1, *measurement.shape), device=device)).shape[1:])
        if measured.dim() < 1 or tuple(measured.shape[1:]) != expected:
            raise BfcnnError(f"the measured data have shape {tuple(measured.shape)}; {type(measurement).__name__} "
                             f"measures N x {' x '.join(map(str, expected))}")
        measured = measured.to(device=device, dtype=torch.float32).repeat_interleave(draws, dim=0)
        if measurement.shape[0] == 1 and channels > 1:
            gray_through_color = True
            measurement = Replicated(measurement, channels)
            measured = torch.stack([measured] * channels, dim=1)
        shape = (measured.shape[0], *measurement.shape)
        project = measurement.project
        back = measurement.adjoint(measured)
    numel = shape[1] * shape[2] * shape[3]
    sigma_0, sigma_L, h0, beta = params["sigma_0"], params["sigma_L"], params["h0"], params["beta"]
    y = grey_start(project, back)
    fill = None
    if params["start"] == "smooth" and measurement is not None:  # deterministic: once per image, not per draw
        fill = smooth_fill(y[::draws], project, back[::draws])
        y = fill.repeat_interleave(draws, dim=0)
    y = y + sigma_0 * torch.randn(shape, generator=generator, device=device)
    milestones = [sigma_0 * (sigma_L / sigma_0) ** (i / max(frames - 1, 1)) for i in range(frames)]
    trajectory = [y.clone()] if frames else []
    sigmas, active = [], torch.ones(shape[0], dtype=torch.bool, device=device)
    started = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=params["max_iterations"], desc="restore" if measurement is not None else "sample",
               unit="step", disable=not progress, file=sys.stderr, leave=False)
    t = 0
    sigma = torch.full((shape[0],), float("inf"), device=device)
    try:
        while t < params["max_iterations"]:
            t += 1
            h = h0 * t / (1 + h0 * (t - 1))
            residual = denoise(y) - y
            d = residual - project(residual) + back - project(y)
            sigma = d.flatten(1).norm(dim=1) / math.sqrt(numel)
            sigmas.append(sigma.max().item())
            bar.update(1)
            bar.set_postfix_str(f"sigma {255 * sigmas[-1]:.2f}/255", refresh=False)
            active = sigma > sigma_L
            if not active.any():
                break
            gamma = sigma * math.sqrt(max((1 - beta * h) ** 2 - (1 - h) ** 2, 0.0))
            z = torch.randn(shape, generator=generator, device=device)
            step = h * d + gamma.view(-1, 1, 1, 1) * z
            y = y + step * active.view(-1, 1, 1, 1)
            while len(trajectory) < frames - 1 and sigmas[-1] <= milestones[len(trajectory)]:
                trajectory.append(y.clone())
    finally:
        bar.close()
    image = denoise(y)
    if measurement is not None and consistent:  # the measured part is known exactly: keep it (never farther from x)
        image = image - project(image) + back
    if frames:
        trajectory.append(image.clone())
    if draws > 1:  # the mean of the draws of each image; frames of its first draw
        image = image.unflatten(0, (-1, draws)).mean(dim=1)
        trajectory = [frame[::draws] for frame in trajectory]
        sigma = sigma.unflatten(0, (-1, draws)).max(dim=1).values
    if gray_through_color:  # back to one channel: the mean of the channels the data held alike
        image = image.mean(dim=1, keepdim=True)
        trajectory = [frame.mean(dim=1, keepdim=True) for frame in trajectory]
    seconds = time.perf_counter() - started
    report = {
        "iterations": t,
        "converged": bool(not active.any()),
        "final_sigma": [round(255 * s, 4) for s in sigma.tolist()],
        "seconds": round(seconds, 3),
        "seconds_per_iteration": round(seconds / max(t, 1), 4),
        "parameters": {**params, "seed": int(seed), "consistent": bool(consistent)},
        "sigmas": [round(255 * s, 4) for s in sigmas],
    }
    if notes:
        report["warnings"] = notes
    if not report["converged"]:
        diverged = sigmas[-1] > sigma_0
        report["diverged"] = diverged
        log.warning("restore: stopped after %d steps at sigma %.3g/255 (sigma_L %.3g/255): %s", t, 255 * sigmas[-1],
                    255 * sigma_L, "the steps diverged (a model whose residual does not track the noise level?); "
                    "try a smaller h0 or a larger beta" if diverged else "raise max_iterations or h0")
    if clean is not None:
        report.update(quality(image, clean.to(image.device)))
        if fill is not None:  # the start alone (no model): what the prior added is the difference
            if gray_through_color:
                fill = fill.mean(dim=1, keepdim=True)
            report["start_psnr"] = quality(fill, clean.to(fill.device))["psnr"]
    return Result(image=image, trajectory=trajectory, report=report)


def grey_start(project, back):
    """The paper's start before its noise: the data M^T m where measured, grey (0.5) elsewhere."""
    ones = torch.ones_like(back)
    return 0.5 * (ones - project(ones)) + back


def data_fill(measurement, measured):
    """The smooth start alone (no model, no noise) for M x = measured: `smooth_fill` from the grey start."""
    back = measurement.adjoint(measured)
    return smooth_fill(grey_start(measurement.project, back), measurement.project, back)


def smooth_fill(y, project, back, scales=(16, 8, 4, 2, 1), rounds=12, membrane=0.5, iterations=500,
                tolerance=1e-4):
    """The smoothest image that agrees with the data: of all x with M x = m, the one of least
    membrane |grad x|^2 + (1 - membrane) |laplacian x|^2, a spline in tension (membrane 1: the harmonic fill,
    whose kinks at the data points show; 0: the thin plate, the biharmonic fill, which overshoots near edges; the
    default 0.5 is between them at the scale of a pixel and harmonic above it). For holes a fill across them, for
    missing pixels an interpolation, for super-resolution a smooth upsampling. Any measurement, no model.

    A coarse-to-fine start (a Gaussian blur of decreasing width alternated with putting the measured part back:
    projections onto convex sets) is refined by conjugate gradients on the energy in the unmeasured subspace
    for at most `iterations` steps, or until the residual falls to `tolerance` of where it began, per image."""
    import torch.nn.functional as F

    c = y.shape[1]
    for scale in scales:
        radius = min(3 * scale, (min(y.shape[-2:]) - 1) // 2)
        if radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=y.dtype, device=y.device)
        kernel = torch.exp(-0.5 * (t / scale) ** 2)
        kernel = kernel / kernel.sum()
        across = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous()  # separable: a row, then a column
        down = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous()
        for _ in range(rounds):
            blurred = F.pad(y, (radius, radius, radius, radius), mode="reflect")
            blurred = F.conv2d(F.conv2d(blurred, across, groups=c), down, groups=c)
            y = blurred - project(blurred) + back
    return spline_refine(y, project, back, membrane, iterations, tolerance)


def dirichlet(u):
    """G^T G u for G the forward differences inside the image: the gradient of 0.5 |grad u|^2 (the negative of
    the Laplacian with Neumann borders)."""
    out = torch.zeros_like(u)
    dx = u[..., :, 1:] - u[..., :, :-1]
    dy = u[..., 1:, :] - u[..., :-1, :]
    out[..., :, :-1] -= dx
    out[..., :, 1:] += dx
    out[..., :-1, :] -= dy
    out[..., 1:, :] += dy
    return out


def spline_energy(u, membrane):
    """The gradient of 0.5 (membrane |grad u|^2 + (1 - membrane) |laplacian u|^2): a symmetric operator A u."""
    g = dirichlet(u)
    return g if membrane == 1 else membrane * g + (1 - membrane) * dirichlet(g)


def spline_refine(y, project, back, membrane, iterations, tolerance):
    """Conjugate gradients from y towards the least-energy image (`spline_energy`) with the same measured part:
    (I - P) A (I - P) v = -(I - P) A M^T m, the result M^T m + (I - P) v."""
    free = lambda v: v - project(v)  # noqa: E731
    dot = lambda a, b: (a * b).flatten(1).sum(dim=1).view(-1, 1, 1, 1)  # noqa: E731 (per image)
    v = free(y)
    r = -free(spline_energy(v + back, membrane))
    p = r.clone()
    rs = dot(r, r)
    stop = rs * tolerance ** 2
    for _ in range(int(iterations)):
        if bool((rs <= stop).all()):
            break
        ap = free(spline_energy(p, membrane))
        alpha = torch.where(rs > stop, rs / dot(p, ap).clamp_min(1e-30), torch.zeros_like(rs))
        v = v + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return free(v) + back


def sample(model=None, shape=(3, 64, 64), n=1, seed=0, progress=True, device="cpu", **params) -> Result:
    """Draw n images of shape (C, H, W) (or (H, W): the model's channels) from the denoiser's prior."""
    model = load_prior(model, device)  # loaded once: restore() below takes the Denoiser as it is
    _, _, channels = as_denoiser(model, device)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (channels, *shape)
    if len(shape) != 3 or min(shape) < 1 or int(n) < 1:
        raise BfcnnError(f"sample needs a shape (C, H, W) or (H, W) and n >= 1, got {shape} and n={n}")
    merged = {**SAMPLE_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    return restore(model, None, (int(n), *shape), seed=seed,
                   progress=progress, device=device, defaults=merged)


def quality(image, clean) -> dict:
    """Mean PSNR (dB) and SSIM of images in [0, 1] against the clean ones (the registered psnr / ssim)."""
    from .plugins.metrics import psnr, ssim

    prediction = image.clamp(0, 1)
    return {"psnr": round(float(psnr()(prediction, clean).mean()), 3),
            "ssim": round(float(ssim()(prediction, clean).mean()), 4)}


# ----------------------------------------------------------------------------------------------- CLI

def parse_task(text):
    """`NAME`, `NAME:key=value,key=value` or a YAML / JSON mapping -> a measurement spec {"type": ..., ...}."""
    import yaml

    text = str(text).strip()
    if text.startswith("{"):
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise BfcnnError(f"--task {text!r}: not a valid mapping: {error}") from None
        if not isinstance(spec, dict) or "type" not in spec:
            raise BfcnnError(f"--task {text!r}: a mapping needs a 'type' key, e.g. {{type: inpaint}}")
        return spec
    name, _, rest = text.partition(":")
    spec = {"type": name}
    import re

    for item in filter(None, (part.strip() for part in re.split(r",(?![^\[]*\])", rest))):  # not inside [...]
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BfcnnError(f"--task {text!r}: parameters are key=value, separated by commas "
                             "(e.g. block_average:factor=4)")
        try:
            spec[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            spec[key.strip()] = value
    return spec


def hwc(x) -> "np.ndarray":
    return x[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def strip(frames, gap=2):
    """Frames (1 x C x H x W tensors) side by side with white gaps: H x (k W + ...) x C numpy."""
    import numpy as np

    images = [hwc(frame) for frame in frames]
    white = np.ones((images[0].shape[0], gap, images[0].shape[2]), dtype=images[0].dtype)
    parts = []
    for image in images:
        parts += [image, white]
    return np.concatenate(parts[:-1], axis=1)


def write_outputs(output_dir, stem, result, measured_image=None):
    """<stem>.png (the result), <stem>_measured.png, <stem>_trajectory.png; returns the paths written."""
    from .images import write_image

    written = {"result": output_dir / f"{stem}.png"}
    write_image(written["result"], hwc(result.image))
    if measured_image is not None:
        written["measured"] = output_dir / f"{stem}_measured.png"
        write_image(written["measured"], hwc(measured_image))
    if result.trajectory:
        written["trajectory"] = output_dir / f"{stem}_trajectory.png"
        write_image(written["trajectory"], strip(result.trajectory))
    return {key: str(path) for key, path in written.items()}


def add_algorithm_arguments(parser):
    parser.add_argument("--model", default=DEFAULT_PRIOR, help="a shipped model's name, a .safetensors file or a "
                                                                 f"run folder (default: the shipped {DEFAULT_PRIOR})")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (and of random measurements)")
    parser.add_argument("--sigma-0", type=float, default=None, help="starting noise level, 0..1 scale")
    parser.add_argument("--sigma-L", dest="sigma_L", type=float, default=None, help="final noise level, 0..1 scale")
    parser.add_argument("--h0", type=float, default=None, help="first step size in (0, 1]")
    parser.add_argument("--beta", type=float, default=None, help="injected noise in (0, 1]: 1 none, smaller more")
    parser.add_argument("--max-iterations", type=int, default=None)
    parser.add_argument("--average", type=int, default=None,
                        help="restore: the mean of this many draws (higher PSNR, that many times the work)")
    parser.add_argument("--start", choices=STARTS, default=None,
                        help="restore: smooth (the data's smoothest fill plus noise of sigma_0; the default) or "
                             "noise (the paper's start from grey: pair it with --sigma-0 1 --beta 0.01)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def algorithm_params(args) -> dict:
    return {"sigma_0": args.sigma_0, "sigma_L": args.sigma_L, "h0": args.h0, "beta": args.beta,
            "max_iterations": args.max_iterations, "average": args.average, "start": args.start}


def add_arguments(parser):
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="clean images to measure and restore (or, with "
                                                                   "--measured, measured ones)")
    parser.add_argument("--task", required=True, metavar="SPEC",
                        help="a measurement: NAME, NAME:key=value,... or a YAML mapping, e.g. inpaint, "
                             "'random_pixels:fraction=0.1', 'block_average:factor=4', 'blur:sigma=2', "
                             "'inpaint:mask=holes.png' (bfcnn list measurement)")
    parser.add_argument("--measured", action="store_true",
                        help="the images are already measured (a masked, small or blurred image), not clean")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the results and report.json")
    add_algorithm_arguments(parser)


def command(args) -> int:
    import json

    import numpy as np

    from .config import build
    from .denoise import load_denoiser
    from .errors import output_folder
    from .images import read_pixels, to_float

    from .devices import resolve_device

    make = build("measurement", parse_task(args.task))
    device = resolve_device(args.device)
    params = algorithm_params(args)
    check_params(**{**DEFAULTS, **{k: v for k, v in params.items() if v is not None}})
    jobs = []  # every image read and measured before the first step: bad input stops the command at once
    for name in args.images:
        try:
            pixels = read_pixels(name, None)
        except BfcnnError as error:
            raise BfcnnError(f"{name}: {error}") from None
        pixels = pixels[..., :-1] if pixels.shape[2] in (2, 4) else pixels  # alpha is not restored
        image = torch.from_numpy(np.ascontiguousarray(to_float(pixels))).permute(2, 0, 1)[None].to(device)
        if args.measured:
            measurement = make(make.image_shape(tuple(image.shape[1:])) if hasattr(make, "image_shape")
                               else tuple(image.shape[1:]), seed=args.seed, device=device)
            try:
                measured = measurement.from_degraded(image)
            except BfcnnError as error:
                raise BfcnnError(f"{name}: {error}") from None
            clean, shown = None, image
        else:
            try:
                measurement = make(tuple(image.shape[1:]), seed=args.seed, device=device)
            except BfcnnError as error:
                raise BfcnnError(f"{name}: {error}") from None
            measured, clean, shown = measurement.measure(image), image, measurement.degrade(image)
        jobs.append((name, measurement, measured, clean, shown))
    model = load_denoiser(args.model, device=device)
    output_dir = output_folder(args.output_dir)
    report = {"task": parse_task(args.task), "model": model.source, "images": {}}
    from pathlib import Path

    stems = {}
    for name, measurement, measured, clean, shown in jobs:
        stem = Path(name).stem
        stems[stem] = stems.get(stem, 0) + 1
        stem = stem if stems[stem] == 1 else f"{stem}_{stems[stem]}"
        result = restore(model, measurement, measured, seed=args.seed, progress=not args.quiet, clean=clean,
                         device=device, **params)
        entry = {k: v for k, v in result.report.items() if k != "sigmas"}
        if clean is not None:
            entry["measured_least_norm"] = quality(measurement.adjoint(measured), clean)
        entry["files"] = write_outputs(output_dir, stem, result, shown)
        report["images"][name] = entry
        scores = f", PSNR {entry['psnr']:.2f} dB, SSIM {entry['ssim']:.3f}" if clean is not None else ""
        if "start_psnr" in entry:
            scores += f" (the smooth start alone: {entry['start_psnr']:.2f} dB)"
        print(f"{name}: {entry['iterations']} steps, sigma {entry['final_sigma'][0]:.2f}/255, "
              f"{entry['seconds']:.1f} s{scores}")
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    return 0


# ----------------------------------------------------------------------------------------------- config stage

RESTORE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tasks"],
    "properties": {
        "tasks": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/measurement"},
                  "description": "measurements to restore every test image from (bfcnn list measurement)"},
        "directories": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "clean test images (default: as evaluate's test sets)"},
        "sample_photos": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "validation_images": {"type": "boolean"},
        "max_images": {"type": "integer", "minimum": 1, "description": "first N images of each test set"},
        "crop": {"type": "integer", "minimum": 0, "description": "centre crop in pixels (default 128; 0: whole)"},
        "seed": {"type": "integer", "minimum": 0},
        "save_images": {"type": "integer", "minimum": 0, "description": "write results of the first N images"},
        "device": {"type": "string"},
        "output": {"type": "string", "description": "sub-folder of the run folder (default restoration)"},
        **ALGORITHM_SCHEMA,
    },
}


def task_label(spec) -> str:
    params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
    return f"{spec['type']}({params})" if params else spec["type"]


def check_stage_inputs(config, output_dir=None):
    """Before any stage runs: the restore section's folders exist and its tasks build (not hours later)."""
    from .config import build

    cfg = config.get("restore") or {}
    from .evaluate import check_directories
    check_directories(cfg)
    for spec in cfg.get("tasks", []):
        build("measurement", spec)


def restore_stage(config: dict, output_dir, model=None) -> dict:
    """The `restore` stage: every test image measured by every task and restored with the run's model; mean PSNR
    and SSIM per test set and task (beside the least-norm answer M^T y and, from the smooth start, the start
    alone) into output_dir/restoration/, with the algorithm's parameters each task used."""
    import json
    from pathlib import Path

    from .checkpoint import load_model
    from .config import build
    from .devices import resolve_device
    from .errors import output_folder
    from .evaluate import test_sets
    from .layers import model_channels

    cfg = config.get("restore") or {}
    output_dir = Path(output_dir)
    device = resolve_device(cfg.get("device") or config.get("device", "auto"))
    model = model if model is not None else load_model(output_dir, device=device)
    out = output_folder(output_dir / cfg.get("output", "restoration"))
    params = {k: cfg[k] for k in ALGORITHM_SCHEMA if k in cfg}
    crop, seed, save = cfg.get("crop", 128), cfg.get("seed", 0), cfg.get("save_images", 0)
    color_mode = "grayscale" if model_channels(model) == 1 else "rgb"
    tasks = [(task_label(spec), build("measurement", spec)) for spec in cfg["tasks"]]
    rows, used = [], {}
    for set_name, images in test_sets(cfg, color_mode, config.get("dataset")):
        for index, (image_name, load) in enumerate(images):
            array = load()
            if crop:
                h, w = array.shape[:2]
                top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
                array = array[top:top + crop, left:left + crop]
            clean = torch.from_numpy(array.transpose(2, 0, 1).copy())[None].to(device)
            for label, make in tasks:
                try:
                    measurement = make(tuple(clean.shape[1:]), seed=seed + index, device=device)
                except BfcnnError as error:
                    raise BfcnnError(f"restore: {set_name}/{image_name}: {error}") from None
                measured = measurement.measure(clean)
                result = restore(model, measurement, measured, seed=seed + index, progress=False, clean=clean,
                                 device=device, **params)
                least_norm = quality(measurement.adjoint(measured), clean)
                rows.append({"test_set": set_name, "image": image_name, "task": label,
                             "psnr": result.report["psnr"], "ssim": result.report["ssim"],
                             "least_norm_psnr": least_norm["psnr"], "start_psnr": result.report.get("start_psnr"),
                             "iterations": result.report["iterations"], "seconds": result.report["seconds"]})
                used[label] = {k: v for k, v in result.report["parameters"].items() if k != "seed"}  # per image
                log.info("restore: %s/%s %s: %.2f dB (least-norm %.2f dB), %d steps", set_name, image_name, label,
                         rows[-1]["psnr"], least_norm["psnr"], rows[-1]["iterations"])
                if index < save:
                    folder = output_folder(out / "images" / set_name / label)
                    write_outputs(folder, Path(image_name).name, result, measurement.degrade(clean))
    results = []
    for key in dict.fromkeys((r["test_set"], r["task"]) for r in rows):
        group = [r for r in rows if (r["test_set"], r["task"]) == key]
        mean = {k: round(sum(r[k] for r in group) / len(group), 4)
                for k in ("psnr", "ssim", "least_norm_psnr", "start_psnr", "iterations", "seconds")
                if all(r[k] is not None for r in group)}  # start_psnr: only from the smooth start
        results.append({"test_set": key[0], "task": key[1], "images": len(group), **mean})
    lines = ["| test set | task | images | PSNR | SSIM | least-norm PSNR | smooth start alone | steps | s / image |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['test_set']} | {r['task']} | {r['images']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
              f"{r['least_norm_psnr']:.2f} | {format(r['start_psnr'], '.2f') if 'start_psnr' in r else '-'} | "
              f"{r['iterations']:.0f} | {r['seconds']:.1f} |" for r in results]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "per_image": rows, "parameters": used},
                                                 indent=2))
    return {"results": results, "files": [str(out / "results.md"), str(out / "results.json")]}
