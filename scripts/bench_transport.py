"""Replay transports side by side: episodes/s from a writer process to the learner's process, and the parameter
publish-to-poll latency, for episodes and parameters of a real config.

    python scripts/bench_transport.py --config=configs/ipd_pure_shaping.py --units=8 [--out=FILE.json]

Candidates (each where installed): `queues` (in-process, writer thread), `ray` (our Ray queue-actor backend, writer
in a Ray actor process), `reverb` (our Reverb backend, writer in a spawned process) and, for comparison only,
`id-echo` (a Rust FIFO over TCP; writer in a spawned process; it has one batch-size FIFO per server and no
latest-value table, so parameters are not measured for it). The first three run the project's own replay code
(`coala_dist.distributed.replay`); id-echo runs its own client and server. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coala_dist import profiles  # noqa: E402

EPISODE_TABLE = "episodes"


def _specs(config_path: str):
    """(episode LeafSpecs, params LeafSpecs, episodes per work unit) of a config, from shapes only."""
    from coala_dist.builder import build
    from coala_dist.config import episodes_per_work_unit
    from coala_dist.configs import load
    from coala_dist.distributed.codec import episode_codec, params_codec

    config = load(config_path)
    components = build(config)
    unit = episodes_per_work_unit(config)
    return episode_codec(components, unit).specs, params_codec(components).specs, unit


def _item(specs, value: int) -> list[np.ndarray]:
    return [np.full(spec.shape, value % 100, spec.dtype) for spec in specs]


def _nbytes(specs) -> int:
    return sum(int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize for spec in specs)


# ---------------------------------------------------------------------------------------------------------------------
# The project's backends: one writer (thread or process) writes `units` work units; this process takes them.
def _write_units(address: str, specs, unit: int, units: int) -> None:
    from coala_dist.distributed.replay import connect

    writer = connect(address, 30.0).writer()
    for u in range(units):
        for e in range(unit):
            writer.add(EPISODE_TABLE, _item(specs, u * unit + e))
        assert writer.flush(30.0, lambda: False)
    writer.close()


def _take_all(client, warmup: int, total: int) -> float:
    """Seconds to take `total` items (polling as the learner does) after `warmup` untimed ones (the writer's
    process start and connection)."""
    taken, start = 0, None
    while taken < warmup + total:
        if start is None and taken >= warmup:
            start = time.perf_counter()
        size = client.sizes().get(EPISODE_TABLE, 0)
        if size:
            taken += len(client.take(EPISODE_TABLE, min(size, warmup + total - taken)))
        else:
            time.sleep(0.001)
    return time.perf_counter() - start


def _params_latency(client, address: str, params_specs, repeats: int = 20) -> float:
    """Median seconds from a parameter write (params then version, as the learner publishes) to a poll seeing it."""
    from coala_dist.distributed.replay import connect

    writer = connect(address, 30.0).writer()
    times = []
    for version in range(repeats):
        start = time.perf_counter()
        writer.add("params", _item(params_specs, version))
        writer.flush(30.0, lambda: False)
        writer.add("params_version", [np.asarray(version, np.int32)])
        writer.flush(30.0, lambda: False)
        while True:
            seen = client.latest("params_version")
            if seen is not None and int(seen[0]) == version:
                client.latest("params")
                break
        times.append(time.perf_counter() - start)
    writer.close()
    return float(np.median(times))


def _project_tables(specs, params_specs, unit: int):
    from coala_dist.distributed.codec import LeafSpec
    from coala_dist.distributed.replay import TableSpec

    return [
        TableSpec(EPISODE_TABLE, tuple(specs), queue_capacity=2 * unit),
        TableSpec("params", tuple(params_specs)),
        TableSpec("params_version", (LeafSpec((), "int32"),)),
    ]


def bench_project_backend(backend: str, specs, params_specs, unit: int, units: int) -> dict:
    import threading

    from coala_dist.distributed.replay import connect, start_server

    if backend == "ray":
        import ray

        ray.init(
            address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=512 * 1024**2
        )
    server = start_server(backend, _project_tables(specs, params_specs, unit))
    try:
        client = connect(server.address, 30.0)
        arguments = (server.address, specs, unit, units + 1)  # one warm-up unit, untimed
        if backend == "queues":
            writer = threading.Thread(target=_write_units, args=arguments)
            writer.start()
            seconds = _take_all(client, unit, unit * units)
            writer.join()
        elif backend == "ray":
            import ray

            ref = ray.remote(num_cpus=1)(_write_units).remote(*arguments)
            seconds = _take_all(client, unit, unit * units)
            ray.get(ref)
        else:  # reverb: a writer process
            process = multiprocessing.get_context("spawn").Process(target=_write_units, args=arguments)
            process.start()
            seconds = _take_all(client, unit, unit * units)
            process.join()
        latency = _params_latency(client, server.address, params_specs)
    finally:
        server.stop()
        if backend == "ray":
            import ray

            ray.shutdown()
    return _result(seconds, unit * units, _nbytes(specs), latency)


# ---------------------------------------------------------------------------------------------------------------------
# id-echo, for comparison: its own server (in this process) and TCP client (a spawned process).
def _echo_write(port: int, specs, unit: int, units: int) -> None:
    from echo import TcpClient

    client = TcpClient("127.0.0.1", port, _item(specs, 0))
    for u in range(units):
        for e in range(unit):
            client.send(_item(specs, u * unit + e))
    client.wait()
    client.close()


def bench_echo(specs, unit: int, units: int) -> dict:
    from echo import Server, TcpTransport

    server = Server(_item(specs, 0), batch_size=unit, transport=TcpTransport(port=0))
    server.start()
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_echo_write, args=(server.port, specs, unit, units + 1))
    process.start()
    server.sample()  # the warm-up unit, untimed
    start = time.perf_counter()
    for _ in range(units):
        sample = server.sample()
        [np.copy(leaf) for leaf in sample.batch]  # the learner keeps its batch past the next sample
    seconds = time.perf_counter() - start
    process.join()
    server.close()
    return _result(seconds, unit * units, _nbytes(specs), None)


def _result(seconds: float, episodes: int, episode_bytes: int, latency: float | None) -> dict:
    return {
        "episodes": episodes,
        "seconds": round(seconds, 4),
        "episodes_per_s": round(episodes / seconds, 1),
        "MB_per_s": round(episodes * episode_bytes / seconds / 1e6, 1),
        "params_publish_to_poll_ms": None if latency is None else round(1000 * latency, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ipd_pure_shaping.py")
    parser.add_argument("--units", type=int, default=8, help="work units written per measurement")
    parser.add_argument("--backends", default="queues,ray,reverb,id-echo")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    specs, params_specs, unit = _specs(args.config)
    results: dict = {
        "stack": profiles.stack(),
        "config": args.config,
        "episode_bytes": _nbytes(specs),
        "params_bytes": _nbytes(params_specs),
        "episodes_per_work_unit": unit,
        "load_average_1min": os.getloadavg()[0],
        "backends": {},
    }
    for backend in args.backends.split(","):
        installed = {"reverb": "reverb", "id-echo": "echo", "ray": "ray"}.get(backend)
        if installed and importlib.util.find_spec(installed) is None:
            results["backends"][backend] = "not installed in this profile"
            continue
        if backend == "id-echo":
            results["backends"][backend] = bench_echo(specs, unit, args.units)
        else:
            results["backends"][backend] = bench_project_backend(backend, specs, params_specs, unit, args.units)
        print(backend, results["backends"][backend], file=sys.stderr, flush=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
