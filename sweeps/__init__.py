"""linear-sweeps: Hydra + Optuna + MLflow sweeps over linear_models' classifiers."""
import os

# MLflow (3.x) starts usage-telemetry threads at import that send events over the network: a
# sweep must not reach the internet, and on a 2-core box they cost about 2 s of CPU per launch.
# Set before any mlflow import; MLFLOW_DISABLE_TELEMETRY=false in the environment turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
