r"""The hubness correction: two output coordinates that subtract each end's hubness from a score.

Our design, one reading of the paper's "correcting positive and negative
matching errors". Nodes that are close to many nodes of the other modality
(hubs) win too many queries, a classic source of false positives in
cross-modal retrieval. The cohesion of a query's cross-modal kNN hyperedge
(mean similarity to its ``hubness_k`` nearest memory nodes of the other
modality; :func:`~osgha_lite.methods.hypergraph.links.hubness_cohesion`) is
subtracted from every score as in CSLS (Conneau et al. 2018), through two
extra output coordinates (:func:`hubness_phase`), so retrieval is still a
dot product of unit vectors.

* :func:`hubness_phase`, :func:`hubness_beta_squared`,
  :data:`HUBNESS_PHASE_SCALE` - the coordinates and their scale.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from osgha_lite.methods.hypergraph.memory import IMAGE, modality_code

__all__ = ["HUBNESS_PHASE_SCALE", "hubness_beta_squared", "hubness_phase"]


# --------------------------------------------------------------------------- hubness correction

#: Scale :math:`\gamma` of the hubness phase (see :func:`hubness_phase`); keeps
#: :math:`|\gamma (r_v - c_v + r_t - c_t)| < \pi / 2` for cohesions in [-1, 1].
HUBNESS_PHASE_SCALE = 0.75


def hubness_phase(cohesion: Tensor, centre: float | Tensor, modality: str | int, weight: float) -> Tensor:
    r"""Two extra coordinates that make a dot product subtract the hubness of both ends.

    For an image :math:`v` and a caption :math:`t` with cohesions
    :math:`r_v, r_t` (:func:`~osgha_lite.methods.hypergraph.links.hubness_cohesion`)
    and memory means :math:`c_v, c_t` (``centre``), the phases are

    .. math::

        \theta_v = \gamma (r_v - c_v) + \pi/4, \qquad \theta_t = -\gamma (r_t - c_t) - \pi/4

    and the coordinates :math:`\beta(\cos\theta, \sin\theta)`, so that

    .. math::

        \beta^2 \cos(\theta_v - \theta_t) = -\beta^2 \sin\big(\gamma (r_v - c_v + r_t - c_t)\big)
        \approx -\beta^2 \gamma\,(r_v + r_t) + \text{const},

    decreasing in :math:`r_v + r_t` (strictly, as long as the argument stays
    in :math:`(-\pi/2, \pi/2)`, which :data:`HUBNESS_PHASE_SCALE` ensures).
    Appended to :math:`\sqrt{1-\beta^2}\, z` (:math:`z` unit), the result is
    a unit vector whose dot product is, to first order,
    :math:`(1-\beta^2)\,[\,z_v^\top z_t - \tfrac{\lambda}{2}(r_v + r_t)\,]` + const
    with :math:`\beta^2 = \frac{\lambda/2}{\gamma + \lambda/2}`: CSLS with
    weight :math:`\lambda` (``weight``; :math:`\lambda = 1` is CSLS's
    :math:`2\cos - r_v - r_t` up to scale). Returns ``[B, 2]``.
    """
    sign = 1.0 if modality_code(modality) == IMAGE else -1.0
    beta = math.sqrt(hubness_beta_squared(weight))
    theta = sign * (HUBNESS_PHASE_SCALE * (cohesion - centre) + math.pi / 4)
    return beta * torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)


def hubness_beta_squared(weight: float) -> float:
    r""":math:`\beta^2 = \frac{\lambda/2}{\gamma + \lambda/2}` for hubness weight :math:`\lambda` (0 gives 0)."""
    return (weight / 2) / (HUBNESS_PHASE_SCALE + weight / 2)
