"""Serving: the Predictor (a verified, calibrated exported model) and the HTTP API.

Nothing under ``hsops.serving`` imports torch, MLflow, pandas or scikit-learn (a test
holds this). ``create_app`` is imported lazily so batch jobs that need only the
Predictor do not pay for FastAPI.
"""

from hsops.serving.predictor import Calibration, Prediction, PredictionSink, Predictor, RegistrySource

__all__ = ["Calibration", "Prediction", "PredictionSink", "Predictor", "RegistrySource", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from hsops.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'hsops.serving' has no attribute {name!r}")
