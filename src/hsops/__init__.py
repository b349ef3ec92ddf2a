"""hsops: serverless MLOps for Harmonized System (HS) code prediction.

The package is split by lifecycle stage (domain, data, models, training, registry,
serving, ...). This module stays import-light on purpose: the serving path imports
``hsops`` and must not pull in torch, MLflow or pandas.
"""

__version__ = "0.1.0"
