"""`coala snr --config=CONFIG | --workdir=DIR`: the policy gradient's signal-to-noise ratio, before spending compute.

Rolls out --meta_batches independent meta-batches at fixed parameters (the config's initial ones, or the run's newest
checkpoint with --workdir), computes each meta agent's policy gradient under every estimator, split into the part
from the action's own inner episode and the part from later inner episodes (the shaping signal), and prints per
estimator and part: the mean pairwise cosine between meta-batches, the SNR of one meta-batch and the meta-batch size
at which the SNR reaches --target_snr. Writes the JSON to --out (default WORKDIR/snr.json, or
workdirs/snr/<config>.json) and a PNG of the same name. See coala_dist/analysis/snr.py for the definitions.
"""

from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

from coala_dist.commands import UsageError, check_writable_dir
from coala_dist.configs import CONFIG_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "ipd_pure_shaping.py"),
    "Experiment config at its initial parameters: a file, or a shipped config's name (default ipd_pure_shaping).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "A run's work directory: its config at its newest checkpoint.")
_META_BATCHES = flags.DEFINE_integer("meta_batches", 6, "K independent meta-batches (>= 2; more: tighter estimates).")
_ESTIMATORS = flags.DEFINE_list(
    "estimators", None, "Estimators to compare (default: coala,mfos,batch_unaware; mfos_mean is the other M-FOS)."
)
_TARGET_SNR = flags.DEFINE_float("target_snr", 1.0, "The SNR the meta-batch size is sized for (1: cosine ≈ 0.5).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the diagnostic's meta-batches.")
_OUT = flags.DEFINE_string("out", None, "JSON output (default WORKDIR/snr.json, or workdirs/snr/<config>.json).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}")
    from coala_dist.analysis import snr
    from coala_dist.rl import estimators

    settings = snr.SnrSettings(
        num_batches=_META_BATCHES.value,
        estimators=tuple(_ESTIMATORS.value or estimators.PAPER_ESTIMATORS),
        target_snr=_TARGET_SNR.value,
        seed=_SEED.value,
    )
    try:
        settings.validate()
    except ValueError as error:
        raise UsageError(str(error)) from None
    if _WORKDIR.value and flags.FLAGS["config"].present:
        raise UsageError("give --config or --workdir (which holds its run's config), not both")

    from coala_dist import keys
    from coala_dist.analysis.runs import json_safe
    from coala_dist.builder import build
    from coala_dist.checkpoint import IncompatibleCheckpointError

    if _WORKDIR.value:
        from coala_dist.analysis.runs import restore_workdir

        out = _OUT.value or os.path.join(_WORKDIR.value, "snr.json")
        try:
            components, state = restore_workdir(_WORKDIR.value)  # a workdir without checkpoints stops here
            check_writable_dir(os.path.dirname(out) or ".", "--out")
        except (FileNotFoundError, IncompatibleCheckpointError, ValueError) as error:
            raise SystemExit(f"coala snr: {error}") from None
    else:
        config = _CONFIG.value
        name = os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0]
        out = _OUT.value or os.path.join("workdirs", "snr", f"{name}.json")
        try:
            components = build(config)
        except ValueError as error:
            raise UsageError(str(error)) from None
        try:
            check_writable_dir(os.path.dirname(out) or ".", "--out")
        except ValueError as error:
            raise SystemExit(f"coala snr: {error}") from None
        state = components.learner.init(keys.seed_key(config.seed))
    result = snr.measure(components, state, settings)
    result["source"] = (
        {"workdir": _WORKDIR.value}
        if _WORKDIR.value
        else {"config": config_flags.get_config_filename(flags.FLAGS["config"])}
    )
    print(snr.format_report(result))
    with open(out, "w") as f:
        json.dump(json_safe(result), f, indent=1)
    png = os.path.splitext(out)[0] + ".png"
    snr.plot(result, png, title=os.path.basename(os.path.splitext(out)[0]))
    print(f"wrote {out} and {png}")
