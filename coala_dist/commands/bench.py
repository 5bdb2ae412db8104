"""`coala bench [--quick] [--out=FILE]`: throughput of this system on this machine, and its limit.

Measures the rollout (IPD paper config and a Clean Up config), the update (linear and associative scans), the
end-to-end in-process loop and the distributed launches, and the FLOP limit (see coala_dist/analysis/bench.py).
Writes the JSON to --out, by default workdirs/bench/bench.json (`--quick`: workdirs/bench/bench_quick.json), and
prints the README table and the file's path. The published JSON is rewritten only when named:
`coala bench --out=results/bench.json`. `--quick` uses test-sized configs (for CI and smoke tests); with an --out
inside results/ it is refused.
"""

from __future__ import annotations

from absl import flags

from coala_dist.commands import UsageError

_OUT = flags.DEFINE_string(
    "out",
    None,
    "Where the JSON goes; default workdirs/bench/bench.json (--quick: workdirs/bench/bench_quick.json). "
    "The published results only when named: --out=results/bench.json (refused with --quick).",
)
_QUICK = flags.DEFINE_bool("quick", False, "Test-sized configs and few repeats: checks the command, not the machine.")
_ITERATIONS = flags.DEFINE_integer("iterations", None, "Timed iterations per measurement (default 3; quick 2).")
_LAUNCHES = flags.DEFINE_list(
    "launches",
    None,
    "Distributed launches to time, as LAUNCH:ACTORS (default inprocess:1,inprocess:2,local:1,local:2; quick: none; "
    "'none' for none).",
)


def _parse_launches(values: list[str] | None, quick: bool) -> list[tuple[str, int]]:
    from coala_dist.analysis.bench import LAUNCHES

    if values is None:
        return [] if quick else list(LAUNCHES)
    if values == ["none"]:
        return []
    launches = []
    for value in values:
        launch, _, actors = value.partition(":")
        if (launch, int(actors or 0)) not in LAUNCHES:
            valid = ", ".join(f"{name}:{n}" for name, n in LAUNCHES)
            raise UsageError(f"--launches entry {value!r} is invalid; valid entries: {valid}")
        launches.append((launch, int(actors)))
    return launches


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}")
    import os

    from coala_dist.analysis.bench import bench_configs, markdown_table, output_path, run_bench, write_json
    from coala_dist.analysis.runs import json_safe
    from coala_dist.builder import build

    quick = _QUICK.value
    launches = _parse_launches(_LAUNCHES.value, quick)
    try:
        out = output_path(_OUT.value, quick)
    except ValueError as error:
        raise SystemExit(f"coala bench: {error}") from None
    try:  # before the minutes of measuring: an unwritable folder fails now, in one line
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    except OSError as error:
        raise SystemExit(f"coala bench: cannot create the folder of --out={out} ({error.strerror})") from None
    iterations = _ITERATIONS.value or (2 if quick else 3)
    components = {name: build(config) for name, config in bench_configs(quick).items()}
    result = run_bench(
        components,
        timed_iterations=iterations,
        launches=launches,
        matmul_rows=4096 if quick else 65536,
        matmul_repeats=3 if quick else 10,
    )
    result = json_safe(result | {"quick": quick})
    write_json(result, out)
    print(markdown_table(result))
    print(f"wrote {out} ({result['wall_time_s']:.0f} s)")
