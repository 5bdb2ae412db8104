"""COALA-PG is an unbiased estimator of the shaping gradient (Theorem 3.1); M-FOS and batch-unaware
are not. (Issue: "tests that prove the estimator".)

The problem is small enough that the objective of Eq. 2,

    J̄(θ) = E[(1/B) Σ_b Σ_l rᵇₗ],

can be computed exactly by enumerating every joint outcome of a meta-episode, independently of any
network or of Algorithm 1:

* base game: the prisoner's dilemma, (T, R, P, S) = (2, 1, 0, −1), action 0 = cooperate;
* B parallel trajectories, M inner episodes of T steps each;
* ego (learning-aware) policy: P(cooperate at any step of inner episode m) = σ(θ_m), one parameter
  per inner episode, shared across the B trajectories (the batched policy of §1.4);
* naive co-player: P(cooperate) = σ(ψ). After every inner episode it takes one REINFORCE step on its
  own reward-to-go over the B trajectories it just played,
      ψ ← ψ + η (1/B) Σ_b Σ_t Gᵇₜ ∇_ψ log π(aᵇₜ; ψ),   ∇_ψ log π = 1[cooperate] − σ(ψ),
  so an ego action in episode m moves ψ for every trajectory of episodes m+1, …, M by O(1/B).

∇J̄ comes from `jax.grad` through the enumeration. The score-function estimators use
`batch_lambda_returns` with γ = λ = 1 and no baseline (paper Eq. 5–7):

    COALA-PG:      Σ_b Σ_l ∇ log π(aᵇₗ) · Ψᵇₗ, flags (True, True)
    M-FOS:         Σ_b Σ_l ∇ log π(aᵇₗ) · Ψᵇₗ, flags (True, False)
    batch-unaware: (1/B) Σ_b Σ_l ∇ log π(aᵇₗ) · Ψᵇₗ, flags (False, False)

Two checks per rule: the exact expectation of the estimator (a probability-weighted sum over all
outcomes, no sampling noise) against ∇J̄, and a Monte Carlo mean over 10⁶ sampled meta-episodes with
its standard error. Writing g_cur for the myopic (current-episode) part of ∇J̄ and g_fut for the
shaping part, the expectations are COALA = g_cur + g_fut, M-FOS = B·g_cur + g_fut and
batch-unaware = g_cur + g_fut/B.

The myopic part has a closed form here: whatever the co-player does, cooperating instead of
defecting costs the ego 1 per step, so g_cur,m = −T·σ'(θ_m), which pins the two biases down exactly
(`test_exact_expectations_of_baselines_have_the_predicted_bias`).

Recorded numbers (`python tests/test_unbiasedness.py` prints them; the tests assert, not these
literals). ψ₀ = 0, η = 10, 10⁶ Monte Carlo samples, one component per θ_m:

  "B3_M3_T1" (B = 3, M = 3, T = 1, θ = (0.3, −0.2, 0.5)):
    exact ∇J̄             = (−0.1195, −0.2278, −0.2350)
    COALA   MC mean ± SE = (−0.1199 ± 0.0012, −0.2292 ± 0.0009, −0.2347 ± 0.0002)  |z| ≤ 1.7
    M-FOS   MC mean ± SE = (−0.6095 ± 0.0015, −0.7248 ± 0.0013, −0.7040 ± 0.0007)  |z| ≥ 327
    batch-unaware        = (−0.2034 ± 0.0005, −0.2418 ± 0.0005, −0.2347 ± 0.0002)  |z| = 153,31,1.4
  "B2_M2_T2" (B = 2, M = 2, T = 2, θ = (0.4, −0.3)):
    exact ∇J̄             = (−0.2243, −0.4889)
    COALA   MC mean ± SE = (−0.2226 ± 0.0019, −0.4893 ± 0.0007)  |z| ≤ 0.9
    M-FOS   MC mean ± SE = (−0.7027 ± 0.0024, −0.9786 ± 0.0014)  |z| ≥ 197
    batch-unaware        = (−0.3512 ± 0.0013, −0.4893 ± 0.0007)  |z| = 101, 0.6

Batch-unaware is right for the last inner episode (nothing left to shape) and wrong before it;
M-FOS is wrong everywhere because it over-weights the current episode by B.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.compat import enable_x64
from coala_dist.rl.estimators import get_estimator
from coala_dist.rl.returns import batch_lambda_returns

COOPERATE = 0
# PAYOFF[own action, other action] with (T, R, P, S) = (2, 1, 0, −1), Table 1.
PAYOFF = np.array([[1.0, -1.0], [2.0, 0.0]], np.float32)

NUM_MONTE_CARLO_SAMPLES = 1_000_000
MONTE_CARLO_CHUNK = 250_000
# COALA's Monte Carlo mean must lie within this many standard errors of the exact gradient in every
# component; the biased rules must miss by more than BIAS_STANDARD_ERRORS in at least one.
UNBIASED_STANDARD_ERRORS = 4.0
BIAS_STANDARD_ERRORS = 10.0


class ShapingProblem:
    """The tiny exactly solvable shaping game described in the module docstring."""

    def __init__(
        self,
        batch_size,
        num_inner_episodes,
        inner_episode_length,
        theta,
        naive_init=0.0,
        naive_lr=10.0,
    ):
        self.batch_size = batch_size
        self.num_inner_episodes = num_inner_episodes
        self.inner_episode_length = inner_episode_length
        self.theta = jnp.asarray(theta, jnp.float32)
        self.naive_init = naive_init
        self.naive_lr = naive_lr
        assert self.theta.shape == (num_inner_episodes,)

    @property
    def episode_shape(self):
        """Actions of one player in one meta-episode: [M, B, T]."""
        return (self.num_inner_episodes, self.batch_size, self.inner_episode_length)

    def _naive_update(self, psi, naive_actions, naive_rewards):
        """One REINFORCE step of the naive learner on its reward-to-go. Arrays [B, T]."""
        reward_to_go = jnp.cumsum(naive_rewards[:, ::-1], axis=1)[:, ::-1]
        score = (naive_actions == COOPERATE) - jax.nn.sigmoid(psi)
        return psi + self.naive_lr * jnp.mean(jnp.sum(reward_to_go * score, axis=1))

    def play(self, theta, ego_actions, naive_actions):
        """Replays one meta-episode with given actions.

        Args:
          theta: [M] ego parameters.
          ego_actions: [M, B, T] int, 0 = cooperate.
          naive_actions: [M, B, T] int.

        Returns:
          log_prob: scalar, log-probability of all actions (ego and naive).
          ego_rewards: [B, L] ego rewards, l = m·T + t.
          ego_scores: [B, L, M] ∇_θ log π(aᵇₗ) of the ego policy.
        """
        payoff = jnp.asarray(PAYOFF, theta.dtype)
        psi = jnp.asarray(self.naive_init, theta.dtype)
        log_prob = jnp.zeros((), theta.dtype)
        rewards, scores = [], []
        # A Python loop over M ≤ 3 inner episodes: this is the oracle, not library code.
        for m in range(self.num_inner_episodes):
            ego, naive = ego_actions[m], naive_actions[m]
            ego_cooperates, naive_cooperates = ego == COOPERATE, naive == COOPERATE
            log_prob += jnp.sum(
                jnp.where(
                    ego_cooperates,
                    jax.nn.log_sigmoid(theta[m]),
                    jax.nn.log_sigmoid(-theta[m]),
                )
            )
            log_prob += jnp.sum(
                jnp.where(naive_cooperates, jax.nn.log_sigmoid(psi), jax.nn.log_sigmoid(-psi))
            )
            rewards.append(payoff[ego, naive])
            score = ego_cooperates - jax.nn.sigmoid(theta[m])  # d log σ(±θ)/dθ
            episode_indicator = jax.nn.one_hot(m, self.num_inner_episodes, dtype=theta.dtype)
            scores.append(score[:, :, None] * episode_indicator[None, None, :])
            psi = self._naive_update(psi, naive, payoff[naive, ego])
        return log_prob, jnp.concatenate(rewards, axis=1), jnp.concatenate(scores, axis=1)

    def all_outcomes(self):
        """Every joint outcome: ego and naive actions, each [K, M, B, T], K = 4^(M·B·T)."""
        num_actions = 2 * int(np.prod(self.episode_shape))
        bits = np.array(list(itertools.product([0, 1], repeat=num_actions)), np.int32)
        ego, naive = np.split(bits, 2, axis=1)
        return (
            jnp.asarray(ego.reshape(-1, *self.episode_shape)),
            jnp.asarray(naive.reshape(-1, *self.episode_shape)),
        )

    def exact_objective(self, theta, ego_actions, naive_actions):
        """Eq. 2 by enumeration: Σ_K P(K; θ) · (1/B) Σ_b Σ_l rᵇₗ(K)."""
        log_prob, rewards, _ = jax.vmap(self.play, in_axes=(None, 0, 0))(
            theta, ego_actions, naive_actions
        )
        return jnp.sum(jnp.exp(log_prob) * jnp.sum(rewards, axis=(1, 2)) / self.batch_size)

    def estimate(self, rewards, scores, estimator):
        """Score-function gradient estimate of one meta-episode under a rule; [B, L], [B, L, M]."""
        average_future, normalize_current, _ = get_estimator(estimator).flags
        weights = batch_lambda_returns(
            rewards,
            jnp.zeros_like(rewards),
            1.0,
            1.0,
            average_future,
            normalize_current,
            self.inner_episode_length,
        )
        gradient = jnp.einsum("bl,blm->m", weights, scores)
        # paper Eq. 5–7: COALA and M-FOS sum over b, batch-unaware averages.
        return gradient / self.batch_size if estimator == "batch_unaware" else gradient

    def sample_episode(self, key):
        """Samples one meta-episode's actions: ([M, B, T], [M, B, T])."""
        shape = (self.batch_size, self.inner_episode_length)
        payoff = jnp.asarray(PAYOFF)

        def _inner_episode(psi, inputs):
            theta_m, episode_key = inputs
            ego_key, naive_key = jax.random.split(episode_key)
            # Defect (1) unless the uniform draw falls under P(cooperate).
            ego = (jax.random.uniform(ego_key, shape) >= jax.nn.sigmoid(theta_m)).astype(jnp.int32)
            naive = (jax.random.uniform(naive_key, shape) >= jax.nn.sigmoid(psi)).astype(jnp.int32)
            return self._naive_update(psi, naive, payoff[naive, ego]), (ego, naive)

        keys = jax.random.split(key, self.num_inner_episodes)
        psi0 = jnp.asarray(self.naive_init, jnp.float32)
        _, (ego, naive) = jax.lax.scan(_inner_episode, psi0, (self.theta, keys))
        return ego, naive


