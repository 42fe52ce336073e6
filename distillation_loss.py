"""Distances between the gradients a synthetic and a real batch induce in the distillation network.

Each gradient list holds one tensor per network parameter. ``ours`` and ``modmse`` work layer by layer
and, as in DC's ``distance_wb``, ignore 1-D parameters (biases, normalisation scales): their gradients
carry little about the data and would dominate a squared distance. ``mse`` and ``cos`` flatten all
parameters into one vector. ``embedding_distance`` is distribution matching's (DM): no gradients, only the
features the network's classifier reads, or (``gaussian_mmd``) their whole distribution under a Gaussian kernel.
"""

from collections.abc import Sequence

import torch

DISTANCES = ("ours", "modmse", "mse", "cos")
# Bandwidths of gaussian_mmd's kernels, as multiples of the real batch's median pairwise squared distance.
GAUSSIAN_SCALES = (0.5, 1.0, 2.0)
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


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances [A, B]; written out, not ``torch.cdist``, so that a zero distance (a
    point with itself) has a finite gradient."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T).clamp_min(0)


def gaussian_mmd(emb_syn: torch.Tensor, emb_real: torch.Tensor) -> torch.Tensor:
    """Squared maximum mean discrepancy between the two batches' embeddings [B, D] under a sum of Gaussian kernels
    (M3D, Zhang et al. 2024), bandwidths GAUSSIAN_SCALES times the real batch's median pairwise squared distance
    (a constant). DM's distance is the same MMD under the linear kernel, which sees only the mean; a Gaussian
    kernel sees every moment, and its synthetic-synthetic term pushes a class's clouds apart, over its digits."""
    d_rr, d_ss, d_sr = (_squared_distances(a, b) for a, b in
                        ((emb_real, emb_real), (emb_syn, emb_syn), (emb_syn, emb_real)))
    off_diagonal = ~torch.eye(len(emb_real), dtype=torch.bool, device=emb_real.device)
    median = d_rr.detach()[off_diagonal].median().clamp_min(_EPS)
    total = emb_syn.new_zeros(())
    for scale in GAUSSIAN_SCALES:
        k_ss, k_rr, k_sr = (torch.exp(-d / (2 * scale * median)).mean() for d in (d_ss, d_rr, d_sr))
        total = total + k_ss + k_rr - 2 * k_sr
    return total


def layerwise_embedding_distance(layers_syn: Sequence[torch.Tensor], layers_real: Sequence[torch.Tensor]
                                 ) -> torch.Tensor:
    """CAFE's layer-wise alignment: ``embedding_distance`` per layer [B, D_l], each scaled by D_last / D_l so
    that a layer's weight does not grow with its size (the last layer's term is DM's distance itself)."""
    size = layers_syn[-1].shape[1]
    return sum(embedding_distance(s, r) * (size / s.shape[1])
               for s, r in zip(layers_syn, layers_real, strict=True))
