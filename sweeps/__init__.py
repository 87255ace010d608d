"""linear-sweeps: Hydra + Optuna + MLflow sweeps over linear_models' classifiers."""
__version__ = "0.1.0"
