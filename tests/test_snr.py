"""The gradient SNR diagnostic (`coala snr`): the current/future split of the advantages against a brute-force sum, the
statistics against samples with a known mean and covariance, the gradients against autodiff of the learner's own
loss, and the command end to end on the tiny config."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from coala_dist.analysis import snr
from coala_dist.rl import estimators
from coala_dist.rl.losses import a2c_loss


def _brute_force_current(rewards, values, *, normalize, discount, gae_lambda, inner_episode_length):
    """Σ_{k=l}^{end of l's inner episode} (γλ)^{k−l} δ_k / n by explicit loops (V after the last step is 0)."""
    batch_size, length = rewards.shape
    scale = 1.0 / batch_size if normalize else 1.0
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for t in range(length):
            end = (t // inner_episode_length + 1) * inner_episode_length
            for k in range(t, end):
                next_value = values[b, k + 1] if k + 1 < length else 0.0
                delta = rewards[b, k] + discount * next_value - values[b, k]
                out[b, t] += scale * (discount * gae_lambda) ** (k - t) * delta
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_current_episode_advantages_are_the_discounted_td_errors_of_the_own_inner_episode(normalize):
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(3, 12)), rng.normal(size=(3, 12))
    settings = dict(discount=0.9, gae_lambda=0.8, inner_episode_length=4)
    got = estimators.current_episode_advantages(
        jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32), normalize_current_episode=normalize,
        **settings,
    )
    expected = _brute_force_current(rewards, values, normalize=normalize, **settings)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_without_batch_averaging_the_future_part_is_the_discounted_advantage_of_the_next_episode_start():
    # Per-trajectory GAE: A_t − current_t = (γλ)^{e−t} A_e for the first step e of the next inner episode.
    rng = np.random.default_rng(1)
    rewards, values = (jnp.asarray(rng.normal(size=(2, 9)), jnp.float32) for _ in range(2))
    settings = dict(discount=0.95, gae_lambda=0.7, inner_episode_length=3)
    total = np.asarray(estimators.advantages(
        rewards, values, average_future_episodes=False, normalize_current_episode=False, **settings
    ))
    current = np.asarray(estimators.current_episode_advantages(
        rewards, values, normalize_current_episode=False, **settings
    ))
    for t in range(9):
        start_of_next = (t // 3 + 1) * 3
        expected = (0.95 * 0.7) ** (start_of_next - t) * total[:, start_of_next] if start_of_next < 9 else 0.0
        np.testing.assert_allclose(total[:, t] - current[:, t], expected, rtol=1e-5, atol=1e-6)


def test_current_episode_advantages_refuse_a_length_the_episodes_do_not_divide():
    with pytest.raises(ValueError, match="must be positive and divide"):
        estimators.current_episode_advantages(
            jnp.zeros((2, 10)), jnp.zeros((2, 10)), normalize_current_episode=True, discount=1.0, gae_lambda=1.0,
            inner_episode_length=3,
        )


def test_statistics_recover_a_known_signal_and_noise():
    rng = np.random.default_rng(2)
    dim, count, sigma = 40, 1000, 0.5
    mean = rng.normal(size=dim)
    samples = mean + sigma * rng.normal(size=(count, dim))
    stats = snr.gradient_statistics(samples, meta_batch_size=16, target_snr=2.0)
    signal, noise = mean @ mean, dim * sigma**2
    assert stats["resolved"] and stats["meta_batch_lower_bound"] is None
    np.testing.assert_allclose(stats["signal_power"], signal, rtol=0.05)
    np.testing.assert_allclose(stats["noise_power"], noise, rtol=0.05)
    # The jackknife error is small here and covers the truth.
    assert 0 < stats["snr_stderr"] < 0.1 * stats["snr"]
    assert abs(stats["snr"] - signal / noise) < 4 * stats["snr_stderr"]
    np.testing.assert_allclose(stats["norm_mean"], np.linalg.norm(samples, axis=1).mean())
    np.testing.assert_allclose(stats["snr"], signal / noise, rtol=0.05)
    np.testing.assert_allclose(stats["meta_batch_for_target"], 16 * 2.0 * noise / signal, rtol=0.05)
    # Two independent samples a + n₁, a + n₂: E cos ≈ ‖a‖² / (‖a‖² + σ²D) in high dimension.
    np.testing.assert_allclose(stats["cosine_mean"], signal / (signal + noise), atol=0.03)


def test_statistics_of_opposite_samples_resolve_no_signal_and_give_the_floor():
    v = np.array([3.0, -4.0])
    stats = snr.gradient_statistics(np.stack([v, -v]), meta_batch_size=8, target_snr=1.0)
    # mean 0, σ² = 2·25/(2−1) = 50, S = 0 − 50/2 < 0: not resolved; the floor is N·s·K.
    assert not stats["resolved"] and stats["meta_batch_for_target"] is None
    assert stats["noise_power"] == pytest.approx(50.0) and stats["signal_power"] == pytest.approx(-25.0)
    assert stats["meta_batch_lower_bound"] == 16 and stats["cosine_mean"] == pytest.approx(-1.0)
    assert stats["snr_stderr"] is None  # no leave-one-out set of two samples


@pytest.mark.parametrize(("samples", "target", "message"), [
    (np.ones((1, 3)), 1.0, "K >= 2"),
    (np.ones((3, 3)), 0.0, "target_snr must be > 0"),
])
def test_statistics_refuse_what_they_cannot_estimate(samples, target, message):
    with pytest.raises(ValueError, match=message):
        snr.gradient_statistics(samples, meta_batch_size=4, target_snr=target)


@pytest.fixture(scope="module")
def agent_batch(tiny_components, tiny_state):
    """Agent 0's meta-batch [N, B, L] of the tiny config, and its parameters."""
    config = tiny_components.config
    batch = tiny_components.rollout_episodes(
        tiny_state.meta_params, tiny_state.naive_params, tiny_state.run_key, tiny_state.version,
        tiny_components.rollout.iteration_indices(),
    )
    params = jax.tree_util.tree_map(lambda x: x[0], tiny_state.meta_params)
    batch = jax.tree_util.tree_map(lambda x: x[: config.meta_batch_size], batch)
    return params, batch


def _with(components, learner):
    return dataclasses.replace(components, learner=learner)


@pytest.mark.parametrize("divide_by_std", [False, True])
def test_the_parts_of_centred_and_scaled_advantages_are_the_centred_and_scaled_parts(
    tiny_components, agent_batch, divide_by_std
):
    # The learner centres per co-player type (and may divide by the std): the split must commute with that, so that
    # total − current is exactly the treated future part. Checked against numpy on the untreated advantages.
    _, batch = agent_batch
    learner = tiny_components.learner
    treated = dataclasses.replace(
        learner,
        settings=dataclasses.replace(
            learner.settings, advantage_normalization=True, advantage_divide_by_std=divide_by_std
        ),
    )
    untreated = dataclasses.replace(
        learner, settings=dataclasses.replace(learner.settings, advantage_normalization=False)
    )
    raw_total, raw_current = map(np.asarray, snr.advantage_parts(_with(tiny_components, untreated), batch, "coala"))
    total, current = map(np.asarray, snr.advantage_parts(_with(tiny_components, treated), batch, "coala"))
    naive = np.asarray(batch.coplayer_is_naive)
    expected_future = np.empty_like(raw_total)
    for group in (naive, ~naive):
        if not group.any():
            continue
        future = raw_total[group] - raw_current[group]
        scale = raw_total[group].std() + 1e-8 if divide_by_std else 1.0
        expected_future[group] = (future - future.mean()) / scale
    np.testing.assert_allclose(total - current, expected_future, rtol=1e-4, atol=1e-5)
    assert np.abs(total - raw_total).max() > 1e-3  # the treatment changed something


def test_gradients_are_autodiff_of_the_a2c_policy_loss_with_each_part(tiny_components, agent_batch):
    params, batch = agent_batch
    names = estimators.ESTIMATORS
    got = np.asarray(jax.jit(lambda p, b: snr.policy_gradients(tiny_components, p, b, names))(params, batch))
    assert batch.coplayer_is_naive.any()  # the Σ-over-b scale is exercised
    for e, name in enumerate(names):
        rule = estimators.get_estimator(name)
        for part, adv in enumerate(snr.advantage_parts(tiny_components, batch, name)):

            def policy_loss(p, adv=adv, rule=rule):
                logp, entropy, values = tiny_components.learner.evaluate_actions(p, batch)
                losses = jax.vmap(
                    lambda lp, en, va, a, naive: a2c_loss(
                        lp, en, va, a, va, sum_over_batch=jnp.logical_and(naive, rule.sum_over_batch),
                        value_coefficient=0.0, entropy_coefficient=0.0,
                    ).policy_loss
                )(logp, entropy, values, adv, batch.coplayer_is_naive)
                return jnp.mean(losses)

            expected = np.asarray(ravel_pytree(jax.grad(policy_loss)(params))[0])
            # float32 sums in another order: equal to 1e-5 of the gradient's size, element by element
            np.testing.assert_allclose(got[e, part], expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
            assert np.linalg.norm(got[e, part] - expected) <= 1e-5 * np.linalg.norm(expected)


def test_mfos_mean_is_mfos_averaged_instead_of_summed_over_the_batch(tiny_components, agent_batch):
    params, batch = agent_batch
    naive = np.asarray(batch.coplayer_is_naive)
    assert naive.any()
    batch = jax.tree_util.tree_map(lambda x: x[naive], batch)  # naive-opponent episodes only
    mfos, mean = (snr.advantage_parts(tiny_components, batch, name) for name in ("mfos", "mfos_mean"))
    for part, part_mean in zip(mfos, mean, strict=True):
        np.testing.assert_array_equal(np.asarray(part), np.asarray(part_mean))
    got = np.asarray(snr.policy_gradients(tiny_components, params, batch, ("mfos", "mfos_mean")))
    batch_size = batch.actions.shape[1]
    np.testing.assert_allclose(got[0], batch_size * got[1], rtol=1e-5, atol=1e-8)


def test_measure_reports_every_estimator_and_part_with_consistent_numbers(tiny_components, tiny_state):
    settings = snr.SnrSettings(num_batches=3, estimators=("coala", "batch_unaware"), target_snr=1.0, seed=4)
    result = snr.measure(tiny_components, tiny_state, settings)
    assert set(result["estimators"]) == {"coala", "batch_unaware"}
    for parts in result["estimators"].values():
        assert set(parts) == set(snr.PARTS)
        for stats in parts.values():
            assert len(stats["per_agent"]) == tiny_components.config.population_size_meta
            assert stats["noise_power"] > 0
            # The pool's numbers are the means of the agents' numbers.
            for key in ("cosine_mean", "noise_power", "signal_power", "norm_mean"):
                assert stats[key] == pytest.approx(np.mean([agent[key] for agent in stats["per_agent"]]))
            if stats["resolved"]:
                assert stats["meta_batch_for_target"] > 0
            else:
                assert stats["meta_batch_lower_bound"] == tiny_components.config.meta_batch_size * 3
    # The batches are drawn from the diagnostic's seed: the same seed gives the same numbers, another seed others.
    again = snr.measure(tiny_components, tiny_state, settings)
    other = snr.measure(tiny_components, tiny_state, dataclasses.replace(settings, seed=5))
    noise = [r["estimators"]["coala"]["total"]["noise_power"] for r in (result, again, other)]
    assert noise[0] == noise[1] != noise[2]
    assert "snr" in snr.format_report(result).lower()


@pytest.mark.slow
def test_the_command_prints_the_table_and_writes_the_json(tmp_path):
    out = tmp_path / "snr.json"
    result = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "snr", "--config=ipd_tiny", "--meta_batches=2",
         "--estimators=coala,mfos", f"--out={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "COALA-PG" in result.stdout and "M-FOS" in result.stdout and f"wrote {out}" in result.stdout
    assert (tmp_path / "snr.png").stat().st_size > 0
    written = json.loads(out.read_text())
    assert written["settings"]["num_batches"] == 2 and set(written["estimators"]) == {"coala", "mfos"}
    assert written["source"]["config"].endswith("ipd_tiny.py")
