"""The FLOP model of the Hawk policy (paper App. B.3) and this machine's dense-matmul speed: the benchmark's limit.

Nearly all arithmetic of the policy is in its dense layers; per agent-step (one time step of one sequence, batch
rows b) each `[b, k] × [k, n]` matmul costs 2·k·n FLOPs. Per residual block (d = embed_dim, e = lru_width,
f = mlp_width, h = num_heads; paper App. B.3):

    linear_x, linear_y   d → e each                 2 · 2·d·e
    RG-LRU gates W_a, W_x   block-diagonal, h blocks of (e/h)²    2 · 2·e²/h   (dense e×e as executed: 2 · 2·e²)
    linear_out           e → d                      2·e·d
    gated MLP            d → 2f, f → d              2·d·2f + 2·f·d

plus the observation embedding (obs_dim → d) and the two readouts (d → |A| and d → 1). The causal convolution is
depthwise (2·w·e FLOPs) and, like the norms, gates and the recurrence, is elementwise: it is left out, which is
why XLA's own count (`compiled.cost_analysis()`, also reported by the benchmark) is 10–20% higher.

A training iteration costs, per ego agent-step (`training_flops_per_agent_step`, F = forward FLOPs per step; a
backward pass is ≈ 2F, one matmul for the input gradient and one for the weight gradient per layer):

    acting            2F                     the ego and its co-player each run the policy once per step;
    naive learning    3F · p_naive · (M−1)/M a naive co-player re-runs forward + backward on its B·T steps after
                                             each inner episode but the last (A2C, paper App. B.2);
    meta update       3F · epochs            PPO: every epoch passes forward + backward over every step once
                                             (A2C: one pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from coala_dist.networks.policy import HawkPolicy


def policy_forward_flops_per_step(
    *,
    obs_dim: int,
    num_actions: int,
    embed_dim: int,
    lru_width: int,
    mlp_width: int,
    num_heads: int,
    num_blocks: int,
    dense_gates: bool = False,
) -> int:
    """Matmul FLOPs of one forward step of the Hawk policy for one sequence (see the module docstring).

    Args:
      obs_dim, num_actions: the environment's sizes.
      embed_dim, lru_width, mlp_width, num_heads, num_blocks: d, e, f, h and the block count (config.policy).
      dense_gates: count the RG-LRU gates as the dense e×e matmuls the implementation runs
        (coala_dist/networks/hawk.py `block_diagonal_linear`) instead of their h blocks of (e/h)².

    Returns:
      FLOPs (2 per multiply-add).
    """
    d, e, f = embed_dim, lru_width, mlp_width
    gate_macs = e * e if dense_gates else e * (e // num_heads)
    block_macs = 2 * d * e + 2 * gate_macs + e * d + d * 2 * f + f * d
    macs = obs_dim * d + num_blocks * block_macs + d * (num_actions + 1)
    return 2 * macs


def policy_flops_from_config(config, obs_dim: int, num_actions: int, dense_gates: bool = False) -> int:
    """`policy_forward_flops_per_step` with the sizes of `config.policy`."""
    p = config.policy
    return policy_forward_flops_per_step(
        obs_dim=obs_dim,
        num_actions=num_actions,
        embed_dim=p.embed_dim,
        lru_width=p.lru_width,
        mlp_width=p.mlp_width,
        num_heads=p.num_heads,
        num_blocks=p.num_blocks,
        dense_gates=dense_gates,
    )


def training_flops_per_agent_step(config, forward_flops: float) -> dict[str, float]:
    """FLOPs a training iteration spends per ego agent-step, by phase (see the module docstring).

    Args:
      config: the experiment config (p_naive, M, the meta algorithm and its epochs).
      forward_flops: F, forward FLOPs of the policy per step.

    Returns:
      {"forward": F, "acting": 2F, "naive_forward_backward": 3F·p_naive·(M−1)/M,
       "meta_forward_backward": 3F·epochs, "total": their sum (acting + naive + meta)}.
    """
    num_inner = config.num_inner_episodes
    epochs = config.meta.ppo_num_epochs if config.meta.algorithm == "ppo" else 1
    acting = 2.0 * forward_flops
    naive = 3.0 * forward_flops * config.p_naive * (num_inner - 1) / num_inner
    meta = 3.0 * forward_flops * epochs
    return {
        "forward": float(forward_flops),
        "acting": acting,
        "naive_forward_backward": naive,
        "meta_forward_backward": meta,
        "total": acting + naive + meta,
    }


def _xla_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


def xla_policy_flops_per_step(policy: HawkPolicy, params: Any, obs_dim: int, rows: int, length: int) -> dict:
    """XLA's own FLOP count (compiled `cost_analysis()`) of the policy, per agent-step.

    Three programs: one acting step ([rows, 1] with a cache, as the rollout runs it), a forward pass over sequences
    ([rows, length], as the learner runs it) and its forward + backward (the gradient of Σ logits + Σ values). The
    elementwise RG-LRU recurrence sits in a loop that XLA counts once, so the sequence counts miss part of the
    elementwise work; the matmuls run outside the loop and are counted in full.

    Returns:
      {"acting_step", "sequence_forward", "sequence_forward_backward"}: FLOPs per agent-step (NaN if XLA gives none).
    """
    step_obs = jnp.zeros((rows, 1, obs_dim), jnp.float32)
    step_pos = jnp.zeros((rows, 1), jnp.int32)
    obs = jnp.zeros((rows, length, obs_dim), jnp.float32)
    pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))

    def act(p, o, s):
        return policy.apply({"params": p}, o, s, policy.init_cache(rows))[0]

    def forward(p, o, s):
        return policy.apply({"params": p}, o, s)[0]

    def loss(p, o, s):
        out = forward(p, o, s)
        return out.logits.sum() + out.value.sum()

    counts = {
        "acting_step": _xla_flops(jax.jit(act).lower(params, step_obs, step_pos).compile()) / rows,
        "sequence_forward": _xla_flops(jax.jit(forward).lower(params, obs, pos).compile()) / (rows * length),
        "sequence_forward_backward": _xla_flops(jax.jit(jax.grad(loss)).lower(params, obs, pos).compile())
        / (rows * length),
    }
    return counts


def best_time(run: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run` (after one untimed warm-up call), in seconds."""
    jax.block_until_ready(run())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        best = min(best, time.perf_counter() - start)
    return best


