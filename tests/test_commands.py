"""`coala plot`, `coala eval` and `coala bench` on tiny work directories trained here, and the numbers behind them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import results_snapshot

from coala_dist.analysis import bench, flops
from coala_dist.analysis.curves import group_runs, moving_average, plot_runs
from coala_dist.analysis.evaluation import evaluate_workdir
from coala_dist.analysis.runs import Run, config_from_saved, json_safe, load_run
from coala_dist.config import validate
from coala_dist.networks.policy import HawkPolicy, init_policy_params
from coala_dist.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _coala(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _with_seed(config, seed: int):
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = seed
    return config


@pytest.fixture(scope="module")
def workdirs(tiny_config, tiny_components, tmp_path_factory):
    """Two seeds of the tiny experiment, trained to the end (checkpoint, metrics.csv, TensorBoard)."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        workdir = str(root / f"seed_{seed}")
        train(_with_seed(tiny_config, seed), workdir, components=tiny_components, log=lambda line: None)
        dirs.append(workdir)
    return dirs


def assert_valid_png(path: str, min_bytes: int = 20_000) -> None:
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert os.path.getsize(path) > min_bytes
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert float(np.std(image[..., :3])) > 0.01  # not a blank canvas


# ---------------------------------------------------------------------------------------------------------------------
# plot
def test_moving_average_matches_a_loop():
    values = np.array([[1.0, np.nan, 3.0, 4.0, np.nan, np.nan, 10.0], [2.0, 2.0, 2.0, np.nan, 0.0, 1.0, 5.0]])
    window = 3
    expected = np.full(values.shape, np.nan)
    for r in range(values.shape[0]):
        for i in range(values.shape[1]):
            chunk = [v for v in values[r, max(0, i - window + 1) : i + 1] if not math.isnan(v)]
            if chunk:
                expected[r, i] = sum(chunk) / len(chunk)
    np.testing.assert_allclose(moving_average(values, window), expected, equal_nan=True)
    np.testing.assert_allclose(moving_average(values, 1), values, equal_nan=True)


def test_runs_are_grouped_by_estimator():
    def run(name, estimator):
        return Run(workdir=f"/x/{name}", config=None if estimator is None else {"estimator": estimator}, rows=[])

    runs = [run("a", "mfos"), run("b", "coala"), run("c", None), run("d", "coala"), run("e", "batch_unaware")]
    groups = group_runs(runs)
    assert list(groups) == ["COALA-PG", "M-FOS", "batch-unaware", "c"]
    assert [r.workdir for r in groups["COALA-PG"]] == ["/x/b", "/x/d"]


def test_plot_draws_mean_and_std_over_seeds(workdirs, tiny_config, tmp_path):
    runs = [load_run(w) for w in workdirs]
    assert runs[0].config["seed"] == 0 and runs[1].config["seed"] == 1
    assert config_from_saved(runs[0].config).to_dict() == tiny_config.to_dict()
    out = str(tmp_path / "fig.png")
    summary = plot_runs(runs, out)
    assert_valid_png(out)
    assert summary["groups"]["COALA-PG"]["seeds"] == 2
    final = summary["groups"]["COALA-PG"]["final"]["vs_naive/ego_reward"]
    last = [run.rows[-1]["vs_naive/ego_reward"] for run in runs]
    assert final["mean"] == pytest.approx(np.mean(last)) and final["std"] == pytest.approx(np.std(last, ddof=1))


def test_plot_command(workdirs, tmp_path):
    out = str(tmp_path / "cli" / "fig.png")
    result = _coala("plot", *workdirs, f"--out={out}", "--metrics=vs_naive/ego_reward,learner/loss")
    assert result.returncode == 0, result.stderr
    assert "COALA-PG (2 seeds)" in result.stdout
    assert_valid_png(out, min_bytes=10_000)


