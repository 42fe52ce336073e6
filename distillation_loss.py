"""Distances between the gradients a synthetic and a real batch induce in the distillation network.

Each gradient list holds one tensor per network parameter. ``ours`` and ``modmse`` work layer by layer
and, as in DC's ``distance_wb``, ignore 1-D parameters (biases, normalisation scales): their gradients
carry little about the data and would dominate a squared distance. ``mse`` and ``cos`` flatten all
parameters into one vector. ``embedding_distance`` is distribution matching's (DM): no gradients, only the
features the network's classifier reads.
"""

from collections.abc import Sequence

import torch

DISTANCES = ("ours", "modmse", "mse", "cos")
_EPS = 1e-6


def _rows(g: torch.Tensor) -> torch.Tensor:
    """Matrix view used layer-wise: one row per output unit (first dimension)."""
    return g.reshape(g.shape[0], -1)


def layer_cosine_distance(gws: torch.Tensor, gwr: torch.Tensor) -> torch.Tensor:
    """DC's layer distance: sum over rows of 1 - cos(row_syn, row_real); 0 for 1-D tensors."""
    if gws.dim() == 1:
        return gws.new_zeros(())
    s, r = _rows(gws), _rows(gwr)
    cos = (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + _EPS)
    return (1 - cos).sum()


def layer_squared_distance(gws: torch.Tensor, gwr: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences of one layer's gradient; 0 for 1-D tensors."""
    if gws.dim() == 1:
        return gws.new_zeros(())
    return ((gws - gwr) ** 2).sum()


def _flat(gw: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in gw])


def match_loss(gw_syn: Sequence[torch.Tensor], gw_real: Sequence[torch.Tensor], dis_metric: str) -> torch.Tensor:
    """Scalar distance between two gradient lists (same order and shapes) under ``dis_metric``."""
    if len(gw_syn) != len(gw_real):
        raise ValueError(f"gradient lists differ in length: {len(gw_syn)} vs {len(gw_real)}")
    if dis_metric == "ours":
        return torch.stack([layer_cosine_distance(s, r) for s, r in zip(gw_syn, gw_real, strict=True)]).sum()
    if dis_metric == "modmse":
        return torch.stack([layer_squared_distance(s, r) for s, r in zip(gw_syn, gw_real, strict=True)]).sum()
    if dis_metric == "mse":
        return ((_flat(gw_syn) - _flat(gw_real)) ** 2).sum()
    if dis_metric == "cos":
        s, r = _flat(gw_syn), _flat(gw_real)
        return 1 - (s * r).sum() / (s.norm() * r.norm() + _EPS)
    raise ValueError(f"unknown distance {dis_metric!r} (use one of {', '.join(DISTANCES)})")


def embedding_distance(emb_syn: torch.Tensor, emb_real: torch.Tensor) -> torch.Tensor:
    """DM's distance: squared Euclidean distance between the mean embeddings [B, D] of the two batches."""
    return ((emb_real.mean(0) - emb_syn.mean(0)) ** 2).sum()


def layerwise_embedding_distance(layers_syn: Sequence[torch.Tensor], layers_real: Sequence[torch.Tensor]
                                 ) -> torch.Tensor:
    """CAFE's layer-wise alignment: ``embedding_distance`` per layer [B, D_l], each scaled by D_last / D_l so
    that a layer's weight does not grow with its size (the last layer's term is DM's distance itself)."""
    size = layers_syn[-1].shape[1]
    return sum(embedding_distance(s, r) * (size / s.shape[1])
               for s, r in zip(layers_syn, layers_real, strict=True))
