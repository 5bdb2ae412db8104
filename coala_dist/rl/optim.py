"""Optimisers of meta agents and naive learners: global-norm clipping, then Adam or SGD (Tables 4, 7, 8)."""

from __future__ import annotations

import optax


def make_optimizer(
    name: str, learning_rate: float, max_grad_norm: float, adam_epsilon: float = 1e-5
) -> optax.GradientTransformation:
    """Returns clip_by_global_norm(max_grad_norm) followed by Adam(lr, eps) or SGD(lr).

    Raises:
      ValueError: for an unknown optimiser name.
    """
    if name == "adam":
        step = optax.adam(learning_rate, eps=adam_epsilon)
    elif name == "sgd":
        step = optax.sgd(learning_rate)
    else:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: adam, sgd")
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), step)
