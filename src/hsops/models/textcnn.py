"""``textcnn``: convolutions of several widths over the token vectors, max-pooled
(Kim, 2014): each filter learns a 2- to 5-token pattern ("used clothing", "air filter
element") wherever it appears in the description.

Windows are "valid" and start at every real token; a window reaching past the end of a
text sees zero vectors, the same however much padding its batch has, and positions past
the end are masked out of the max.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hsops.models.torch_text import NeuralTextClassifier, SubwordEmbedding, masked_max


class _TextCNN(nn.Module):
    def __init__(self, n_ids: int, n_classes: int, dim: int, filters: int,
                 widths: tuple[int, ...], dropout: float):
        super().__init__()
        self.embed = SubwordEmbedding(n_ids, dim)
        self.widths = tuple(widths)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(filters * len(self.widths), n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens, mask = self.embed(ids)
        padded = nn.functional.pad(tokens, (0, 0, 0, max(self.widths) - 1))  # room for every window
        channels = padded.transpose(1, 2)  # [b, d, t + w - 1]
        steps = tokens.shape[1]
        pooled = []
        for conv in self.convs:
            feature = torch.relu(conv(channels))[:, :, :steps].transpose(1, 2)  # [b, t, f]
            pooled.append(masked_max(feature, mask))
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


@dataclass(kw_only=True, repr=False, eq=False)
class TextCNNClassifier(NeuralTextClassifier):
    kind = "textcnn"

    filters: int = 100  # per width; the convolutions are most of the training time
    filter_widths: tuple[int, int, int, int] = (2, 3, 4, 5)

    def _module(self, n_ids: int, n_classes: int) -> nn.Module:
        return _TextCNN(n_ids, n_classes, self.embedding_dim, self.filters,
                        tuple(self.filter_widths), self.dropout)
