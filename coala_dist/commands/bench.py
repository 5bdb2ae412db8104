"""`coala bench [--quick] [--out=results/bench.json]`: throughput of this system on this machine, and its limit.

Measures the rollout (IPD paper config and a Clean Up config), the update (linear and associative scans), the
end-to-end in-process loop and the distributed launches, and the FLOP limit (see coala_dist/analysis/bench.py).
Writes the JSON to --out and prints the README table. `--quick` uses test-sized configs (for CI and smoke tests).
"""

from __future__ import annotations

from absl import flags

_OUT = flags.DEFINE_string("out", "results/bench.json", "Where the JSON goes.")
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
            raise SystemExit(f"coala bench: --launches entry {value!r} is invalid; valid entries: {valid}")
        launches.append((launch, int(actors)))
    return launches


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise SystemExit(f"coala bench: unexpected arguments {argv[1:]}")
    import json
    import os

    from coala_dist.analysis.bench import bench_configs, markdown_table, run_bench
    from coala_dist.analysis.runs import json_safe
    from coala_dist.builder import build

    quick = _QUICK.value
    launches = _parse_launches(_LAUNCHES.value, quick)
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
    if os.path.dirname(_OUT.value):
        os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=1)
    print(markdown_table(result))
    print(f"wrote {_OUT.value} ({result['wall_time_s']:.0f} s)")