def measure_matmul_flops_per_s(rows: int, inner: int, outer: int, repeats: int = 10) -> float:
    """This machine's speed on one dense `[rows, inner] × [inner, outer]` float32 matmul (jitted), FLOP/s.

    The fastest of `repeats` runs counts: the machine's best, so the fraction of it a workload reaches is an
    upper bound on what that workload leaves unused.
    """
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, inner), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(1), (inner, outer), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    seconds = best_time(lambda: matmul(x, w), repeats)
    return 2.0 * rows * inner * outer / seconds


def policy_matmul_macs(config, obs_dim: int, num_actions: int) -> dict[tuple[int, int], int]:
    """Multiply-adds per step of each dense matmul shape (inner, outer) of the policy, as executed (gates dense).

    Twice their sum is `policy_flops_from_config(..., dense_gates=True)`.
    """
    p = config.policy
    d, e, f = p.embed_dim, p.lru_width, p.mlp_width
    layers = (
        ((obs_dim, d), 1),  # observation embedding
        ((d, e), 2 * p.num_blocks),  # linear_x, linear_y
        ((e, e), 2 * p.num_blocks),  # RG-LRU gates W_a, W_x (block-diagonal, run dense)
        ((e, d), p.num_blocks),  # linear_out
        ((d, 2 * f), p.num_blocks),  # gated MLP up (both branches in one kernel)
        ((f, d), p.num_blocks),  # gated MLP down
        ((d, num_actions), 1),  # policy readout
        ((d, 1), 1),  # value readout
    )
    macs: dict[tuple[int, int], int] = {}
    for shape, count in layers:
        macs[shape] = macs.get(shape, 0) + count * shape[0] * shape[1]
    return macs


def weighted_matmul_flops_per_s(rates: dict[tuple[int, int], float], macs: dict[tuple[int, int], float]) -> float:
    """FLOP/s of a step made of several matmul shapes, each at its own measured speed: total FLOPs over the sum of
    each shape's time (a harmonic mean weighted by the step's FLOPs per shape)."""
    total = sum(macs.values())
    seconds = sum(m / rates[shape] for shape, m in macs.items())
    return float(total / seconds) if seconds > 0 else float("nan")
