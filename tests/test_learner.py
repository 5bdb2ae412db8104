"""The learner: a short run of the tiny config, rule selection per co-player type, non-finite updates skipped."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import with_fields

from coala_dist.builder import make_learner
from coala_dist.learner import episodes_per_gradient_chunk
from coala_dist.rl.estimators import advantages


def _max_abs_diff(tree_a, tree_b) -> float:
    diffs = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), tree_a, tree_b)
    return float(max(jax.tree_util.tree_leaves(diffs)))


def _per_agent_change(params_before, params_after) -> np.ndarray:
    """Largest parameter change of each meta agent (leading axis)."""
    diffs = jax.tree_util.tree_map(
        lambda a, b: jnp.max(jnp.abs(a - b).reshape(a.shape[0], -1), axis=1), params_before, params_after
    )
    return np.max(np.stack(jax.tree_util.tree_leaves(diffs)), axis=0)


@pytest.fixture(scope="module")
def update(tiny_components):
    return tiny_components.learner_update


@pytest.fixture(scope="module")
def batch(tiny_episodes, tiny_state, tiny_components):
    return tiny_episodes(
        tiny_state.meta_params, tiny_state.naive_params, tiny_state.run_key, tiny_state.version,
        tiny_components.rollout.iteration_indices(),
    )


def test_three_iterations_update_every_agent(tiny_components, tiny_config, tiny_episodes, update):
    state = tiny_components.learner.init(jax.random.PRNGKey(0))
    initial = state.meta_params
    indices = tiny_components.rollout.iteration_indices()
    for it in range(3):
        batch = tiny_episodes(state.meta_params, state.naive_params, state.run_key, state.version, indices)
        state, metrics = update(state, batch)
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
        assert int(state.version) == it + 1 and int(state.step) == it + 1
    change = _per_agent_change(initial, state.meta_params)
    assert change.shape == (tiny_config.population_size_meta,)
    assert np.all(change > 1e-6), f"every meta agent must move: {change}"
    assert int(state.skipped_updates) == 0
    # The static naive initialisations are never trained.
    assert _max_abs_diff(tiny_components.learner.init(jax.random.PRNGKey(0)).naive_params, state.naive_params) == 0


def test_non_finite_update_is_skipped_and_counted(tiny_state, batch, update):
    poisoned = batch._replace(rewards=batch.rewards.at[0, 0, 0].set(jnp.nan))
    state, metrics = update(tiny_state, poisoned)
    # Agent 0 saw the NaN: it keeps its parameters; agent 1 did not and still learns.
    change = _per_agent_change(tiny_state.meta_params, state.meta_params)
    assert change[0] == 0.0 and change[1] > 0.0
    assert int(state.skipped_updates) == 1
    assert int(state.version) == int(tiny_state.version) + 1
    assert float(metrics["learner/skipped_updates"]) == 1.0


@pytest.mark.slow
def test_rule_only_matters_against_naive_coplayers(tiny_config, tiny_components, tiny_state, batch, update):
    """Against meta co-players every rule is standard PG, so COALA and batch-unaware updates coincide there;
    against naive co-players they differ (paper App. A.1, App. A.4)."""
    config = tiny_config.copy_and_resolve_references()
    config.estimator = "batch_unaware"
    other = make_learner(config, tiny_components.policy, tiny_components.env.obs_dim)
    other_update = jax.jit(other.update)
    all_meta = batch._replace(coplayer_is_naive=jnp.zeros_like(batch.coplayer_is_naive))
    coala_state, _ = update(tiny_state, all_meta)
    unaware_state, _ = other_update(tiny_state, all_meta)
    assert _max_abs_diff(coala_state.meta_params, unaware_state.meta_params) < 1e-6
    all_naive = batch._replace(coplayer_is_naive=jnp.ones_like(batch.coplayer_is_naive))
    coala_state, _ = update(tiny_state, all_naive)
    unaware_state, _ = other_update(tiny_state, all_naive)
    assert _max_abs_diff(coala_state.meta_params, unaware_state.meta_params) > 1e-5


@pytest.mark.slow
def test_per_agent_rules_match_single_rule_learners(tiny_config, tiny_components, tiny_episodes):
    """App. H.3: a pool with agent_estimators updates each agent exactly as a learner built with its one rule."""
    from conftest import load_config

    from coala_dist.builder import build

    config = load_config("ipd_tiny")
    config.agent_estimators = ("coala", "mfos")
    mixed = build(config)
    state = mixed.learner.init(jax.random.PRNGKey(0))
    # The per-agent rules change only the learner: the session's compiled rollout of the same config gives the batch.
    batch = tiny_episodes(
        state.meta_params, state.naive_params, state.run_key, state.version, mixed.rollout.iteration_indices()
    )
    new_mixed, _ = jax.jit(mixed.learner.update)(state, batch)
    for agent, rule in enumerate(config.agent_estimators):
        single_config = load_config("ipd_tiny")
        single_config.estimator = rule
        # The session's tiny experiment is the single-rule learner of its own estimator (compiled once).
        single_update = (
            tiny_components.learner_update
            if rule == tiny_config.estimator
            else jax.jit(build(single_config).learner.update)
        )
        single, _ = single_update(state, batch)
        for got, want in zip(
            jax.tree_util.tree_leaves(new_mixed.meta_params), jax.tree_util.tree_leaves(single.meta_params), strict=True
        ):
            np.testing.assert_allclose(got[agent], want[agent], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "num_episodes, batch_size, max_trajectories, expected",
    [(64, 16, 64, 4), (64, 16, 0, 64), (64, 16, 8, 1), (6, 4, 16, 3), (6, 4, 12, 3), (7, 4, 16, 1), (2, 4, 1000, 2)],
)
def test_gradient_chunks_are_the_largest_divisor_that_fits(num_episodes, batch_size, max_trajectories, expected):
    assert episodes_per_gradient_chunk(num_episodes, batch_size, max_trajectories) == expected


@pytest.mark.slow
def test_chunked_gradient_equals_the_one_pass_gradient(tiny_config, tiny_components, tiny_state, batch, update):
    """The tiny config accumulates each minibatch's gradient over one-episode chunks; the one-pass learner
    (gradient_chunk_trajectories = 0) differentiates the minibatch's mean loss directly. Same update up to float
    rounding, and the same statistics."""
    assert episodes_per_gradient_chunk(2, tiny_config.batch_size, tiny_config.compute.gradient_chunk_trajectories) == 1
    config = tiny_config.copy_and_resolve_references()
    config.compute.gradient_chunk_trajectories = 0
    one_pass = make_learner(config, tiny_components.policy, tiny_components.env.obs_dim)
    chunked_state, chunked_metrics = update(tiny_state, batch)
    one_pass_state, one_pass_metrics = jax.jit(one_pass.update)(tiny_state, batch)
    assert _max_abs_diff(tiny_state.meta_params, chunked_state.meta_params) > 1e-4  # the update is not a no-op
    for got, want in zip(
        jax.tree_util.tree_leaves(chunked_state), jax.tree_util.tree_leaves(one_pass_state), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for name, value in one_pass_metrics.items():
        np.testing.assert_allclose(chunked_metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_jitted_init_matches_the_eager_initialisers(tiny_components):
    """`Learner.init` runs the initialisers as one program compiled at -O0; op by op they give the same values up
    to float rounding, and under a trace (eval_shape) init is traced, not compiled."""
    key = jax.random.PRNGKey(3)
    jitted = tiny_components.learner.init(key)
    eager = tiny_components.learner._init(key)
    for got, want in zip(jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(eager), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    abstract = jax.eval_shape(tiny_components.learner.init, key)
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(jitted)


# The paper's table (paper Eq. 5–7), written out independently of rl.estimators.REGISTRY:
# rule -> (average_future_episodes, normalize_current_episode, policy gradient summed over the B trajectories).
_PAPER_TABLE = {"coala": (True, True, True), "mfos": (True, False, True), "batch_unaware": (False, False, False)}


@pytest.mark.parametrize("rules", [("coala", "mfos"), ("batch_unaware", "coala")])
@pytest.mark.slow
def test_update_matches_a_per_episode_oracle_of_eq5(tiny_config, tiny_components, batch, tiny_state, rules):
    """One A2C + SGD step equals −lr × an oracle gradient computed episode by episode (Python loop, no vmap, no
    chunking): (1/N) Σₙ sₙ ∇θ[−mean_{b,l} log π(aᵇₗ|hᵇₗ)·Aᵇₗ], with sₙ = B for a naive-opponent episode of a rule
    that sums over the batch (Eq. 5) and 1 otherwise (Eq. 6, meta co-players), and Aₙ computed with the rule's flags
    against naive co-players and the batch-unaware flags against meta co-players."""

    learning_rate = 0.5
    config = with_fields(
        tiny_config,
        agent_estimators=rules,
        meta__algorithm="a2c",
        meta__optimizer="sgd",
        meta__learning_rate=learning_rate,
        meta__max_grad_norm=1e9,
        meta__value_coefficient=0.0,
        meta__entropy_coefficient=0.0,
        meta__advantage_normalization=False,
        meta__reward_scale=1.0,
    )
    learner = make_learner(config, tiny_components.policy, tiny_components.env.obs_dim)
    new_state, _ = jax.jit(learner.update)(tiny_state, batch)
    policy = tiny_components.policy
    num_agents, per_agent = config.population_size_meta, config.meta_batch_size
    batch_size, length = batch.actions.shape[1:]
    assert bool(jnp.any(batch.coplayer_is_naive)) and not bool(jnp.all(batch.coplayer_is_naive))

    def episode_objective(params, n, adv):
        segment_pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch_size, length))
        output, _ = policy.apply({"params": params}, batch.obs[n], segment_pos)
        log_probs = jax.nn.log_softmax(output.logits)
        logp = jnp.take_along_axis(log_probs, batch.actions[n][..., None], axis=-1)[..., 0]
        return -jnp.mean(logp * adv)

    # Compiled once for all episodes (n is traced); op by op, every episode re-ran the policy's scans eagerly.
    episode_gradient = jax.jit(jax.grad(episode_objective))
    episode_advantages = jax.jit(
        advantages,
        static_argnames=(
            "average_future_episodes", "normalize_current_episode", "discount", "gae_lambda", "inner_episode_length"
        ),
    )

    for agent, rule in enumerate(rules):
        params = jax.tree_util.tree_map(lambda x, i=agent: x[i], tiny_state.meta_params)
        oracle = jax.tree_util.tree_map(jnp.zeros_like, params)
        for n in range(agent * per_agent, (agent + 1) * per_agent):
            naive = bool(batch.coplayer_is_naive[n])
            average_future, normalize_current, sums = _PAPER_TABLE[rule] if naive else _PAPER_TABLE["batch_unaware"]
            adv = episode_advantages(
                batch.rewards[n],
                batch.behaviour_values[n],
                average_future_episodes=average_future,
                normalize_current_episode=normalize_current,
                discount=config.meta.discount,
                gae_lambda=config.meta.gae_lambda,
                inner_episode_length=config.env.inner_episode_length,
            )
            weight = (batch_size if sums else 1) / per_agent
            grad = episode_gradient(params, n, adv)
            oracle = jax.tree_util.tree_map(lambda t, g, w=weight: t + w * g, oracle, grad)
        # The gradient the update applied: (θ − θ') / lr.
        applied = jax.tree_util.tree_map(
            lambda p, x, i=agent: (p - x[i]) / learning_rate, params, new_state.meta_params
        )
        for want, got in zip(jax.tree_util.tree_leaves(oracle), jax.tree_util.tree_leaves(applied), strict=True):
            scale = float(jnp.max(jnp.abs(want)))
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3 * scale + 1e-6)
    assert num_agents == len(rules)
