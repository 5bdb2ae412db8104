"""The reaper of a `local` driver (coala_dist/distributed/reaper.py), with real processes and real signals.

A stand-in driver (plain Python, no JAX, no Ray) starts one child before its reaper and one after, then either dies
by SIGKILL or exits cleanly. The Ray run itself is tested in test_ray_local.py
(`test_two_local_drivers_a_port_scan_finds_only_the_shared_one_and_neither_leaves_a_process_behind`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from coala_dist.distributed.reaper import REAP_BOUND_S

DRIVER = """
import subprocess, sys, time
from coala_dist.distributed.reaper import start_reaper, stop_reaper
sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
before = subprocess.Popen(sleep, start_new_session=True)  # not the run's: started before the reaper
reaper = start_reaper()
after = subprocess.Popen(sleep, start_new_session=True)
grandchild = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"])
time.sleep(2)  # the reaper records them all (it polls every POLL_S)
print(before.pid, reaper.pid, after.pid, grandchild.pid, flush=True)
if sys.argv[1] == "clean":
    stop_reaper(reaper)
    print("stopped", flush=True)
time.sleep(120)
"""


def _start_driver(how: str) -> tuple[subprocess.Popen, dict[str, psutil.Process], list[psutil.Process]]:
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, how], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in driver.stdout.readline().split()]
    named = dict(zip(["before", "reaper", "after", "grandchild"], map(psutil.Process, pids), strict=True))
    grandchildren = named["grandchild"].children(recursive=True)
    assert len(grandchildren) == 1
    return driver, named, grandchildren


def _cleanup(driver: subprocess.Popen, processes: list[psutil.Process]) -> None:
    for process in [psutil.Process(driver.pid), *processes] if driver.poll() is None else processes:
        if process.is_running():
            process.kill()


@pytest.mark.parametrize("how", ["killed", "clean"])
def test_the_reaper_kills_the_run_when_the_driver_is_killed_and_nothing_after_a_clean_exit(how):
    driver, named, grandchildren = _start_driver(how)
    everything = [*named.values(), *grandchildren]
    try:
        if how == "killed":
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=10)
            started = time.monotonic()
            # Its descendants started after the reaper die (a grandchild too, though re-parented when its parent
            # died), and the reaper exits; the child the driver started before its reaper is left alone.
            run = [named["after"], named["grandchild"], *grandchildren, named["reaper"]]
            _, alive = psutil.wait_procs(run, timeout=REAP_BOUND_S)
            assert not alive, alive
            assert time.monotonic() - started < REAP_BOUND_S
            assert named["before"].is_running()
        else:
            assert driver.stdout.readline().strip() == "stopped"
            named["reaper"].wait(timeout=REAP_BOUND_S)  # told of the clean exit, it exits at once
            time.sleep(1.0)
            assert all(p.is_running() for p in [named["before"], named["after"], named["grandchild"], *grandchildren])
    finally:
        _cleanup(driver, everything)
