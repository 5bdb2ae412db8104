"""JAX's persistent compilation cache: where it goes, how it is turned off, and that `coala` commands use it."""

from __future__ import annotations

import os
import subprocess
import sys

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
