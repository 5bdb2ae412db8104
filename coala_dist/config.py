"""Experiment configuration: defaults, validation, and quantities derived from a config.

Every experiment is one `ml_collections.ConfigDict` (see `configs/*.py`, which start from `default_config()` and
override fields). `validate(config)` runs before anything is built and raises a one-line `ValueError` that names
the field, its value and what is allowed. Derived sizes (e.g. the meta-trajectory length L = M·T) are computed by
functions here, never written back into the config.

Paper references are to arXiv 2410.18636: Table 2 (IPD sizes), Table 4 (meta-agent PPO), Table 8 (naive A2C).
"""

from __future__ import annotations

import math

import ml_collections

from coala_dist.envs import ENV_NAMES

ALGORITHMS = ("ppo", "a2c")
OPTIMIZERS = ("adam", "sgd")
DISTRIBUTED_MODES = ("sync", "async")
REPLAY_BACKENDS = ("reverb", "ray", "queues")  # distributed/replay.py
REPLAY_CHOICES = ("auto", *REPLAY_BACKENDS)
LEARNER_ACCELERATORS = ("none", "gpu", "tpu")


def default_config() -> ml_collections.ConfigDict:
    """The IPD pure-shaping experiment with the paper's values (Tables 2, 4, 8)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.training_iterations = 3000

    c.env = ml_collections.ConfigDict()
    c.env.name = "ipd"
    c.env.inner_episode_length = 10  # T
    # Environment-specific keyword arguments (e.g. IPD payoffs); empty means the env's defaults.
    c.env.kwargs = ml_collections.ConfigDict()

    c.num_inner_episodes = 20  # M
    c.batch_size = 16  # B: parallel inner episodes per meta-episode
    c.meta_batch_size = 128  # meta-episodes per meta agent per update
    c.p_naive = 1.0  # probability that a sampled co-player is a naive learner
    c.population_size_meta = 1
    c.population_size_naive = 10
    c.dynamic_naive_agents = False  # naive initialisations copied from the meta agents each iteration
    # Naive-opponent rule: coala | mfos | batch_unaware | mfos_mean (paper App. A.1; meta opponents always get standard
    # PG), or lola_dice (paper Eq. 4, coala_dist/rl/dice.py: replaces PPO/A2C by one step on the DiCE objective).
    c.estimator = "coala"
    # Per-agent naive-opponent rules, one per meta agent (App. H.3 head-to-head, e.g. ("coala", "coala", "mfos",
    # "mfos")); empty: every agent uses `estimator`.
    c.agent_estimators = ()
    # Meta co-players are drawn only among agents whose rule differs from the ego's (App. H.3: COALA agents meet
    # only M-FOS agents or naive learners, and vice versa).
    c.cross_estimator_pairing = False

    c.policy = ml_collections.ConfigDict()
    c.policy.embed_dim = 32
    c.policy.lru_width = 32
    c.policy.mlp_width = 32
    c.policy.num_heads = 2
    c.policy.num_blocks = 1
    c.policy.conv_width = 4
    c.policy.scan_type = "linear"

    c.meta = ml_collections.ConfigDict()  # Table 4
    c.meta.algorithm = "ppo"
    c.meta.ppo_num_minibatches = 2
    c.meta.ppo_num_epochs = 4
    c.meta.clip_epsilon = 0.2
    c.meta.value_coefficient = 0.5
    c.meta.clip_value = True
    c.meta.value_clip_epsilon = 0.2  # not given in the paper (docs/choices.md#value-clipping)
    c.meta.entropy_coefficient = 0.0
    c.meta.advantage_normalization = False  # centering, separately per co-player type (paper App. A.4)
    c.meta.advantage_divide_by_std = False  # docs/choices.md#advantage-normalisation
    c.meta.reward_scale = 0.05
    c.meta.discount = 1.0
    c.meta.td_lambda = 1.0
    c.meta.gae_lambda = 1.0
    # Value targets against naive co-players: average future episodes over the batch? (paper App. A.2,
    # docs/choices.md#value-targets-against-naive-co-players); False is Eq. 10's own-trajectory definition.
    c.meta.value_targets_average_future = False
    c.meta.optimizer = "adam"
    c.meta.adam_epsilon = 1e-5
    c.meta.learning_rate = 3e-4
    c.meta.max_grad_norm = 1.0
    # LOLA-DiCE only (estimator lola_dice): look-ahead through a META co-player's own learning step, which LOLA models
    # as plain gradient ascent on its inner-episode DiCE objective: this many steps (0: none) of this step size.
    # Not given in the paper: our choice, switchable (docs/choices.md#lola-dice-in-the-rl-games). Naive co-players are
    # looked through by their real A2C steps inside the meta-episode, whatever these are.
    c.meta.lola_look_ahead_steps = 1
    c.meta.lola_look_ahead_lr = 1.0

    c.naive = ml_collections.ConfigDict()  # Table 8, IPD columns
    c.naive.advantage_normalization = True
    c.naive.reward_scale = 0.05
    c.naive.discount = 0.99
    c.naive.value_coefficient = 0.5
    c.naive.entropy_coefficient = 0.0
    c.naive.optimizer = "adam"
    c.naive.adam_epsilon = 1e-5
    c.naive.learning_rate = 0.005
    c.naive.max_grad_norm = 1.0

    c.log_every = 1
    # Stop the run (checkpointing the last good state, exit status 1) after this many iterations in a row whose update
    # was skipped because the loss or a gradient was not finite; 0: never stop. May change on resume.
    c.max_consecutive_skipped_updates = 10

    # How the computation is laid out, not what is computed: results agree up to float rounding, and a run may
    # resume with other values (checkpoint.COMPATIBLE_FIELDS).
    c.compute = ml_collections.ConfigDict()
    # The learner accumulates a minibatch's gradient over chunks of whole meta-episodes holding at most this many
    # trajectories (B each), so the activations of one backward pass stay in cache (docs/performance.md); 0: the
    # whole minibatch in one pass.
    c.compute.gradient_chunk_trajectories = 64

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.save_every = 50  # updates between checkpoints (a final one is always written at the end or on SIGTERM)
    c.checkpoint.max_to_keep = 3

    # The actor-learner program (coala_dist/distributed; docs/architecture.md). `coala train` flags --mode and
    # --num_actors override the first two fields.
    c.distributed = ml_collections.ConfigDict()
    # sync: the learner consumes exactly the episodes of its current version (reproducible whatever the actor
    # count); async: actors never wait for the learner, episodes older than max_policy_lag versions are dropped.
    c.distributed.mode = "sync"
    c.distributed.num_actors = 1  # threads (launch inprocess) or processes (local, ray); 0: the plain loop
    c.distributed.work_units_per_agent = 1  # an agent's meta-batch is rolled out as this many work units
    c.distributed.max_policy_lag = 1  # async only: consumed episodes are at most this many versions old
    c.distributed.queue_capacity_work_units = 2  # per queue table; actors block on insert when it is full
    c.distributed.num_learner_processes = 1  # > 1: one jax.distributed group (launch local or ray)
    c.distributed.learner_accelerator = "none"  # launch ray: what the learner node asks Ray for
    c.distributed.learner_accelerator_count = 1
    # Launch ray: custom Ray resources (one unit per node) marking where learners and actors may run; the cloud
    # launchers (launch/common.py) give TPU hosts `coala_learner_host` and CPU VMs `coala_actor_slot`s. "": none.
    c.distributed.ray_learner_resource = "coala_learner_host"
    c.distributed.ray_actor_resource = "coala_actor_slot"
    c.distributed.ray_replay_resource = ""  # e.g. a resource only the head offers; "": any node with a free CPU
    c.distributed.actor_max_restarts = 3  # Ray restarts of a dead actor process; -1: unlimited
    # Launch local/ray: restarts of a dead replay node by the launcher (its tables are lost; sync episodes are rolled
    # out again, so the run is unchanged); -1: unlimited; 0: a dead replay node stops the run (resume to go on).
    c.distributed.replay_max_restarts = 3
    c.distributed.poll_interval_s = 0.02  # waiting nodes re-check their tables and the stop event this often
    c.distributed.rpc_timeout_s = 5.0  # every replay call gives up after this, re-checks the stop event, retries
    # The learner's waits for episodes: until its first whole batch the nodes start and compile (minutes at paper
    # sizes, on every start and resume), so no new episode for start_timeout_s is an error; after it, data_timeout_s.
    # An actor restarted or added later must start within data_timeout_s (its programs come from the compilation cache).
    c.distributed.start_timeout_s = 600.0
    c.distributed.data_timeout_s = 600.0
    # The replay transport (distributed/replay.py): auto | reverb | ray | queues. auto: queues (launch inprocess) or
    # ray (launch local, ray) on both profiles; Reverb only when named (it listens on every interface).
    c.distributed.replay = "auto"
    c.distributed.replay_port = 0  # Reverb only; 0: any free port
    c.distributed.stop_grace_s = 15.0  # a stopping node gets this long to finish before it is killed
    return c


def meta_trajectory_length(config: ml_collections.ConfigDict) -> int:
    """L = M·T, the number of steps a meta agent sees in one meta-trajectory."""
    return config.num_inner_episodes * config.env.inner_episode_length


def episodes_per_iteration(config: ml_collections.ConfigDict) -> int:
    """Meta-episodes generated per training iteration: one meta-batch per meta agent."""
    return config.population_size_meta * config.meta_batch_size


def agent_estimators(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The naive-opponent rule of each of the P meta agents."""
    return tuple(config.agent_estimators) or (config.estimator,) * config.population_size_meta


