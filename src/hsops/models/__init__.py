"""Models behind the Classifier contract, their text features, and their export.

Importing this package is cheap (no torch, no scikit-learn): the serving path imports
``hsops.models.text_features`` and ``hsops.models.artifact`` only.
"""
