"""Hydra sweeper plugin of linear-sweeps: Optuna >= 4, batched trials, MLflow tracking.

Hydra imports every module under hydra_plugins/ at each start-up, so this package imports
neither torch, optuna nor mlflow at module level: the loop lives in sweeps.engine (in
sweeps.sweeper before the engine moved there).
"""
