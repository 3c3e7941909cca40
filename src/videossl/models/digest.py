"""The digest of a model's weights, in a module that imports torch only: the registered model's
loader (videossl.registered_model) runs it where videossl's data and config modules cannot import."""
from __future__ import annotations

import hashlib

import torch


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict (names and raw bytes): equal digests = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
