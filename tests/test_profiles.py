"""The install profiles (coala_dist/profiles.py): this environment is one of them, a mismatch is one line, and a
replay backend the profile lacks is refused in one line before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coala_dist import profiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_this_environment_is_one_profile():
    # CI installs each profile as the README says; on Python 3.11 that is the reverb profile, so Reverb must be
    # there (otherwise its tests would silently not run).
    assert profiles.mismatch() is None
    expected = "reverb" if sys.version_info < (3, 12) else "current"
    assert profiles.installed_profile() == expected
    stack = profiles.stack()
    assert stack["profile"] == expected and stack["jax"] and stack["python"].startswith(f"{sys.version_info[0]}.")


def test_python_311_without_reverb_names_both_installs(monkeypatch):
    monkeypatch.setattr(profiles.sys, "version_info", (3, 11, 7, "final", 0))
    monkeypatch.setattr(profiles, "installed_profile", lambda: "current")
    message = profiles.mismatch()
    assert message is not None and "\n" not in message
    assert "constraints/current.txt" in message and "constraints/reverb.txt" in message


def test_reverb_beside_a_current_jax_is_refused(monkeypatch):
    monkeypatch.setattr(profiles, "installed_profile", lambda: "reverb")
    monkeypatch.setattr(profiles, "_version", lambda package: "0.12.0.1" if package == "jax" else None)
    assert "pins jax 0.4.34" in profiles.mismatch()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replay=queues", "--launch=local"], "replay=queues cannot serve launch local"),
        (["--replay=zmq"], "config.distributed.replay='zmq' is invalid"),
        (["--replay=ray", "--num_actors=0"], "--replay=ray needs actors"),
    ]
    + ([] if profiles.installed_profile() == "reverb" else [(["--replay=reverb"], "needs the reverb profile")]),
)
def test_replay_the_install_cannot_serve_is_one_line(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "train", "--config=configs/ipd_tiny.py", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.stderr