ESTIMATOR_NAMES = ("coala", "mfos", "batch_unaware")
PROBLEMS = {
    # 4^9 = 262144 outcomes.
    "B3_M3_T1": dict(
        batch_size=3, num_inner_episodes=3, inner_episode_length=1, theta=(0.3, -0.2, 0.5)
    ),
    # 4^8 = 65536 outcomes; T = 2 exercises the rest-of-current-episode sums.
    "B2_M2_T2": dict(batch_size=2, num_inner_episodes=2, inner_episode_length=2, theta=(0.4, -0.3)),
}


@functools.cache
def solve(problem_name):
    """Exact gradient, exact estimator expectations and Monte Carlo statistics of one problem."""
    problem = ShapingProblem(**PROBLEMS[problem_name])
    # The enumeration runs in float64 so that "exact" means exact to ~1e-12, not float32 round-off
    # accumulated over 4^9 outcomes.
    with enable_x64():
        exact = _solve_exactly(problem)
    return dict(problem=problem, **exact, monte_carlo=_monte_carlo(problem))


def _solve_exactly(problem):
    """Enumerates all outcomes: ∇J̄ by jax.grad and by central differences, Σ_K P(K), E[ĝ]."""
    ego_all, naive_all = problem.all_outcomes()
    theta = problem.theta.astype(jnp.float64)
    # Outcomes are jit arguments, not closed-over constants, which XLA would try to constant-fold.
    objective = jax.jit(problem.exact_objective)
    step = 1e-4
    finite_difference_gradient = [
        (
            float(objective(theta + step * unit, ego_all, naive_all))
            - float(objective(theta - step * unit, ego_all, naive_all))
        )
        / (2 * step)
        for unit in np.eye(problem.num_inner_episodes)
    ]

    @jax.jit
    def exact_statistics(theta, ego_actions, naive_actions):
        log_prob, rewards, scores = jax.vmap(problem.play, in_axes=(None, 0, 0))(
            theta, ego_actions, naive_actions
        )
        probability = jnp.exp(log_prob)
        expectations = {}
        for name in ESTIMATOR_NAMES:
            estimates = jax.vmap(functools.partial(problem.estimate, estimator=name))(
                rewards, scores
            )
            expectations[name] = probability @ estimates
        return jnp.sum(probability), expectations

    total_probability, expectations = exact_statistics(theta, ego_all, naive_all)
    return dict(
        exact_gradient=np.asarray(jax.jit(jax.grad(objective))(theta, ego_all, naive_all)),
        finite_difference_gradient=np.array(finite_difference_gradient),
        total_probability=float(total_probability),
        expectations={name: np.asarray(value) for name, value in expectations.items()},
    )