def test_plot_command_without_out_writes_next_to_the_run(workdirs, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "plot", workdirs[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = os.path.join(workdirs[0], "curves.png")
    assert "COALA-PG (1 seed):" in result.stdout and result.stdout.strip().endswith(f"wrote {out}")
    assert_valid_png(out)
    assert os.listdir(tmp_path) == []  # nothing in the folder it ran from
    os.remove(out)


def test_a_one_iteration_plot_draws_markers_and_claims_no_average(workdirs, tmp_path, monkeypatch):
    import matplotlib.figure

    drawn = {}

    def capture(figure, path, **kwargs):
        drawn["title"] = figure._suptitle.get_text()
        drawn["markers"] = [
            line.get_marker() for ax in figure.axes for line in ax.get_lines() if line.get_label()[0] != "_"
        ]

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    run = load_run(workdirs[0])
    plot_runs([Run(workdir=run.workdir, config=run.config, rows=run.rows[:1])], str(tmp_path / "one.png"), smoothing=5)
    assert drawn["title"] == "mean ± std over seeds"
    assert drawn["markers"] and all(marker == "o" for marker in drawn["markers"])


def test_the_readmes_tensorboard_command_reads_a_runs_events(workdirs):
    """The README's `tensorboard --logdir WORKDIR/tensorboard`, with `--inspect` (the same loader, no server): the
    installed viewer finds the run's scalars."""
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    assert os.path.exists(tensorboard), "the README's install (the dev extra) brings tensorboard"
    logdir = os.path.join(workdirs[0], "tensorboard")
    result = subprocess.run([tensorboard, "--inspect", "--logdir", logdir], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert logdir in result.stdout and "vs_naive/ego_reward" in result.stdout, result.stdout


# ---------------------------------------------------------------------------------------------------------------------
# eval
@pytest.mark.slow
def test_eval_writes_json_and_png(workdirs, tiny_config, tiny_components, tmp_path):
    lines: list[str] = []
    out = str(tmp_path / "eval")
    result = evaluate_workdir(workdirs[0], out, rounds=2, components=tiny_components, log=lines.append)
    assert_valid_png(os.path.join(out, "eval.png"))
    with open(os.path.join(out, "eval.json")) as f:
        written = json.load(f)
    assert written == result and result["step"] == tiny_config.training_iterations
    num_inner = tiny_config.num_inner_episodes
    episodes = 0
    for group in ("vs_naive", "vs_meta"):  # p_naive = 0.5 with two meta agents: both kinds occur
        summary = result[group]
        episodes += summary["episodes"]
        table = np.array(summary["cooperation_by_state"]["per_inner_episode"], dtype=float)
        assert table.shape == (num_inner, 5)
        assert np.nanmin(table) >= 0 and np.nanmax(table) <= 1
        assert (
            np.array(summary["cooperation_by_state"]["visits"])[:, 0].tolist()
            == [summary["episodes"] * tiny_config.batch_size] * num_inner
        )  # every inner episode starts in s0, once per game
        assert len(summary["zd_extortion_fit"]["per_inner_episode"]["chi"]) == num_inner
        assert len(summary["per_inner_episode"]["cooperate_player_2"]["mean"]) == num_inner
    assert episodes == 2 * tiny_config.population_size_meta * tiny_config.meta_batch_size
    text = "\n".join(lines)
    assert "against fresh naive learners" in text and "ZD extortion fit" in text and "P(C|CC)" in text


def test_eval_command_without_a_checkpoint_says_so(tmp_path):
    result = _coala("eval", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "has no readable checkpoint" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# bench
def test_forward_flops_match_the_parameter_shapes():
    policy = HawkPolicy(num_actions=3, embed_dim=8, lru_width=12, mlp_width=6, num_heads=3, num_blocks=2)
    # Shapes only: eval_shape runs no initialiser.
    params = jax.eval_shape(policy.init, jax.random.PRNGKey(0), jnp.zeros((1, 1, 7)), jnp.zeros((1, 1), jnp.int32))
    model, executed = 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(p, "key", "") for p in path]
        is_kernel = names[-1].endswith("kernel") or names[-1] == "w"  # not a bias, norm scale or Λ
        if not is_kernel or "conv_1d" in names:  # the convolution is depthwise: not a matmul
            continue
        if leaf.ndim == 3:  # a block-diagonal gate: h blocks of [e/h, e/h], run as one dense [e, e]
            heads, rows, columns = leaf.shape
            model += heads * rows * columns
            executed += (heads * rows) * (heads * columns)
        else:
            model += leaf.shape[0] * leaf.shape[1]
            executed += leaf.shape[0] * leaf.shape[1]
    sizes = dict(obs_dim=7, num_actions=3, embed_dim=8, lru_width=12, mlp_width=6, num_heads=3, num_blocks=2)
    assert flops.policy_forward_flops_per_step(**sizes) == 2 * model
    assert flops.policy_forward_flops_per_step(**sizes, dense_gates=True) == 2 * executed


def test_forward_flops_agree_with_xla(tiny_config):
    config = ml_collections.ConfigDict(tiny_config.to_dict())
    policy = HawkPolicy(num_actions=2, embed_dim=32, lru_width=32, mlp_width=32, num_heads=2)
    config.policy.embed_dim = config.policy.lru_width = config.policy.mlp_width = 32
    params = init_policy_params(policy, jax.random.PRNGKey(0), obs_dim=5)
    xla = flops.xla_policy_flops_per_step(policy, params, obs_dim=5, rows=16, length=4)
    dense = flops.policy_flops_from_config(config, 5, 2, dense_gates=True)
    assert 2 * sum(flops.policy_matmul_macs(config, 5, 2).values()) == dense
    # XLA also counts the elementwise work (norms, gates, activations), which the matmul count leaves out.
    assert dense <= xla["acting_step"] <= 1.5 * dense
    assert dense <= xla["sequence_forward"] <= 1.5 * dense
    assert 2.5 * dense <= xla["sequence_forward_backward"] <= 4.5 * dense  # backward ≈ 2 × forward


def test_training_flops_by_phase(tiny_config):
    config = ml_collections.ConfigDict(tiny_config.to_dict())
    config.p_naive, config.num_inner_episodes, config.meta.ppo_num_epochs = 0.5, 3, 2
    phases = flops.training_flops_per_agent_step(config, 100.0)
    assert phases["acting"] == 200.0
    assert phases["naive_forward_backward"] == pytest.approx(300.0 * 0.5 * 2 / 3)
    assert phases["meta_forward_backward"] == 600.0
    assert phases["total"] == pytest.approx(200.0 + 100.0 + 600.0)


@pytest.mark.parametrize("quick", [False, True])
def test_bench_configs_are_valid(quick):
    configs = bench.bench_configs(quick)
    for config in configs.values():
        validate(config)
    assert configs["cleanup"].env.name == "cleanup_lite"
    assert configs["ipd"].env.name == "ipd" and configs["ipd"].policy.scan_type == "linear"
    assert configs["ipd_associative"].policy.scan_type == "associative"
    if not quick:
        assert configs["cleanup"].env.inner_episode_length == 64
        assert configs["ipd"].meta_batch_size == 128 and configs["ipd"].num_inner_episodes == 20


@pytest.mark.slow
def test_bench_json_has_every_key(tiny_config, tiny_components, workdirs, tmp_path, monkeypatch):
    # Compiling Clean Up's rollout or an associative-scan update takes tens of seconds; their measurements run the
    # same code as the IPD ones, so this test of the JSON times the tiny IPD experiment in their place
    # (test_bench_configs_are_valid checks the configs the command builds for them).
    components = {"ipd": tiny_components, "ipd_associative": tiny_components, "cleanup": tiny_components}
    result = bench.run_bench(
        components, timed_iterations=1, launches=(), matmul_rows=512, matmul_repeats=1, log=lambda line: None
    )
    for key in bench.BENCH_KEYS:
        bench.lookup(result, key)  # raises KeyError naming a missing one
    numbers = [k for k in bench.BENCH_KEYS if not k.startswith(("machine.", "stack.", "configs.", "end_to_end.launch"))]
    assert result["stack"]["profile"] in ("current", "reverb") and result["stack"]["jax"] == jax.__version__
    for key in numbers:
        value = bench.lookup(result, key)
        if isinstance(value, (int, float)):
            assert math.isfinite(value) and value > 0, key
    for launch, actors in bench.LAUNCHES:
        entry = result["end_to_end"][bench.launch_key(launch, actors)]
        assert entry["episodes_per_s"] is None and "not requested" in entry["reason"]
    loop = result["end_to_end"]["inprocess_loop"]
    assert 0 < loop["learner_wait_fraction"] < 1
    assert result["configs"]["ipd"]["agent_steps_per_iteration"] == 4 * 2 * 4 * 3 * 3
    assert result["flops"]["limit"]["fraction"] == pytest.approx(
        loop["agent_steps_per_s"] / result["flops"]["limit"]["agent_steps_per_s"]
    )
    table = bench.markdown_table(result)
    assert "agent-steps/s" in table and "not measured" in table
    json.dumps(json_safe(result), allow_nan=False)  # what the command writes is strict JSON

    # Where the command puts it without --out: workdirs/bench/ under the working directory, never results/.
    before = results_snapshot()
    monkeypatch.chdir(tmp_path)
    for quick, name in ((True, "bench_quick.json"), (False, "bench.json")):
        path = bench.write_json(json_safe(result | {"quick": quick}), bench.output_path(None, quick))
        with open(tmp_path / "workdirs" / "bench" / name) as f:
            assert json.load(f)["quick"] is quick
        assert os.path.samefile(path, tmp_path / "workdirs" / "bench" / name)
    assert results_snapshot() == before


def test_bench_command_rejects_an_unknown_launch():
    result = _coala("bench", "--launches=ray:9")
    assert result.returncode != 0 and "--launches entry 'ray:9' is invalid" in result.stderr


def test_quick_bench_never_writes_into_results(tmp_path):
    (tmp_path / "link").symlink_to(os.path.join(REPO, "results"))
    for out in ("results/bench.json", os.path.join(REPO, "results", "x", "..", "bench.json"), tmp_path / "link" / "b"):
        with pytest.raises(ValueError, match="--quick never writes into the published results"):
            bench.output_path(str(out), quick=True)
    # A full run writes the published JSON only when named; a quick run never does.
    assert bench.output_path("results/bench.json", quick=False) == "results/bench.json"
    assert bench.output_path(str(tmp_path / "b.json"), quick=True) == str(tmp_path / "b.json")
    before = results_snapshot()
    result = _coala("bench", "--quick", "--out=results/bench.json")  # refused before anything is measured
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coala bench: --quick never writes"), result.stderr
    assert results_snapshot() == before


@pytest.mark.slow
def test_device_check_runs_the_plain_loop_without_ray_reverb_or_tensorflow(tmp_path):
    # The script a GPU machine runs (scripts/device_check.py), here on the CPU with the tiny config for both parts.
    out = tmp_path / "device.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "device_check.py"),
            "--paper_config=configs/ipd_tiny.py",
            "--fig5a_config=configs/ipd_tiny.py",
            "--timed_iterations=1",
            "--fig5a_iterations=2",
            f"--out={out}",
        ],
        cwd=tmp_path,  # not the repository: the script finds its configs itself
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["backend"] == "cpu" and report["devices"]
    assert report["imported_optional_modules"] == []
    paper = report["paper_ipd"]
    assert paper["agent_steps_per_iteration"] == 4 * 2 * 4 * 3 * 3
    assert 0 < paper["rollout_s"] <= paper["iteration_s"] and paper["first_iteration_s"] > 0
    steps_per_s = paper["agent_steps_per_iteration"] / paper["iteration_s"]
    assert paper["agent_steps_per_s"] == pytest.approx(steps_per_s, rel=1e-3)
    curve = report["fig5a"]["ego_reward_per_step"]
    assert len(curve) == 2 and all(-1.0 <= reward <= 2.0 for reward in curve)  # sucker ... temptation payoff
