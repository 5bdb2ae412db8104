"""Optimisers of meta agents and naive learners: global-norm clipping, then Adam or SGD (Tables 4, 7, 8)."""

from __future__ import annotations

import optax

# Adam's ε inside the square root when a learner differentiates through Adam steps (LOLA-DiCE through the naive
# co-players' updates): d√ν/dν is infinite at ν = 0, so a parameter with a zero gradient would turn the second-order
# gradient into NaN. 1e-16 moves √ν by less than 1e-8 of itself for any |g| > 1e-8 (invisible in float32).
DIFFERENTIABLE_ADAM_EPS_ROOT = 1e-16


def make_optimizer(
    name: str, learning_rate: float, max_grad_norm: float, adam_epsilon: float = 1e-5, adam_eps_root: float = 0.0
) -> optax.GradientTransformation:
    """Returns clip_by_global_norm(max_grad_norm) followed by Adam(lr, eps, eps_root) or SGD(lr).

    Raises:
      ValueError: for an unknown optimiser name.
    """
    if name == "adam":
        step = optax.adam(learning_rate, eps=adam_epsilon, eps_root=adam_eps_root)
    elif name == "sgd":
        step = optax.sgd(learning_rate)
    else:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: adam, sgd")
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), step)
