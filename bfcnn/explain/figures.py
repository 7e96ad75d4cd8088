"""The figures of an explanation (matplotlib's object API on an Agg canvas: no pyplot, no global backend)."""

from __future__ import annotations


import numpy as np


def show(ax, image, title):
    image = np.clip(image, 0, 1)
    if image.shape[2] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_figures(output_dir, noisy, denoised, gray_filters, filters, spread, weight_sum, report) -> list[str]:
    import matplotlib
    from matplotlib.figure import Figure  # a figure of its own, drawn by Agg when saved: no pyplot state

    files = []
    k = len(filters)
    if k:
        fig = Figure(figsize=(7.5, 2.4 * k))
        axes = fig.subplots(k, 3, squeeze=False)
        for row, stats in enumerate(filters):
            px, py = stats["x"], stats["y"]
            r = max(stats["radius_99"], 6)
            y0, y1, x0, x1 = max(py - r, 0), py + r + 1, max(px - r, 0), px + r + 1
            show(axes[row, 0], noisy[y0:y1, x0:x1], f"noisy ({px}, {py}) {stats['kind']}")
            show(axes[row, 1], denoised[y0:y1, x0:x1], "denoised")
            weights = gray_filters[row, y0:y1, x0:x1]
            limit = float(np.abs(weights).max()) or 1.0
            image = axes[row, 2].imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            for ax in axes[row]:
                ax.plot([px - x0], [py - y0], marker="+", color="lime", markersize=8)
            spread_text = f"{stats['spread']:.2f}" if stats["spread"] is not None else "n/a"
            axes[row, 2].set_title(f"filter: sum {stats['weight_sum']:.2f}, spread {spread_text} px", fontsize=8)
            axes[row, 2].set_xticks([])
            axes[row, 2].set_yticks([])
            fig.colorbar(image, ax=axes[row, 2], fraction=0.046, pad=0.04)
        fig.suptitle(f"adaptive filters at sigma {report['sigma']:g}", fontsize=10)
        fig.tight_layout()
        fig.savefig(output_dir / "filters.png", dpi=110)
        files.append("filters.png")

    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 4)
    show(axes[0], noisy, f"noisy (sigma {report['sigma']:g})")
    bias = report["net_bias"]
    show(axes[1], denoised, f"denoised (net bias {'undefined' if bias is None else f'{bias:.1e}'})")
    for stats in filters:
        axes[1].plot([stats["x"]], [stats["y"]], marker="+", color="lime", markersize=8)
    finite = spread[np.isfinite(spread)]
    vmax = float(np.quantile(finite, 0.99)) if finite.size else 1.0
    colours = matplotlib.colormaps["magma"].with_extremes(bad="#7fd3ff")
    image = axes[2].imshow(spread, cmap=colours, vmin=0, vmax=vmax or 1.0, interpolation="nearest")
    undefined = report["spread_map"]["undefined_fraction"]
    axes[2].set_title(f"filter spread (px); light blue: undefined ({100 * undefined:.0f}%)", fontsize=8)
    fig.colorbar(image, ax=axes[2], fraction=0.046, pad=0.04)
    image = axes[3].imshow(weight_sum, cmap="viridis", interpolation="nearest")
    axes[3].set_title("sum of filter weights", fontsize=8)
    fig.colorbar(image, ax=axes[3], fraction=0.046, pad=0.04)
    for ax in axes[2:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(output_dir / "spread.png", dpi=110)
    files.append("spread.png")

    levels = report["dimensionality"]["levels"]
    if levels:
        fig = Figure(figsize=(5, 3.6))
        ax = fig.subplots()
        sig = [lv["sigma"] for lv in levels]
        ax.errorbar(sig, [lv["frobenius"] for lv in levels], yerr=[2 * lv["frobenius_stderr"] for lv in levels],
                    marker="o", capsize=3, label=f"||J||_F^2 ({report['dimensionality']['method']})")
        ax.plot(sig, [lv["trace"] for lv in levels], marker="x", linestyle="--", label="trace J")
        ax.set_xlabel("noise sigma (0..255)")
        ax.set_ylabel("effective dimensionality")
        ax.set_title(f"of {report['dimensionality']['dimensions']} dimensions", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(output_dir / "dimensionality.png", dpi=110)
        files.append("dimensionality.png")
    return files
