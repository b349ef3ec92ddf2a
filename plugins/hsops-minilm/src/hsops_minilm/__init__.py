"""hsops plug-in: all-MiniLM-L6-v2 sentence embeddings with a linear softmax head.

Registered as model kind ``minilm`` under the ``hsops.models`` entry-point group, so
``hsops train --model minilm`` and the shared Classifier conformance suite find it.
"""

from ._classifier import MiniLMClassifier
from ._encoder import EncoderMismatchError, MiniLMEncoder, installed_identity, shared_encoder

__all__ = ["EncoderMismatchError", "MiniLMClassifier", "MiniLMEncoder", "installed_identity",
           "shared_encoder"]
