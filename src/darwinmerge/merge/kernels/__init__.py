"""Fast implementations of named merge ops, chosen by the merge's options.

The maths lives in :mod:`darwinmerge.merge.ops` as plain reference functions. A
:class:`Kernel` computes some of those methods faster on some inputs; :func:`run_method`
(what the executor calls for every merge job) validates the call once
(:func:`~darwinmerge.merge.ops.api.prepare_call`), runs the first kernel that the
options allow and that accepts the call, else the reference.

=========================== ============================================= =========
kernel                      methods                                        results
=========================== ============================================= =========
``streamed_task_arithmetic`` task_arithmetic, ties, dare_ties, dare_linear, bit-identical
                            breadcrumbs, breadcrumbs_ties (float32 maths,
                            CPU, groups of >= ``MIN_GROUP`` elements)
``numba``                   the compiled loops inside the one above         bit-identical
``streamed_slerp``          slerp (float32, CPU, large groups)             float32 rounding
=========================== ============================================= =========

Every kernel is checked against its reference by ``tests/merge_ops/test_kernels.py``
(one parametrized suite over :data:`KERNELS`). Turn kernels off by name with
``MergeOptions(kernels={"numba": False})`` (``darwin merge --kernel numba=off``) or all
at once (``MergeOptions.reference()``, ``--kernels off``).
"""

from darwinmerge.merge.kernels.api import KERNELS, Kernel, kernel, run_call, run_method
from darwinmerge.merge.kernels.catalog import streamable, streamed_gta

__all__ = [
    "KERNELS",
    "Kernel",
    "kernel",
    "run_call",
    "run_method",
    "streamable",
    "streamed_gta",
]
