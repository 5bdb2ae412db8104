"""`coala train --config=configs/ipd_pure_shaping.py --workdir=DIR`: train in this process."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/ipd_pure_shaping.py", "Experiment config file (ml_collections).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics (and, later, checkpoints).")


def main(argv: list[str]) -> None:
    del argv
    from coala_dist.config import validate
    from coala_dist.train import train

    try:
        validate(_CONFIG.value)
    except ValueError as error:  # a bad config is one line, not a traceback
        raise SystemExit(f"coala train: {error}") from None
    train(_CONFIG.value, _WORKDIR.value)
