"""The command line's hard edges: every mistake is one line and a non-zero exit before any heavy work, and nothing is
written; configs are found by name from any folder; `coala COMMAND --help` lists the command's own flags.

Every case runs the real `coala` in a subprocess whose working directory is an empty temporary folder (not the
repository), so relative config paths cannot be what makes a command work.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys

import pytest

from coala_dist import cli, configs
from coala_dist.checkpoint import Checkpointer
from coala_dist.distributed.replay import REVERB_EXPOSURE_WARNING, reverb_installed


def _coala(cwd, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def _tree(path) -> list[tuple[str, int, float]]:
    """Every file under `path` with its size and modification time: what "nothing was written" compares."""
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            out.append((os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns))
    return sorted(out)


@pytest.fixture(scope="module")
def saved_workdir(tiny_state, tiny_config, tmp_path_factory):
    """A work directory holding one checkpoint of the tiny config (saved in-process: no training run needed)."""
    workdir = tmp_path_factory.mktemp("saved")
    checkpointer = Checkpointer(str(workdir), save_every=1, max_to_keep=1)
    checkpointer.save(tiny_state, tiny_config, force=True)
    checkpointer.close()
    return workdir


# (name, arguments after `coala`, expected exit status, text the one line must contain). WORK stands for a fresh
# workdir path that must not exist afterwards; SAVED for `saved_workdir`, which must be unchanged. A mistake in what
# was typed exits 2; a problem the machine reports (a file, a checkpoint, a network, no running job) exits 1.
CASES = [
    ("missing config file", ["train", "--config=no_such_config.py", "--workdir=WORK"], 2,
     "config 'no_such_config.py' not found"),
    ("config name with a typo", ["train", "--config=ipd_tinny", "--workdir=WORK"], 2, "did you mean 'ipd_tiny'"),
    ("config with a syntax error", ["train", "--config=BROKEN", "--workdir=WORK"], 2, "syntax error at line 2"),
    ("config without get_config", ["train", "--config=EMPTY", "--workdir=WORK"], 2, "defines no get_config()"),
    ("misspelled field", ["train", "--config=ipd_tiny", "--config.metabatch_size=3", "--workdir=WORK"], 2,
     "did you mean --config.meta_batch_size?"),
    ("misspelled nested field", ["play", "--config=ipd_tiny", "--config.meta.learnin_rate=3"], 2,
     "did you mean --config.meta.learning_rate?"),
    ("field value of the wrong type", ["train", "--config=ipd_tiny", "--config.seed=1.5", "--workdir=WORK"], 2,
     "--config.seed=1.5"),
    ("unknown flag", ["train", "--config=ipd_tiny", "--workdr=x"], 2, "Did you mean: workdir"),
    ("infinite learning rate", ["train", "--config=ipd_tiny", "--config.meta.learning_rate=inf", "--workdir=WORK"],
     2, "config.meta.learning_rate=inf is invalid"),
    ("resume with an incompatible config", ["train", "--config=ipd_tiny", "--config.batch_size=3",
                                            "--workdir=SAVED"], 1, "the config differs in batch_size"),
    ("unwritable workdir", ["train", "--config=ipd_tiny", "--workdir=AFILE/run"], 1, "is not a writable directory"),
    ("snr with one meta-batch", ["snr", "--config=ipd_tiny", "--meta_batches=1", "--out=WORK/snr.json"], 2,
     "needs at least 2 meta-batches"),
    ("snr with an unknown estimator", ["snr", "--config=ipd_tiny", "--estimators=coala,colaa", "--out=WORK/s.json"], 2,
     "Unknown estimator 'colaa'"),
    ("snr with a config and a workdir", ["snr", "--config=ipd_tiny", "--workdir=SAVED"], 2, "not both"),
    ("snr of lola_dice", ["snr", "--config=ipd_tiny", "--estimators=coala,lola_dice", "--out=WORK/s.json"], 2,
     "lola_dice has no advantage-based gradient"),
    ("lola_dice mixed with another rule",
     ["train", "--config=ipd_tiny", "--config.agent_estimators=('lola_dice','coala')", "--workdir=WORK"], 2,
     "cannot mix lola_dice with other estimators"),
    ("snr of a workdir without checkpoints", ["snr", "--workdir=WORK"], 1, "has no readable checkpoint"),
    ("isolated network on a Ray cluster", ["train", "--config=ipd_tiny", "--launch=ray", "--ray_address=127.0.0.1:1",
     "--network=isolated", "--workdir=WORK"], 2, "--network=isolated is impossible here"),
    ("unknown network mode", ["train", "--config=ipd_tiny", "--network=private", "--workdir=WORK"], 2,
     "--network=private is invalid"),
    ("scale without a running job", ["scale", "--workdir=SAVED", "--num_actors=2"], 1, "no running job in"),
    ("scale to no actors", ["scale", "--workdir=SAVED", "--num_actors=0"], 2, "--num_actors=0 is invalid"),
    ("negative actor count", ["train", "--config=ipd_tiny", "--num_actors=-1", "--workdir=WORK"], 2,
     "--num_actors=-1 is invalid"),
    ("negative meta-batch", ["train", "--config=ipd_tiny", "--config.meta_batch_size=-5", "--workdir=WORK"], 2,
     "meta_batch_size"),
    ("misspelled estimator", ["train", "--config=ipd_tiny", "--config.estimator=coalla", "--workdir=WORK"], 2,
     "coalla"),
    ("misspelled command", ["trian", "--config=ipd_tiny"], 2, "unknown command 'trian'; did you mean 'train'?"),
    ("plot of nothing", ["plot"], 2, "give one or more WORKDIRs"),
    ("eval without a workdir", ["eval"], 2, "--workdir (a run) or --agent (an exported agent) is required"),
    ("plot of a folder without metrics", ["plot", "SAVED", "--out=WORK/fig.png"], 1, "metrics.csv"),
    ("unreachable Ray cluster", ["train", "--config=ipd_tiny", "--launch=ray", "--ray_address=127.0.0.1:1",
                                 "--workdir=WORK"], 1, "cannot reach the Ray cluster at --ray_address=127.0.0.1:1"),
]


@pytest.mark.parametrize(("args", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_and_writes_nothing(args, status, message, saved_workdir, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "broken.py").write_text("import ml_collections\ndef get_config(:\n")
    (tmp_path / "empty.py").write_text("X = 1\n")
    (tmp_path / "afile").write_text("not a directory")
    substitutions = {
        "WORK": str(tmp_path / "work"),
        "SAVED": str(saved_workdir),
        "BROKEN": str(tmp_path / "broken.py"),
        "EMPTY": str(tmp_path / "empty.py"),
        "AFILE": str(tmp_path / "afile"),
    }
    for placeholder, value in substitutions.items():
        args = [a.replace(placeholder, value) for a in args]
    saved_before = _tree(saved_workdir)

    result = _coala(cwd, *args)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, result.stderr
    prefix = f"coala {args[0]}: " if args[0] in cli.COMMANDS else "coala: "
    assert len(lines) == 1 and lines[0].startswith(prefix) and message in lines[0], result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "work").exists() and os.listdir(cwd) == []
    assert _tree(saved_workdir) == saved_before


@pytest.mark.slow
def test_configs_are_found_by_name_from_any_folder(tmp_path):
    result = _coala(tmp_path, "play", "--config=ipd_tiny", "--config.seed=3")
    assert result.returncode == 0, result.stderr
    assert "total reward per step" in result.stdout


def test_a_config_name_path_and_file_all_resolve_to_the_shipped_file(tmp_path):
    shipped = os.path.join(configs.CONFIG_DIR, "ipd_tiny.py")
    for spec in ("ipd_tiny", "ipd_tiny.py", "configs/ipd_tiny.py"):  # the last also from a checkout's root
        assert os.path.samefile(configs.resolve(spec), shipped)
    own = tmp_path / "ipd_tiny.py"  # a user's own file of the same name wins when given as a path
    own.write_text("def get_config():\n    return None\n")
    assert configs.resolve(str(own)) == str(own)
    assert "ipd_tiny" in configs.names() and "ipd_pure_shaping" in configs.names()


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_lists_the_commands_own_flags(command, tmp_path):
    result = _coala(tmp_path, command, "--help")
    assert result.returncode == 0, result.stderr
    own = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  --")]
    # Independently of absl: the flags the command's module defines, read from its source.
    source = importlib.util.find_spec(cli.COMMANDS[command][0]).origin
    with open(source) as f:
        defined = re.findall(r'DEFINE_\w+\(\s*"(\w+)"', f.read())
    assert defined and sorted(f for f in own if f != "--config.FIELD=VALUE") == sorted(f"--{n}" for n in defined)
    # Not absl's, JAX's or TensorFlow's flags.
    assert "--jax_" not in result.stdout and "--helpfull" not in own and "--verbosity" not in own


@pytest.mark.slow
def test_train_without_workdir_names_the_one_it_uses(tmp_path):
    result = _coala(tmp_path, "train", "--config=ipd_tiny", "--config.training_iterations=1", timeout=300)
    assert result.returncode == 0, result.stderr
    made = os.listdir(tmp_path / "workdirs")
    assert len(made) == 1 and made[0].startswith("ipd_tiny-")
    assert f"writing to workdirs/{made[0]}" in result.stderr
    assert os.path.isfile(tmp_path / "workdirs" / made[0] / "metrics.csv")


def test_check_override_suggests_the_closest_field(tiny_config):
    cli.check_override(tiny_config, "meta.learning_rate")  # an existing field passes
    with pytest.raises(ValueError, match=r"did you mean --config\.env\.inner_episode_length\?"):
        cli.check_override(tiny_config, "env.inner_episode_lenght")
    with pytest.raises(ValueError, match="is a value, not a section"):
        cli.check_override(tiny_config, "seed.value")


def test_native_chatter_is_dropped_and_everything_else_kept(tmp_path):
    script = (
        "import os, sys\n"
        "from coala_dist.console import drop_native_chatter\n"
        "drop_native_chatter()\n"
        "os.write(2, b'[reverb/cc/platform/default/server.cc:71] Started replay server on port 1\\n')\n"
        "os.write(2, b'[reverb/cc/client.cc:165] Sampler and server are owned by the same process (1) so ...\\n')\n"
        "os.write(2, b'[reverb/cc/table.cc:9] Table episodes is full: a native warning\\n')\n"
        "print('from python', file=sys.stderr)\n"
        "os.write(2, b'no newline at exit')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sorted(lines) == sorted(
        ["[reverb/cc/table.cc:9] Table episodes is full: a native warning", "from python", "no newline at exit"]
    )


@pytest.mark.parametrize(
    ("replay", "network"),
    [("auto", "auto"), *([("reverb", "auto"), ("reverb", "shared")] if reverb_installed() else [])],
)
@pytest.mark.slow
def test_a_run_with_an_actor_prints_only_progress_lines(tmp_path, replay, network):
    """An actor thread with the default replay and, on the reverb profile, with Reverb: the console shows the
    progress lines and nothing from TensorFlow, CUDA probes or Reverb, except, for Reverb on the shared network, the
    one line warning that it listens on every interface without authentication (in the run's private network,
    the default, only the run reaches it)."""
    result = _coala(
        tmp_path, "train", "--config=ipd_tiny", "--config.training_iterations=2", "--num_actors=1", "--workdir=run",
        f"--replay={replay}", f"--network={network}", timeout=300,
    )
    assert result.returncode == 0, result.stderr
    exposed = replay == "reverb" and network == "shared"
    lines = result.stderr.splitlines()
    assert lines[:-2] == ([f"coala train: warning: {REVERB_EXPOSURE_WARNING}"] if exposed else []), result.stderr
    assert lines[-2].startswith(("coala train: compiling the rollout", "coala train: loading the compiled")), lines
    assert lines[-1].startswith(f"coala train: checkpoints: {tmp_path / 'run' / 'checkpoints'}  metrics: "), lines
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["it", "1/2"], ["it", "2/2"]]


def test_ray_lines_that_contradict_the_launcher_are_dropped_and_the_rest_kept():
    from coala_dist.console import RAY_WORKER_DIED, DroppingLines

    out = io.StringIO()
    console = DroppingLines(out, RAY_WORKER_DIED)
    console.write("\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task by an unexpected system")
    console.write(" error. Worker PID: 7\n(raylet) Task ActorProcess.run failed. There are infinite retries ")
    console.write("remaining, so the task will be retried.\n(LearnerProcess pid=3) it     6/60  r_meta|naive +0.544\n")
    console.write("actor 1 exited (process 7 was killed or crashed); restarted, 1 of 3 restarts used\n(raylet) other")
    console.close_filter()
    assert out.getvalue().splitlines() == [
        "(LearnerProcess pid=3) it     6/60  r_meta|naive +0.544",
        "actor 1 exited (process 7 was killed or crashed); restarted, 1 of 3 restarts used",
        "(raylet) other",
    ]
    assert console.dropped == 2


def test_the_early_resume_check_leaves_jax_unstarted_so_launching_forks_nothing_multithreaded(saved_workdir):
    """A driver that checks a workdir's checkpoints and then starts processes (Ray, the reaper) must not have started
    JAX's backend first: JAX warns at every fork of a process whose backend runs (and it may deadlock)."""
    script = (
        "import os, sys, warnings\n"
        "from coala_dist import configs\n"
        "from coala_dist.checkpoint import check_resumable\n"
        "check_resumable(sys.argv[1], configs.load(configs.resolve('ipd_tiny')))\n"
        "warnings.simplefilter('always')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print('forked quietly')\n"
    )
    command = [sys.executable, "-c", script, str(saved_workdir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "forked quietly\n", result.stderr[-2000:]
    assert "fork" not in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_snr_of_a_workdir_reads_its_config_and_checkpoint(saved_workdir, tiny_state, tmp_path):
    out = tmp_path / "out" / "snr.json"
    before = _tree(saved_workdir)
    result = _coala(tmp_path, "snr", f"--workdir={saved_workdir}", "--meta_batches=2", f"--out={out}", timeout=300)
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    assert written["source"] == {"workdir": str(saved_workdir)} and written["version"] == int(tiny_state.version)
    assert set(written["estimators"]) == {"coala", "mfos", "batch_unaware"}
    assert (tmp_path / "out" / "snr.png").stat().st_size > 0
    assert _tree(saved_workdir) == before  # read only


def test_a_local_runs_ray_says_nothing_alarming_and_writes_no_colour_codes(monkeypatch):
    from coala_dist.distributed.ray_nodes import ray_console_environment, restart_line

    for name in ("RAY_AUTH_MODE", "RAY_COLOR_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    # Token authentication, said explicitly (Ray's default otherwise comes with a hint to turn it off).
    assert ray_console_environment("local", tty=True) == {"RAY_AUTH_MODE": "token"}
    assert ray_console_environment("local", tty=False) == {"RAY_AUTH_MODE": "token", "RAY_COLOR_PREFIX": "0"}
    assert ray_console_environment("ray", tty=False) == {"RAY_COLOR_PREFIX": "0"}  # a cluster's own settings rule
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")
    assert ray_console_environment("ray", tty=False) == {}  # what the user set is kept
    expected = "actor 1 exited (process 4242 was killed or crashed); restarted, 1 of 3 restarts used"
    assert restart_line(1, 4242, 1, 3) == expected
    assert restart_line(0, 7, 2, -1).endswith("restarted, unlimited restarts")
