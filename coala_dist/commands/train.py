"""`coala train --config=FILE --workdir=DIR [--launch=inprocess|local|ray] [--num_actors=N] [--mode=sync|async]
[--replay=auto|reverb|ray|queues]`.

Launch types (coala_dist/distributed):
  inprocess  one process: actor threads, the learner, an embedded replay server (the default);
             with --num_actors=0 the plain loop alternates rollout and update without a replay;
  local      Ray on this machine, one process per node (replay, learner, actors);
  ray        an existing Ray cluster (--ray_address): learner on accelerator resources, actors on CPU nodes.
Everything is validated before any node starts; a bad value is one line naming it.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from coala_dist.configs import CONFIG_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "ipd_pure_shaping.py"),
    "Experiment config: a file, or a shipped config's name (e.g. ipd_tiny; default ipd_pure_shaping).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.csv (re-using it resumes).")
_LAUNCH = flags.DEFINE_enum(
    "launch",
    "inprocess",
    ["inprocess", "local", "ray"],
    "inprocess: threads in this process; local: Ray processes on this machine; ray: an existing Ray cluster.",
)
_NUM_ACTORS = flags.DEFINE_integer(
    "num_actors", None, "Actor threads/processes (default config.distributed.num_actors); 0: plain in-process loop."
)
_MODE = flags.DEFINE_enum(
    "mode",
    None,
    ["sync", "async"],
    "sync: reproducible, the learner waits for its version's episodes; async: "
    "actors never wait, episodes older than config.distributed.max_policy_lag are dropped (default from config).",
)
_REPLAY = flags.DEFINE_string(
    "replay",
    None,
    "Replay transport: auto (reverb where installed, else queues for inprocess, ray for local/ray) | reverb | ray "
    "| queues (default config.distributed.replay).",
)
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "Address of the Ray cluster for --launch=ray (e.g. ray://head:10001, auto)."
)


def _check_flags(num_actors: int) -> None:
    if num_actors < 0:
        raise ValueError(f"--num_actors={num_actors} is invalid: must be an integer >= 0")
    launch, address = _LAUNCH.value, _RAY_ADDRESS.value or os.environ.get("RAY_ADDRESS")
    if launch == "ray" and not address:
        raise ValueError("--launch=ray needs --ray_address (or $RAY_ADDRESS): the cluster to run on")
    if launch != "ray" and _RAY_ADDRESS.value:
        raise ValueError(f"--ray_address={_RAY_ADDRESS.value} only applies to --launch=ray, not --launch={launch}")
    if launch != "inprocess" and num_actors == 0:
        raise ValueError(f"--num_actors=0 is invalid with --launch={launch}: the program needs at least one actor")


def main(argv: list[str]) -> None:
    del argv
    from coala_dist.config import validate

    config = _CONFIG.value
    num_actors = config.distributed.num_actors if _NUM_ACTORS.value is None else _NUM_ACTORS.value
    try:  # a bad option is one line, not a traceback
        _check_flags(num_actors)
        validate(config)
        program = None
        if not (_LAUNCH.value == "inprocess" and num_actors == 0):
            from coala_dist.distributed.program import make_program

            program = make_program(
                config,
                launch=_LAUNCH.value,
                num_actors=num_actors,
                mode=_MODE.value,
                workdir=_WORKDIR.value,
                replay=_REPLAY.value,
            )
        elif _MODE.value == "async":
            raise ValueError("--mode=async needs actors (--num_actors >= 1)")
        elif _REPLAY.value is not None:
            raise ValueError(f"--replay={_REPLAY.value} needs actors (--num_actors >= 1): the plain loop has no replay")
    except ValueError as error:
        raise SystemExit(f"coala train: {error}") from None

    if program is None:
        from coala_dist.train import train

        train(config, _WORKDIR.value)
        return
    from coala_dist.distributed.launch import launch

    launch(program, ray_address=_RAY_ADDRESS.value or os.environ.get("RAY_ADDRESS"))
