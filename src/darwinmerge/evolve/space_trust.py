"""The MRI-trust wrapper: guidance that cannot trap the search.

A guided search starts from the prior's genome ``p`` with the prior's (narrowed) box;
where the scans are confidently wrong, the optimum can lie outside that box and the
search never sees it. :class:`TrustedSpace` wraps any genome space with one more gene,
``mri_trust`` (``tau`` in [0, 1]), and searches a free genome ``x`` over the full box
[0, 1]^d; the genome the inner space decodes is the blend

    g = tau * p + (1 - tau) * x          (unit space, per gene)

so ``tau = 1`` is the prior's start exactly, ``tau = 0`` is a blind search, and the
optimizer learns how far to trust the scans. Every point of the full box stays
reachable (``tau = 0``, ``x = g``). The start (:func:`trusted_prior`): ``x`` takes the
blind start (mean 0.5, sigma 1/6, full box), ``tau`` starts at ``TRUST_START`` with
sigma 1/6; the first genome a prior-enqueuing optimizer tries is ``tau = 1`` (the prior's
start recipe). Choice and integer genes blend in unit space like real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from darwinmerge.evolve.genes import Gene
from darwinmerge.evolve.prior import SIGMA_BLIND, Prior

__all__ = ["TRUST_GENE", "TRUST_START", "TrustedSpace", "trusted_prior"]

TRUST_GENE = "mri_trust"
#: start of the trust gene: halfway between the prior's genome and the free one
TRUST_START = 0.5


class TrustedSpace:
    """``inner`` (a genome space) plus the ``mri_trust`` gene, blended with the prior
    mean ``anchor`` (unit space) as the module docstring says."""

    def __init__(self, inner: Any, anchor: Sequence[float] | np.ndarray) -> None:
        self.inner = inner
        self.anchor = np.asarray(anchor, dtype=float)
        if self.anchor.shape != (len(inner.genes),):
            raise ValueError(f"trust: anchor has {self.anchor.shape} values for {inner.dim} genes")
        self.name = f"{getattr(inner, 'name', 'genome')}+trust"
        doc = "trust in the MRI prior: 1 = the prior's genome, 0 = the free genome"
        self.genes = (*inner.genes, Gene(TRUST_GENE, doc=doc))
        self.dim = len(self.genes)
        self.start_genome = np.array([*np.full(inner.dim, 0.5), 1.0])

    @property
    def gene_names(self) -> list[str]:
        return [g.name for g in self.genes]

    def effective(self, x: Sequence[float]) -> np.ndarray:
        """The inner space's unit genome ``tau * anchor + (1 - tau) * x``."""
        u = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        if u.shape != (self.dim,):
            raise ValueError(f"trust: a genome has {self.dim} genes, got {u.shape}")
        tau = float(u[-1])
        return tau * self.anchor + (1.0 - tau) * u[:-1]

    def decode(self, x: Sequence[float]) -> Any:
        return self.inner.decode(self.effective(x))

    def describe(self, x: Sequence[float]) -> dict[str, Any]:
        tau = float(np.clip(np.asarray(x, dtype=float)[-1], 0.0, 1.0))
        return {**self.inner.describe(self.effective(x)), TRUST_GENE: round(tau, 6)}


def trusted_prior(prior: Prior, trust: float = TRUST_START) -> Prior:
    """The start of a :class:`TrustedSpace` search: the free genome blind (0.5, sigma
    1/6, box [0, 1]), the trust gene at ``trust`` with sigma 1/6, box [0, 1]."""
    d = len(prior.mean)
    reasons = tuple(f"free genome (blind start); the prior says: {r}" for r in prior.reasons)
    return Prior(
        mean=np.array([*np.full(d, 0.5), trust]),
        sigma=np.full(d + 1, SIGMA_BLIND),
        lower=np.zeros(d + 1),
        upper=np.ones(d + 1),
        reasons=(*reasons, f"MRI trust starts at {trust} (1: the prior's genome)"),
    )
