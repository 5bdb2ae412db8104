"""The distributed actor-learner program (docs/architecture.md, docs/transport.md).

Nodes (built in their own thread or process from uncalled factories, Acme style):

* **replay** (`replay.py`, the transport interface; backends `replay_reverb.py` and `replay_queues.py`): one FIFO
  queue table of `MetaEpisode`s per meta agent (and learner process), plus the latest published parameters.
  `replay_reverb.py` is the only module that imports reverb/TensorFlow.
* **learner** (`learner_node.py`): `coala_dist.train.prepare_learner` + `coala_dist.train.learner_loop` with the
  replay as its batch source (`replay_source.py`: publishes each version's parameters, takes its meta-batch from
  the replay node); the update is `Learner.update`, jitted data-parallel over a device mesh when there is more than
  one device (`sharding.py`).
* **actors** (`actor.py`): poll the published parameters (`params.py`), roll out work units with
  `Rollout.episodes` and write the episodes to the replay node.

`program.py` describes the graph (`make_program`), `launch.py` runs it as threads in one process (`inprocess`) or,
through `ray_run.py`, as Ray processes (`ray_nodes.py`) on this machine (`local`) or on an existing Ray cluster
(`ray`), supervised by the driver (`supervision.py`: replay restarts, actor scaling, stopping every node). There
is no second rollout, update or loop: the nodes call the same functions as `coala_dist.train.train`.
"""
