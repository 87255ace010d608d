"""The names hydra.sweeper.sampler and .pruner accept, and what each sampler does between trials.

A module of constants only: the sweeper checks its options with it before Optuna is imported.
"""

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
# Samplers whose draws come from a private RNG: reseeded per trial number, so a relaunch or a
# second worker never replays the draws of an earlier one. grid, qmc, cmaes and gp derive
# theirs from the study (trial numbers, stored state) and keep one seeded instance.
RESEEDED_SAMPLERS = ("tpe", "random")
# Of those, reseeded once per batch, by its first trial number: TPE's instance caches the search
# space it infers from every trial, which a sampler made per trial recomputes for each ask.
BATCH_SEEDED_SAMPLERS = ("tpe",)
# Samplers whose suggestions depend on finished trials: they wait for the tells before asking.
MODEL_BASED_SAMPLERS = ("tpe", "cmaes", "gp")
