"""`coala scale`'s channel to a running job (distributed/control.py): the request reaches the driver, the command
returns once the driver applied it, and every request that cannot reach a running job is one line, before anything
is written. (Scaling a real running job: tests/test_ray_learners.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from coala_dist.distributed.control import CONTROL_DIR, DRIVER_FILE, REQUEST_FILE, DriverControl, request_scale


def _driver_loop(control: DriverControl, stop: threading.Event, applied: list[int]) -> None:
    """What the launcher's supervision does each round: read a request, apply it."""
    while not stop.is_set():
        count = control.requested()
        if count is not None:
            control.applied(count)
            applied.append(count)
        time.sleep(0.01)


def test_a_request_reaches_the_driver_and_returns_once_it_is_applied(tmp_path):
    control = DriverControl(str(tmp_path), "local", 1)
    with open(tmp_path / CONTROL_DIR / DRIVER_FILE) as f:
        assert json.load(f) == {"pid": os.getpid(), "launch": "local", "num_actors": 1}
    stop, applied = threading.Event(), []
    driver = threading.Thread(target=_driver_loop, args=(control, stop, applied))
    driver.start()
    try:
        assert request_scale(str(tmp_path), 3, timeout_s=10, poll_s=0.01) == 1  # the count it had before
        assert control.num_actors == 3
        assert request_scale(str(tmp_path), 2, timeout_s=10, poll_s=0.01) == 3
        assert request_scale(str(tmp_path), 2, timeout_s=10, poll_s=0.01) == 2  # already so: nothing to do
    finally:
        stop.set()
        driver.join()
    assert applied == [3, 2]
    control.close()
    assert os.listdir(tmp_path / CONTROL_DIR) == []  # ended: no request can reach it any more


def test_a_request_left_from_an_earlier_run_and_garbage_are_ignored(tmp_path):
    (tmp_path / CONTROL_DIR).mkdir()
    (tmp_path / CONTROL_DIR / REQUEST_FILE).write_text("5")
    control = DriverControl(str(tmp_path), "ray", 2)  # a new run of the workdir: its command line decides
    assert control.requested() is None
    for text in ("many", "0", "-1", "2"):  # not a count, no actors, the count it has
        (tmp_path / CONTROL_DIR / REQUEST_FILE).write_text(text)
        assert control.requested() is None
    (tmp_path / CONTROL_DIR / REQUEST_FILE).write_text("4")
    assert control.requested() == 4


def test_requests_that_cannot_reach_a_running_job_are_one_line_and_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="no running job in .*only a run started with --launch=local"):
        request_scale(str(tmp_path), 2)
    assert not (tmp_path / CONTROL_DIR).exists()
    with pytest.raises(ValueError, match="--num_actors=0 is invalid"):
        request_scale(str(tmp_path), 0)
    with pytest.raises(ValueError, match="is remote: only a job whose workdir is a directory on this machine"):
        request_scale("gs://bucket/run", 2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / CONTROL_DIR).mkdir()
    driver = {"pid": int(dead.stdout), "launch": "local", "num_actors": 1}
    (tmp_path / CONTROL_DIR / DRIVER_FILE).write_text(json.dumps(driver))  # a driver that was killed
    with pytest.raises(ValueError, match=r"is not running: its driver \(pid \d+\) is gone"):
        request_scale(str(tmp_path), 2)
    assert not (tmp_path / CONTROL_DIR / REQUEST_FILE).exists()


def test_a_request_the_driver_does_not_apply_in_time_says_so(tmp_path):
    control = DriverControl(str(tmp_path), "local", 1)  # never reads its requests
    with pytest.raises(ValueError, match=r"did not apply --num_actors=2 within 0.2 s \(it still has 1"):
        request_scale(str(tmp_path), 2, timeout_s=0.2, poll_s=0.01)
    assert control.requested() == 2  # the request stays and may still be applied
    control.close()
