"""coala-dist: learning-aware multi-agent RL (COALA-PG) with a distributed actor-learner."""

__version__ = "0.1.0"
