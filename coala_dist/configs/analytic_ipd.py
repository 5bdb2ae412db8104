"""Settings of the exact analytic IPD experiments (paper Sec. 4, App. C; Figs. 3, 4, 8–10).

`coala analytic FIGURE` reads the sub-config named FIGURE and the shared `game`/`shaping` blocks, e.g.
`coala analytic fig4 --config.fig4.num_steps=3000`.

What the paper gives (paper Sec. 4, App. C): the model (Eq. 15–18), Optax `adamw` with default arguments for the
learning-aware agents, seed counts (Fig. 3: 32, Fig. 4: 64, Fig. 8: 64, Figs. 9–10: 8), the defection init
(logits log 0.01), and for the LOLA runs γ = 0.95, meta lr 0.005, naive lr 5 (10 for one look-ahead) and the mixing
factors 1, 1, 0.75, 0.6, 0.4 for look-aheads 1, 2, 3, 10, 20. The ZD section uses γ = 0.999 for shaping.

What the paper does not give (docs/choices.md#analytic-ipd-settings), chosen here:
  * M = 20 naive steps per shaping trajectory (Fig. 10C shows 20 naive learning steps).
  * Naive learning rate 5 for the Fig. 3/9/10 shaping experiments too (the one naive lr the paper states), in units
    of the normalised return (1 − γ)·J; see coala_dist/envs/analytic_ipd.py.
  * Meta-batch of 16 naive learners per update, redrawn every update, logits ~ N(0, 1) like the agents' own
    random init (naive_init_scale; the outcome of Figs. 3B and 9 depends on it, see results/analytic/README.md).
  * Meta learning rate 0.01 for the Fig. 3/9/10 experiments, and the numbers of updates below.
  * Learning-aware agents that do not start from a stated policy start from logits ~ N(0, 1).
  * The mixed group has 2 learning-aware agents; each meets the other with probability 1 − p_naive.
"""

from __future__ import annotations

import math

import ml_collections

DEFECTION_LOGIT = math.log(0.01)  # paper Sec. 4, App. C, Fig. 9: "logits initialized at log 0.01"


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Stage game and discounting of the shaping experiments (Fig. 3, 8, 9, 10).
    config.game = ml_collections.ConfigDict()
    config.game.gamma = 0.999

    # How a learning-aware agent meets naive learners (Eq. 17) in Figs. 3, 8, 9, 10.
    config.shaping = ml_collections.ConfigDict()
    config.shaping.num_naive_steps = 20  # M not given; Fig. 10C shows 20 naive steps
    config.shaping.naive_learning_rate = 5.0  # not given for Fig. 3; the paper's LOLA value
    config.shaping.meta_batch_size = 16  # naive learners per update (not given)
    config.shaping.naive_init_scale = 1.0  # naive logits ~ N(0, scale²), as the meta init (not given)
    config.shaping.meta_learning_rate = 0.01  # adamw defaults otherwise [lr not given for Fig. 3]
    config.shaping.meta_init_scale = 1.0  # random learning-aware init, logits ~ N(0, scale²)
    config.shaping.defection_logit = DEFECTION_LOGIT

    # Fig. 3A + Fig. 8: one learning-aware agent against naive learners, from random logits and from defection.
    config.fig3a = ml_collections.ConfigDict()
    config.fig3a.num_seeds = 64  # Fig. 3: 32; Fig. 8 (the ZD fit of these policies): 64
    config.fig3a.num_steps = 1500
    config.fig3a.log_every = 25  # metrics every 25 updates (they cost a forward pass through every naive learner)
    config.fig3a.num_random_policies = 64  # Fig. 8 baseline: cooperation probabilities ~ U[0, 1]⁴

    # Fig. 3B: extortioners from Fig. 3A-type training, then trained against each other / in self-play.
    config.fig3b = ml_collections.ConfigDict()
    config.fig3b.num_seeds = 32
    config.fig3b.num_shaping_steps = 1500
    config.fig3b.num_mutual_steps = 2000
    config.fig3b.turn_steps = 500  # "turn cooperative" is read here; later updates show whether it lasts

    # Fig. 3C: a group of 2 learning-aware agents meeting naive learners with probability p_naive.
    config.fig3c = ml_collections.ConfigDict()
    config.fig3c.num_seeds = 32
    config.fig3c.num_steps = 2500
    config.fig3c.log_every = 25
    config.fig3c.group_size = 2
    config.fig3c.p_naive = (0.0, 0.05, 0.25, 0.5, 0.75, 1.0)

    # Fig. 9: the mixed group started at mutual defection (logits log 0.01): a phase transition to cooperation.
    config.fig9 = ml_collections.ConfigDict()
    config.fig9.num_seeds = 8
    config.fig9.num_steps = 4000
    config.fig9.log_every = 5  # fine enough to time the jump
    config.fig9.group_size = 2
    config.fig9.p_naive = (0.0, 0.05, 0.1, 0.25)

    # Fig. 10: the mixed group started at (nearly strict) mutual tit-for-tat leaves TFT and keeps cooperating.
    config.fig10 = ml_collections.ConfigDict()
    config.fig10.num_seeds = 8
    config.fig10.num_steps = 3000
    config.fig10.log_every = 25
    config.fig10.group_size = 2
    config.fig10.p_naive = 0.75  # the mixed pool's p_naive of the RL experiments (Table 2)
    config.fig10.tft_probability = 0.99  # σ(logits) of the initial TFT: 0.99 where TFT says C, 0.01 for D

    # Fig. 4: LOLA with k look-ahead steps, two LOLA agents trained against each other (paper Sec. 4, App. C).
    config.fig4 = ml_collections.ConfigDict()
    config.fig4.num_seeds = 64
    config.fig4.gamma = 0.95
    config.fig4.meta_learning_rate = 0.005
    config.fig4.meta_init_scale = 1.0
    config.fig4.num_steps = 2000  # not given
    config.fig4.look_aheads = (1, 2, 3, 10, 20)
    config.fig4.naive_learning_rates = (10.0, 5.0, 5.0, 5.0, 5.0)  # 10 for one look-ahead
    config.fig4.lola_weights = (1.0, 1.0, 0.75, 0.6, 0.4)  # Fig. 4C: weight of ∇LOLA vs the naive partial gradient
    # Fig. 4B: fresh naive learners trained against the final policy of the longest look-ahead.
    config.fig4.eval_num_naive = 16
    config.fig4.eval_naive_steps = 200
    config.fig4.eval_naive_learning_rate = 5.0
    config.fig4.eval_naive_init_scale = 1.0
    return config