def meta_coplayer_mask(config: ml_collections.ConfigDict) -> tuple[tuple[bool, ...], ...] | None:
    """[P][P] which meta agents may be agent i's co-player under `cross_estimator_pairing`; None: any other agent."""
    if not config.cross_estimator_pairing:
        return None
    rules = agent_estimators(config)
    return tuple(tuple(rule_j != rule_i for rule_j in rules) for rule_i in rules)


def _fail(field: str, value, allowed: str) -> None:
    raise ValueError(f"config.{field}={value!r} is invalid: {allowed}")


def _check_positive_int(config: ml_collections.ConfigDict, field: str) -> None:
    value = config
    for part in field.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(field, value, "must be an integer >= 1")


def _check_in(value, field: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(field, value, f"must be one of {', '.join(allowed)}")


def _check_range(value, field: str, low: float, high: float, *, low_open: bool = False) -> None:
    """`value` is a finite number in [low, high] (or (low, high]); `high=inf` means no upper bound, never inf itself:
    an infinite learning rate or scale is accepted by every comparison but makes every update non-finite."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        upper = "inf)" if math.isinf(high) else f"{high}]"
        _fail(field, value, f"must be a finite number in {bracket}{low}, {upper}")


def _check_int_at_least(value, field: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(field, value, f"must be an integer >= {minimum}")


def episodes_per_work_unit(config: ml_collections.ConfigDict) -> int:
    """Meta-episodes in one actor work unit (all of one ego agent, one version)."""
    return config.meta_batch_size // config.distributed.work_units_per_agent


def validate_distributed(config: ml_collections.ConfigDict) -> None:
    """Checks `config.distributed` and its agreement with the batch sizes (part of `validate`)."""
    d = config.distributed
    _check_in(d.mode, "distributed.mode", DISTRIBUTED_MODES)
    _check_in(d.replay, "distributed.replay", REPLAY_CHOICES)
    _check_in(d.learner_accelerator, "distributed.learner_accelerator", LEARNER_ACCELERATORS)
    for field, minimum in (
        ("num_actors", 0),
        ("work_units_per_agent", 1),
        ("max_policy_lag", 0),
        ("queue_capacity_work_units", 1),
        ("num_learner_processes", 1),
        ("learner_accelerator_count", 1),
        ("actor_max_restarts", -1),
        ("replay_max_restarts", -1),
        ("replay_port", 0),
    ):
        _check_int_at_least(d[field], f"distributed.{field}", minimum)
    for field in ("poll_interval_s", "rpc_timeout_s", "start_timeout_s", "data_timeout_s", "stop_grace_s"):
        _check_range(d[field], f"distributed.{field}", 0.0, float("inf"), low_open=True)
    for field in ("ray_learner_resource", "ray_actor_resource", "ray_replay_resource"):
        if not isinstance(d[field], str):
            _fail(f"distributed.{field}", d[field], "must be a Ray resource name or empty")
    if config.meta_batch_size % d.work_units_per_agent:
        _fail(
            "distributed.work_units_per_agent",
            d.work_units_per_agent,
            f"must divide meta_batch_size={config.meta_batch_size} (a work unit is a whole number of episodes)",
        )
    share, remainder = divmod(episodes_per_iteration(config), d.num_learner_processes)
    if remainder or share % episodes_per_work_unit(config):
        _fail(
            "distributed.num_learner_processes",
            d.num_learner_processes,
            f"must split the {episodes_per_iteration(config)} episodes of an iteration into equal shares of whole "
            f"work units of {episodes_per_work_unit(config)} episodes",
        )


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks every field; raises a one-line ValueError naming the first bad one. Returns the config."""
    from coala_dist import keys  # imports JAX: not at module level, so `coala --help` stays fast
    from coala_dist.networks.hawk import SCAN_TYPES
    from coala_dist.rl.estimators import ESTIMATORS

    for field in (
        "training_iterations",
        "num_inner_episodes",
        "batch_size",
        "meta_batch_size",
        "population_size_meta",
        "population_size_naive",
        "log_every",
        "checkpoint.save_every",
        "checkpoint.max_to_keep",
        "env.inner_episode_length",
        "policy.embed_dim",
        "policy.lru_width",
        "policy.mlp_width",
        "policy.num_heads",
        "policy.num_blocks",
        "policy.conv_width",
        "meta.ppo_num_minibatches",
        "meta.ppo_num_epochs",
    ):
        _check_positive_int(config, field)
    # Versions and episode indices must stay below the reserved key indices (coala_dist.keys).
    if config.training_iterations > keys.MAX_VERSION:
        _fail("training_iterations", config.training_iterations, f"must be at most {keys.MAX_VERSION}")
    if episodes_per_iteration(config) > keys.MAX_VERSION:
        limit = keys.MAX_VERSION
        _fail("meta_batch_size", config.meta_batch_size, f"times population_size_meta must be at most {limit}")
    _check_in(config.env.name, "env.name", ENV_NAMES)
    _check_in(config.estimator, "estimator", ESTIMATORS)
    if config.agent_estimators:
        if len(config.agent_estimators) != config.population_size_meta:
            _fail("agent_estimators", config.agent_estimators, "must name one estimator per meta agent or be empty")
        for rule in config.agent_estimators:
            _check_in(rule, "agent_estimators", ESTIMATORS)
        if "lola_dice" in config.agent_estimators and set(config.agent_estimators) != {"lola_dice"}:
            _fail(
                "agent_estimators",
                config.agent_estimators,
                "cannot mix lola_dice with other estimators (its update replays the whole meta-batch)",
            )
    mask = meta_coplayer_mask(config)
    if mask is not None and config.p_naive < 1.0 and not all(any(row) for row in mask):
        _fail("cross_estimator_pairing", True, "needs, for every agent, another agent with a different estimator")
    _check_in(config.policy.scan_type, "policy.scan_type", SCAN_TYPES)
    _check_in(config.meta.algorithm, "meta.algorithm", ALGORITHMS)
    _check_in(config.meta.optimizer, "meta.optimizer", OPTIMIZERS)
    _check_in(config.naive.optimizer, "naive.optimizer", OPTIMIZERS)
    _check_range(config.p_naive, "p_naive", 0.0, 1.0)
    _check_int_at_least(config.meta.lola_look_ahead_steps, "meta.lola_look_ahead_steps", 0)
    _check_range(config.meta.lola_look_ahead_lr, "meta.lola_look_ahead_lr", 0.0, float("inf"))
    for group in ("meta", "naive"):
        _check_range(config[group].discount, f"{group}.discount", 0.0, 1.0)
        _check_range(config[group].learning_rate, f"{group}.learning_rate", 0.0, float("inf"), low_open=True)
        _check_range(config[group].max_grad_norm, f"{group}.max_grad_norm", 0.0, float("inf"), low_open=True)
        _check_range(config[group].reward_scale, f"{group}.reward_scale", 0.0, float("inf"), low_open=True)
    _check_int_at_least(config.compute.gradient_chunk_trajectories, "compute.gradient_chunk_trajectories", 0)
    _check_int_at_least(config.max_consecutive_skipped_updates, "max_consecutive_skipped_updates", 0)
    for field in ("td_lambda", "gae_lambda"):
        _check_range(config.meta[field], f"meta.{field}", 0.0, 1.0)
    _check_range(config.meta.clip_epsilon, "meta.clip_epsilon", 0.0, 1.0, low_open=True)
    if config.policy.lru_width % config.policy.num_heads:
        _fail("policy.num_heads", config.policy.num_heads, "must divide policy.lru_width")
    if config.p_naive < 1.0 and config.population_size_meta < 2:
        _fail(
            "population_size_meta",
            config.population_size_meta,
            "must be >= 2 when p_naive < 1 (a meta co-player is never the ego agent itself)",
        )
    if config.meta.algorithm == "ppo" and config.meta_batch_size % config.meta.ppo_num_minibatches:
        _fail(
            "meta.ppo_num_minibatches",
            config.meta.ppo_num_minibatches,
            f"must divide meta_batch_size={config.meta_batch_size} (minibatches split whole meta-episodes)",
        )
    if config.dynamic_naive_agents and config.population_size_naive != config.population_size_meta:
        _fail(
            "population_size_naive",
            config.population_size_naive,
            "must equal population_size_meta when dynamic_naive_agents=True (each naive init copies a meta agent)",
        )
    validate_distributed(config)
    return config
