"""Helper of test_checkpoint.py, run in a subprocess with 8 fake CPU devices: restore the checkpoint in argv[1]
replicated over all devices, apply one update to the saved batch, write the new meta-agent params to updated.npz."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import load_config  # noqa: E402

from coala_dist import xla_flags  # noqa: E402

xla_flags.configure()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from coala_dist.builder import build  # noqa: E402
from coala_dist.checkpoint import Checkpointer, abstract_train_state  # noqa: E402


def main(workdir: str) -> None:
    config = load_config("ipd_tiny")
    components = build(config)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = abstract_train_state(components.learner.init, jax.random.PRNGKey(config.seed), replicated)
    state = Checkpointer(workdir, save_every=1, max_to_keep=2).restore_latest(abstract, config)
    assert state.meta_params["obs_embedding"]["kernel"].sharding == replicated
    saved = np.load(os.path.join(workdir, "batch.npz"))
    treedef = jax.tree_util.tree_structure(  # traced, not compiled or run: only the batch's structure is needed
        jax.eval_shape(
            components.rollout_episodes,
            state.meta_params,
            state.naive_params,
            state.run_key,
            state.version,
            components.rollout.iteration_indices(),
        )
    )
    batch = jax.tree_util.tree_unflatten(treedef, [saved[f"arr_{i}"] for i in range(len(saved.files))])
    batch = jax.device_put(batch, replicated)
    new_state, _ = components.learner_update(state, batch)
    np.savez(
        os.path.join(workdir, "updated.npz"), *[np.asarray(x) for x in jax.tree_util.tree_leaves(new_state.meta_params)]
    )
    print("devices", len(jax.devices()))


if __name__ == "__main__":
    main(sys.argv[1])
