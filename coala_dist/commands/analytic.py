"""`coala analytic FIGURE... [--seeds=N] [--out=DIR]`: exact analytic IPD experiments (paper §4, Figs. 3, 4, 8–10).

FIGURE is one of fig3a (with Fig. 8), fig3b, fig3c, fig9, fig10, fig4, or `all`. Each writes `<out>/<figure>.png`
and `<out>/<figure>.json` and rebuilds `<out>/README.md`. Settings come from configs/analytic_ipd.py and can be
overridden, e.g. `coala analytic fig4 --config.fig4.num_steps=3000`.

--out defaults to workdirs/analytic (git-ignored), so a trial run never replaces the published figures; those are
rewritten only when named: `coala analytic all --out=results/analytic` (each JSON records its command, --out
included).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

from absl import flags
from ml_collections import config_flags

from coala_dist.commands import UsageError
from coala_dist.configs import CONFIG_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "analytic_ipd.py"),
    "Analytic IPD config: a file, or a shipped config's name.",
    lock_config=True,
)
_SEEDS = flags.DEFINE_integer("seeds", None, "Number of seeds (default: the figure's num_seeds in the config).")
_OUT = flags.DEFINE_string(
    "out",
    "workdirs/analytic",
    "Output directory for PNGs, JSON summaries and README.md; the published ones: --out=results/analytic.",
)


def _command_line(figure: str) -> str:
    """The command that reproduces `figure`, with the seed count, output folder and config overrides used."""
    overrides = [arg for arg in sys.argv[1:] if arg.startswith("--config.")]
    seeds = [f"--seeds={_SEEDS.value}"] if _SEEDS.value else []
    return " ".join(["coala analytic", figure, *seeds, f"--out={_OUT.value}", *overrides])


def _settings(config, figure: str) -> dict:
    """The config blocks that define `figure` (Fig. 4 is self-contained; the others share game and shaping)."""
    blocks = ["seed", figure] if figure == "fig4" else ["seed", "game", "shaping", figure]
    settings = {}
    for block in blocks:
        value = config[block]
        settings[block] = value.to_dict() if hasattr(value, "to_dict") else value
    return settings


def main(argv: list[str]) -> None:
    from coala_dist.analysis import analytic_plots, analytic_report
    from coala_dist.analytic import figures

    requested = argv[1:]
    valid = (*figures.FIGURES, "all")
    if not requested or any(name not in valid for name in requested):
        raise UsageError(f"give one or more of {', '.join(valid)}; got {requested or 'nothing'}")
    if _SEEDS.value is not None and _SEEDS.value < 2:
        raise UsageError(f"--seeds must be >= 2 (quantiles need several seeds), got {_SEEDS.value}")
    chosen = figures.FIGURES if "all" in requested else tuple(dict.fromkeys(requested))
    out_dir = pathlib.Path(_OUT.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _CONFIG.value
    for figure in chosen:
        start = time.perf_counter()
        result = figures.RUNNERS[figure](config, _SEEDS.value)
        wall_time = time.perf_counter() - start
        analytic_plots.PLOTTERS[figure](result, out_dir / f"{figure}.png")
        analytic_report.write_result(result, out_dir, _command_line(figure), wall_time, _settings(config, figure))
        print(f"{figure}: {wall_time:.0f} s")
        for check in result.checks:
            print(f"  [{'reproduced' if check['passed'] else 'NOT reproduced'}] {check['claim']}: {check['value']}")
    print(f"wrote {analytic_report.write_readme(out_dir)}")
