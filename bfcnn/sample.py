"""draw images from the prior implicit in a blind denoiser (`bfcnn sample --size H W -n K -o OUT`)

The algorithm is bfcnn.restore's without a measurement: coarse-to-fine stochastic gradient ascent from noise.
"""

from __future__ import annotations

import json

from .errors import BfcnnError, output_folder
from .restore import add_algorithm_arguments, algorithm_params, check_params, SAMPLE_DEFAULTS, sample, write_outputs


def add_arguments(parser):
    parser.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"), help="height and width")
    parser.add_argument("-n", "--count", type=int, default=1, help="how many samples (default 1)")
    parser.add_argument("--channels", type=int, default=None, help="default: the model's")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for sample_NNN.png and report.json")
    add_algorithm_arguments(parser)


def command(args) -> int:
    from .denoise import load_denoiser

    height, width = args.size
    if height < 1 or width < 1 or args.count < 1:
        raise BfcnnError(f"--size needs positive H and W and -n at least 1, got {height} x {width}, -n {args.count}")
    params = algorithm_params(args)
    check_params(**{**SAMPLE_DEFAULTS, **{k: v for k, v in params.items() if v is not None}})
    model = load_denoiser(args.model, device=args.device)
    output_dir = output_folder(args.output_dir)
    shape = (args.channels or model.channels, height, width)
    report = {"model": model.source, "shape": list(shape), "samples": {}}
    for index in range(args.count):  # one at a time: each has its own seed, so sample k is the same for any -n
        result = sample(model, shape, seed=args.seed + index, progress=not args.quiet, device=args.device, **params)
        entry = {k: v for k, v in result.report.items() if k != "sigmas"}
        entry["files"] = write_outputs(output_dir, f"sample_{index:03d}", result)
        report["samples"][index] = entry
        print(f"sample {index}: {entry['iterations']} steps, sigma {entry['final_sigma'][0]:.2f}/255, "
              f"{entry['seconds']:.1f} s")
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    return 0
