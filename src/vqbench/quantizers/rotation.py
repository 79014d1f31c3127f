"""The rotation trick: the gradient estimator that replaces the straight-through estimator (STE) of codebook VQ.

Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick", arXiv 2410.06424, sec. 4.2. The
encoder output e is carried onto its code q by a rotation and a rescaling that are treated as constants:

    q~ = sg(lambda R) e,   lambda = ||q|| / ||e||,   R = I - 2 w w^T + 2 q^ e^^T
    e^ = e / ||e||,   q^ = q / ||q||,   w = (e^ + q^) / ||e^ + q^||

R rotates e^ onto q^ in the plane they span, so the forward value is q (as with the STE, up to rounding), while the
gradient reaching e is lambda R^T g instead of g: it keeps the angle between the gradient and the code-to-encoder
direction. R is never formed: R e = e - 2 (w.e) w + 2 (e^.e) q^ costs O(d) per row. The normalisations guard
zero vectors like lucidrains/vector-quantize-pytorch (``vector_quantize_pytorch.py``, ``rotate_to``): norms are
clamped at 1e-6 and w is ``F.normalize(., eps=1e-6)``. The codebook gets no gradient through q~ (only through its
own loss term), as with the STE.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

#: Floor under the norms, as lucidrains/vector-quantize-pytorch's ``safe_div`` and ``l2norm``.
NORM_FLOOR = 1e-6


def rotate_onto(e: Tensor, q: Tensor) -> Tensor:
    """sg(lambda R) e for rows e, q (N x d): forward value q, gradient lambda R^T to e, none to q."""
    q = q.detach()
    e_norm = e.detach().norm(dim=1, keepdim=True).clamp_min(NORM_FLOOR)
    q_norm = q.norm(dim=1, keepdim=True).clamp_min(NORM_FLOOR)
    e_hat, q_hat = e.detach() / e_norm, q / q_norm
    w = F.normalize(e_hat + q_hat, dim=1, eps=NORM_FLOOR)
    rotated = e - 2 * (e * w).sum(1, keepdim=True) * w + 2 * (e * e_hat).sum(1, keepdim=True) * q_hat
    # lambda = ||q|| / max(||e||, floor): the code's own norm is not floored, as in rotate_to
    return rotated * (q.norm(dim=1, keepdim=True) / e_norm)


__all__ = ["NORM_FLOOR", "rotate_onto"]
