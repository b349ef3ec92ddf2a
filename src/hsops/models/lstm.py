"""``lstm``: a bidirectional LSTM over the token vectors, max- and mean-pooled.

The two directions are two LSTMs: the backward one reads each text reversed *within its
own length* (a gather), instead of ``nn.LSTM(bidirectional=True)`` reading the padding
first. That keeps a text's answer independent of the other texts in its batch, and it
exports to ONNX without packed sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hsops.models.torch_text import NeuralTextClassifier, SubwordEmbedding, masked_max, masked_mean


def reverse_within_length(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's first ``length`` positions reversed, padding left in place."""
    steps = x.shape[1]
    lengths = mask.sum(dim=1).long()  # [b, 1]
    positions = torch.arange(steps, device=x.device).unsqueeze(0)  # [1, t]
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)
    return x.gather(1, source.unsqueeze(2).expand(-1, -1, x.shape[2]))


class _BiLSTM(nn.Module):
    def __init__(self, n_ids: int, n_classes: int, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = SubwordEmbedding(n_ids, dim)
        self.forward_lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(4 * hidden, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens, mask = self.embed(ids)
        ahead, _ = self.forward_lstm(tokens)
        behind, _ = self.backward_lstm(reverse_within_length(tokens, mask))
        states = torch.cat([ahead, behind], dim=2)  # pooled, so position order is irrelevant
        pooled = torch.cat([masked_max(states, mask), masked_mean(states, mask)], dim=1)
        return self.out(self.dropout(pooled))


@dataclass(kw_only=True, repr=False, eq=False)
class LSTMClassifier(NeuralTextClassifier):
    kind = "lstm"

    hidden_size: int = 128

    def _module(self, n_ids: int, n_classes: int) -> nn.Module:
        return _BiLSTM(n_ids, n_classes, self.embedding_dim, self.hidden_size, self.dropout)
