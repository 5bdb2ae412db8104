"""JAX's persistent compilation cache: where it goes, how it is turned off, and that `coala` commands use it."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from coala_dist import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    jax_names = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
    for name in (xla_flags.COMPILATION_CACHE_ENV, *jax_names):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_default_cache_is_in_the_user_cache_dir(clean_env):
    assert xla_flags.compilation_cache_dir() == str(clean_env / "xdg" / "coala-dist" / "jax")
    xla_flags.configure()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(clean_env / "xdg" / "coala-dist" / "jax")
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == xla_flags.CACHE_MIN_COMPILE_TIME_S


@pytest.mark.parametrize("value", ["off", "OFF", "none", "0", "false"])
def test_off_turns_the_cache_off(clean_env, monkeypatch, value):
    monkeypatch.setenv(xla_flags.COMPILATION_CACHE_ENV, value)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(clean_env / "inherited"))
    assert xla_flags.compilation_cache_dir() is None
    xla_flags.configure()
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_a_directory_is_used_and_a_users_jax_setting_kept(clean_env, monkeypatch):
    monkeypatch.setenv(xla_flags.COMPILATION_CACHE_ENV, str(clean_env / "mine"))
    assert xla_flags.compilation_cache_dir() == str(clean_env / "mine")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(clean_env / "users_own"))
    xla_flags.configure()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(clean_env / "users_own")


def _coala(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_coala_writes_the_cache_and_off_writes_nothing(clean_env):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",)}
    cache = clean_env / "cache"
    play = ["play", "--config=configs/ipd_tiny.py"]
    result = _coala([f"--compilation_cache={cache}", *play], env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert cache.is_dir() and any(cache.iterdir()), "the compiled rollout must be written to the cache"
    result = _coala(["--compilation_cache=off", *play], env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (clean_env / "xdg").exists(), "with the cache off nothing is written to the default cache dir"


def test_compilation_cache_flag_without_a_value_is_one_line(clean_env):
    result = _coala(["--compilation_cache=", "play"], dict(os.environ))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "coala: --compilation_cache needs a value: --compilation_cache=off or --compilation_cache=DIR"
    ]


def _placement(leaf) -> tuple:
    """What decides how a jitted function lowers for an argument: its abstract value (weak type included), its
    sharding and whether it is committed to it."""
    committed = getattr(leaf, "committed", getattr(leaf, "_committed", None))  # public from some jax on
    return (jax.typeof(leaf) if hasattr(jax, "typeof") else leaf.aval, leaf.sharding, committed)


def test_a_restored_state_lowers_the_update_like_a_fresh_one(tiny_config, tiny_components, tmp_path):
    """A resume loads the programs the fresh run put in the compilation cache: the restored state is placed like the
    fresh one, so the update lowers to the same program (the cache key is the lowered module)."""
    from coala_dist.train import prepare_learner

    def prepared_state(save: bool) -> tuple[object, list[str]]:
        lines: list[str] = []
        prepared = prepare_learner(tiny_config, str(tmp_path), components=tiny_components, log=lines.append)
        if save:
            prepared.checkpoint.checkpointer.save(prepared.state, tiny_config, force=True)
        for callback in prepared.callbacks:
            callback.close()
        return prepared.state, lines

    fresh, _ = prepared_state(save=True)
    restored, lines = prepared_state(save=False)
    assert any(line.startswith("resumed from") for line in lines), lines
    assert [_placement(x) for x in jax.tree_util.tree_leaves(restored)] == [
        _placement(x) for x in jax.tree_util.tree_leaves(fresh)
    ]
    rollout = tiny_components.rollout
    inputs = (fresh.meta_params, fresh.naive_params, fresh.run_key, fresh.version, rollout.iteration_indices())
    batch = jax.eval_shape(rollout.episodes, *inputs)
    update = tiny_components.learner_update
    assert update.lower(restored, batch).as_text() == update.lower(fresh, batch).as_text()
