"""Config validation: every bad value gives a one-line error naming the field and what is allowed."""

from __future__ import annotations

import pytest

from coala_dist.config import default_config, validate

# (field, bad value, text the message must contain)
BAD_VALUES = [
    ("batch_size", 0, "integer >= 1"),
    ("batch_size", -4, "integer >= 1"),
    ("meta_batch_size", 0, "integer >= 1"),
    ("num_inner_episodes", 0, "integer >= 1"),
    ("training_iterations", -1, "integer >= 1"),
    ("population_size_meta", 0, "integer >= 1"),
    ("population_size_naive", 0, "integer >= 1"),
    ("env.inner_episode_length", 0, "integer >= 1"),
    ("policy.embed_dim", 0, "integer >= 1"),
    ("policy.num_blocks", -1, "integer >= 1"),
    ("meta.ppo_num_epochs", 0, "integer >= 1"),
    ("checkpoint.save_every", 0, "integer >= 1"),
    ("p_naive", 1.5, "[0.0, 1.0]"),
    ("p_naive", -0.1, "[0.0, 1.0]"),
    ("estimator", "lola", "coala, mfos, batch_unaware"),
    ("env.name", "coin_game", "ipd, cleanup_lite"),
    ("policy.scan_type", "parallel", "linear, associative"),
    ("meta.algorithm", "dqn", "ppo, a2c"),
    ("meta.optimizer", "rmsprop", "adam, sgd"),
    ("naive.optimizer", "lamb", "adam, sgd"),
    ("meta.learning_rate", 0.0, "(0.0, inf)"),
    ("naive.learning_rate", -1.0, "(0.0, inf)"),
    ("meta.discount", 1.2, "[0.0, 1.0]"),
    ("naive.discount", -0.5, "[0.0, 1.0]"),
    ("meta.gae_lambda", 2.0, "[0.0, 1.0]"),
    ("meta.td_lambda", -1.0, "[0.0, 1.0]"),
    ("meta.clip_epsilon", 0.0, "(0.0, 1.0]"),
    ("meta.max_grad_norm", 0.0, "(0.0, inf)"),
    ("meta.reward_scale", 0.0, "(0.0, inf)"),
    # Non-finite numbers pass every comparison with a bound, and then make every update non-finite.
    ("meta.learning_rate", float("inf"), "finite"),
    ("naive.learning_rate", float("nan"), "finite"),
    ("meta.reward_scale", float("inf"), "finite"),
    ("meta.discount", float("nan"), "finite"),
    ("distributed.poll_interval_s", float("inf"), "finite"),
]


def _set(config, field, value):
    node = config
    *parents, last = field.split(".")
    for part in parents:
        node = node[part]
    with node.ignore_type():
        node[last] = value


@pytest.mark.parametrize(("field", "value", "allowed"), BAD_VALUES)
def test_bad_value_is_named_in_one_line(field, value, allowed):
    config = default_config()
    _set(config, field, value)
    with pytest.raises(ValueError) as error:
        validate(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"config.{field}={value!r}"), message
    assert allowed in message, message


def test_cross_field_rules():
    config = default_config()
    config.p_naive = 0.5  # one meta agent cannot meet another meta agent
    with pytest.raises(ValueError, match=r"config.population_size_meta=1 .* p_naive < 1"):
        validate(config)
    config = default_config()
    config.meta.ppo_num_minibatches = 3  # 128 episodes cannot be split into 3 minibatches of whole episodes
    with pytest.raises(ValueError, match=r"config.meta.ppo_num_minibatches=3 .* divide meta_batch_size=128"):
        validate(config)
    config = default_config()
    config.policy.num_heads = 3
    with pytest.raises(ValueError, match=r"config.policy.num_heads=3 .* divide policy.lru_width"):
        validate(config)
    config = default_config()
    config.dynamic_naive_agents = True
    with pytest.raises(ValueError, match=r"config.population_size_naive=10 .* dynamic_naive_agents"):
        validate(config)
    config = default_config()
    _set(config, "batch_size", True)  # a bool is not a size
    with pytest.raises(ValueError, match="config.batch_size=True"):
        validate(config)


def test_paper_configs_are_valid():
    from conftest import load_config

    for name in ("ipd_pure_shaping", "ipd_mixed_pool", "ipd_tiny"):
        validate(load_config(name))