def _monte_carlo(problem):
    """Mean and standard error of each estimator over NUM_MONTE_CARLO_SAMPLES meta-episodes."""

    @jax.jit
    def chunk_sums(key):
        keys = jax.random.split(key, MONTE_CARLO_CHUNK)
        ego, naive = jax.vmap(problem.sample_episode)(keys)
        _, rewards, scores = jax.vmap(problem.play, in_axes=(None, 0, 0))(problem.theta, ego, naive)
        sums = {}
        for name in ESTIMATOR_NAMES:
            estimates = jax.vmap(functools.partial(problem.estimate, estimator=name))(
                rewards, scores
            )
            sums[name] = (jnp.sum(estimates, 0), jnp.sum(jnp.square(estimates), 0))
        return sums

    totals = {name: np.zeros((2, problem.num_inner_episodes)) for name in ESTIMATOR_NAMES}
    num_chunks = NUM_MONTE_CARLO_SAMPLES // MONTE_CARLO_CHUNK
    for key in jax.random.split(jax.random.PRNGKey(0), num_chunks):
        for name, (total, total_of_squares) in chunk_sums(key).items():
            totals[name] += np.stack([total, total_of_squares]).astype(np.float64)
    statistics = {}
    for name, (total, total_of_squares) in totals.items():
        mean = total / NUM_MONTE_CARLO_SAMPLES
        variance = total_of_squares / NUM_MONTE_CARLO_SAMPLES - mean**2
        statistics[name] = (mean, np.sqrt(variance / NUM_MONTE_CARLO_SAMPLES))
    return statistics


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_enumeration_is_a_distribution_and_its_gradient_matches_finite_differences(problem_name):
    # Checks the oracle: probabilities sum to 1, and jax.grad agrees with central differences.
    result = solve(problem_name)
    np.testing.assert_allclose(result["total_probability"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        result["exact_gradient"], result["finite_difference_gradient"], rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_exact_expectation_of_coala_equals_the_gradient(problem_name):
    # No sampling noise: Σ_K P(K) ĝ_COALA(K) must equal ∇J̄ to float32 accuracy.
    result = solve(problem_name)
    np.testing.assert_allclose(
        result["expectations"]["coala"], result["exact_gradient"], rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_exact_expectations_of_baselines_have_the_predicted_bias(problem_name):
    # ∇J̄ = g_cur + g_fut with the myopic part g_cur,m = −T·σ'(θ_m) in closed form (see the module
    # docstring); M-FOS estimates B·g_cur + g_fut and batch-unaware g_cur + g_fut/B.
    result = solve(problem_name)
    problem = result["problem"]
    batch_size, exact = problem.batch_size, result["exact_gradient"]
    probability = jax.nn.sigmoid(np.asarray(problem.theta, np.float64))
    myopic = -problem.inner_episode_length * probability * (1 - probability)
    shaping = exact - myopic
    np.testing.assert_allclose(
        result["expectations"]["mfos"], batch_size * myopic + shaping, rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        result["expectations"]["batch_unaware"],
        myopic + shaping / batch_size,
        rtol=1e-6,
        atol=1e-9,
    )
    # Shaping matters in this problem (else batch-unaware would be trivially right).
    assert np.max(np.abs(shaping)) > 0.1


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_monte_carlo_coala_is_unbiased_and_baselines_are_not(problem_name):
    result = solve(problem_name)
    exact = result["exact_gradient"]
    mean, standard_error = result["monte_carlo"]["coala"]
    z_scores = np.abs(mean - exact) / standard_error
    assert np.all(z_scores < UNBIASED_STANDARD_ERRORS), (exact, mean, standard_error)
    for name in ("mfos", "batch_unaware"):
        mean, standard_error = result["monte_carlo"][name]
        z_scores = np.abs(mean - exact) / standard_error
        assert np.max(z_scores) > BIAS_STANDARD_ERRORS, (name, exact, mean, standard_error)


def _report():
    np.set_printoptions(precision=4, suppress=True)
    for problem_name in PROBLEMS:
        result = solve(problem_name)
        exact = result["exact_gradient"]
        print(f"{problem_name}: exact gradient {exact}")
        for name in ESTIMATOR_NAMES:
            mean, standard_error = result["monte_carlo"][name]
            print(
                f"  {name:13s} E[estimate] = {result['expectations'][name]}"
                f"  MC mean = {mean} ± {standard_error}"
                f"  |z| = {np.abs(mean - exact) / standard_error}"
            )


if __name__ == "__main__":
    _report()
