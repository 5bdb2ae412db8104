"""What `coala train` prints before its first iteration (what it compiles and, when measured before, for how long)
and after its last (where checkpoints, metrics.csv and TensorBoard events are)."""

from __future__ import annotations

import csv

from coala_dist import xla_flags
from coala_dist.commands import run_notes


def _write_metrics(workdir, rows: dict[int, float]) -> None:
    with open(workdir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["iteration", "time/iteration_s"])
        writer.writeheader()
        writer.writerows({"iteration": i, "time/iteration_s": s} for i, s in rows.items())


def test_a_config_never_run_here_gets_no_number_and_a_measured_one_its_time(tiny_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "jax"
    monkeypatch.setenv(xla_flags.COMPILATION_CACHE_ENV, str(cache))
    workdir = tmp_path / "run"
    workdir.mkdir()

    notes = run_notes.RunNotes(tiny_config, "inprocess", str(workdir), str(workdir), start_iteration=0)
    first = run_notes.compile_notice(notes.key, notes.cache_dir, notes.times)
    assert first.startswith("compiling the rollout and the update: the first time for this config")
    assert "no earlier timing" in first and str(cache) in first

    cache.mkdir(parents=True)
    (cache / "jit_update-abc-cache").write_text("a program this run compiled")
    (cache / "jit__threefry_seed-abc-cache").write_text("a helper that does not count")
    _write_metrics(workdir, {1: 41.6, 2: 0.5})
    notes.finish()  # the first iteration wrote a program into the cache: a compiled time
    again = run_notes.RunNotes(tiny_config, "inprocess", str(workdir), str(workdir), start_iteration=2)
    notice = run_notes.compile_notice(again.key, again.cache_dir, again.times)
    assert notice.startswith("loading the compiled rollout and update from the cache") and "took ≈ 42 s" in notice

    _write_metrics(workdir, {1: 41.6, 2: 0.5, 3: 3.2})
    (cache / "jit__threefry_seed-def-cache").write_text("a helper that crossed the cache's threshold this time")
    again.finish()  # no new rollout or update program in the cache: they were loaded
    third = run_notes.RunNotes(tiny_config, "inprocess", str(workdir), str(workdir), start_iteration=3)
    assert "≈ 3 s" in run_notes.compile_notice(third.key, third.cache_dir, third.times)
    assert "loading the compiled rollout and update from the cache" in run_notes.compile_notice(
        third.key, third.cache_dir, third.times
    )


def test_the_programs_key_ignores_the_run_length_but_not_the_shapes(tiny_config):
    longer = tiny_config.copy_and_resolve_references()
    longer.training_iterations += 100
    wider = tiny_config.copy_and_resolve_references()
    wider.batch_size *= 2
    key = run_notes.programs_key(tiny_config, "inprocess")
    assert run_notes.programs_key(longer, "inprocess") == key
    assert run_notes.programs_key(wider, "inprocess") != key
    assert run_notes.programs_key(tiny_config, "local") != key


def test_the_last_line_names_every_output(tmp_path, capsys, tiny_config, monkeypatch):
    monkeypatch.setenv(xla_flags.COMPILATION_CACHE_ENV, "off")
    _write_metrics(tmp_path, {1: 2.0})
    run_notes.RunNotes(tiny_config, "inprocess", str(tmp_path), str(tmp_path), start_iteration=0).finish()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"coala train: checkpoints: {tmp_path / 'checkpoints'}  metrics: {tmp_path / 'metrics.csv'}  "
        f"TensorBoard: tensorboard --logdir {tmp_path / 'tensorboard'}"
    ]
