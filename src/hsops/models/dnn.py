"""``dnn``: a feed-forward network over the averaged (and max-pooled) token vectors.

The simplest neural kind: word order is ignored, like a bag of sub-words, and one hidden
layer learns which combinations of words decide the subheading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hsops.models.torch_text import NeuralTextClassifier, SubwordEmbedding, masked_max, masked_mean


class _DNN(nn.Module):
    def __init__(self, n_ids: int, n_classes: int, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = SubwordEmbedding(n_ids, dim)
        self.head = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_classes))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens, mask = self.embed(ids)
        pooled = torch.cat([masked_mean(tokens, mask), masked_max(torch.tanh(tokens), mask)], dim=1)
        return self.head(pooled)


@dataclass(kw_only=True, repr=False, eq=False)
class DNNClassifier(NeuralTextClassifier):
    kind = "dnn"

    hidden_size: int = 512

    def _module(self, n_ids: int, n_classes: int) -> nn.Module:
        return _DNN(n_ids, n_classes, self.embedding_dim, self.hidden_size, self.dropout)
