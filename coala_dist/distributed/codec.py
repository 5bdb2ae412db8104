"""The two things that travel through the replay node, as flat lists of numpy arrays with static shapes.

* one `MetaEpisode` (the data contract, docs/architecture.md#the-data-contract) — the shapes of a single episode,
  from `jax.eval_shape` of the rollout, so a table's signature is fixed by the config;
* `PublishedParams` — what an actor needs to roll out version v: every meta agent's parameters, the naive
  initialisations, the run key, v itself (the version travels with the parameters) and how many actors share v's
  work units (which changes when a running job is scaled).

A `TreeCodec` turns a pytree into its leaves (jax.tree_util order) and back; it holds no JAX state and imports no
TensorFlow, so the replay transports (replay.py) only ever see `(shape, dtype)` specs and numpy arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coala_dist.builder import Components
from coala_dist.learner import TrainState
from coala_dist.rollout import MetaEpisode


class LeafSpec(NamedTuple):
    """Shape and numpy dtype name of one array."""

    shape: tuple[int, ...]
    dtype: str


class PublishedParams(NamedTuple):
    """The parameters of one policy version, as the learner publishes them.

    Attributes:
      meta_params: every meta agent's parameters, stacked on [P].
      naive_params: the naive initialisations co-players start from (`Learner.naive_initialisations`), [K] or [P].
      run_key: the run's root key; episode keys are folded from it.
      version: [] int32, the version of `meta_params`.
      num_actors: [] int32, how many actors share this version's work units (`work.actor_work_units`); actors
        numbered from it on retire or wait (`coala scale`).
    """

    meta_params: Any
    naive_params: Any
    run_key: jax.Array
    version: jax.Array
    num_actors: Any


@dataclasses.dataclass(frozen=True)
class TreeCodec:
    """Flattens a pytree of fixed-shape arrays to a list of numpy arrays and back.

    Attributes:
      treedef: the tree structure.
      specs: one `LeafSpec` per leaf, in `jax.tree_util` order.
    """

    treedef: Any
    specs: tuple[LeafSpec, ...]

    @classmethod
    def from_abstract(cls, tree: Any) -> TreeCodec:
        """From a tree of arrays or `jax.ShapeDtypeStruct`s."""
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return cls(treedef, tuple(LeafSpec(tuple(leaf.shape), np.dtype(leaf.dtype).name) for leaf in leaves))

    def flatten(self, tree: Any) -> list[np.ndarray]:
        """The leaves of `tree` as numpy arrays; raises ValueError if a shape or dtype differs from the spec."""
        leaves = jax.tree_util.tree_leaves(tree)
        if len(leaves) != len(self.specs):
            raise ValueError(f"expected {len(self.specs)} leaves, got {len(leaves)}")
        arrays = [np.asarray(leaf) for leaf in leaves]
        for array, spec in zip(arrays, self.specs, strict=True):
            if array.shape != spec.shape or array.dtype.name != spec.dtype:
                raise ValueError(f"leaf {array.shape} {array.dtype} does not match {spec}")
        return arrays

    def unflatten(self, leaves: Sequence[np.ndarray]) -> Any:
        return jax.tree_util.tree_unflatten(self.treedef, list(leaves))

    def unstack(self, batched: Any) -> list[list[np.ndarray]]:
        """A tree whose leaves have a leading [n] axis -> n flat items."""
        leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(batched))]
        count = leaves[0].shape[0]
        return [self.flatten(jax.tree_util.tree_unflatten(self.treedef, [x[i] for x in leaves])) for i in range(count)]

    def stack(self, items: Sequence[Sequence[np.ndarray]]) -> Any:
        """n flat items -> one tree whose leaves have a leading [n] axis (numpy)."""
        columns = zip(*items, strict=True)
        return self.unflatten([np.stack(column) for column in columns])


def _abstract_state(components: Components) -> TrainState:
    # An abstract key: shapes only, no device is touched.
    return jax.eval_shape(components.learner.init, jax.ShapeDtypeStruct((2,), jnp.uint32))


def published_params(components: Components, state: TrainState, num_actors: int = 1) -> PublishedParams:
    """What the learner publishes for `state.version`, with the actor count that version is rolled out by."""
    return PublishedParams(
        meta_params=state.meta_params,
        naive_params=components.learner.naive_initialisations(state),
        run_key=state.run_key,
        version=state.version,
        num_actors=np.int32(num_actors),
    )


def params_codec(components: Components) -> TreeCodec:
    """The codec of `PublishedParams` for this experiment."""
    return TreeCodec.from_abstract(published_params(components, _abstract_state(components)))


def episode_codec(components: Components, episodes_per_unit: int) -> TreeCodec:
    """The codec of ONE `MetaEpisode` of this experiment.

    Shapes come from `jax.eval_shape` of the very function actors call (`components.rollout_episodes` on a [1, n]
    work unit), which also primes its trace cache for the actors of this process.
    """
    state = _abstract_state(components)
    naive = jax.eval_shape(components.learner.naive_initialisations, state)
    indices = jax.ShapeDtypeStruct((1, episodes_per_unit), jnp.int32)
    batch: MetaEpisode = jax.eval_shape(
        components.rollout_episodes, state.meta_params, naive, state.run_key, state.version, indices
    )
    single = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batch)
    return TreeCodec.from_abstract(single)
