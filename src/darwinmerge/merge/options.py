"""How a merge runs (never what it computes): one frozen options object.

:class:`MergeOptions` is what a user sets (``darwin merge --kernels off``, ``--kernel
NAME=off``, ``--no-direct-reads``; the ``options:`` section of an evolve or run config):

* ``kernels``: which fast implementations (:mod:`darwinmerge.merge.kernels`) may replace
  the reference maths of :mod:`darwinmerge.merge.ops`, by kernel name; a name not listed
  keeps its default (on). The exact kernels give bit-identical results (tested); the
  one marked inexact (``streamed_slerp``) agrees to float32 rounding.
* ``direct_reads``: when a merge drops the parents' page cache, read past it with
  ``O_DIRECT`` where the file system allows (else buffered reads, dropped in batches);
* ``debug``: print the traceback of a failed candidate (the search goes on).

:class:`KernelContext` is the per-job view the executor hands down to a kernel: the
options and how many threads the job may use inside one op. Nothing in the package reads
an environment variable or a thread-local to change behaviour; this is the one channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["KERNEL_NAMES", "DEFAULT_OPTIONS", "KernelContext", "MergeOptions"]

#: every kernel name, with what it replaces (the registry in :mod:`.kernels` checks that
#: it implements exactly these; this module stays free of torch)
KERNEL_NAMES: dict[str, str] = {
    "streamed_task_arithmetic": "task arithmetic / TIES / DARE / breadcrumbs in cache-sized "
    "chunks with a sign-bit radix select (bit-identical)",
    "numba": "compiled loops inside streamed_task_arithmetic: mix pass, high bits, bucket "
    "members, DARE draws (bit-identical; needs numba)",
    "streamed_slerp": "slerp's norms and dot product in chunks, no full-size float32 copies "
    "(equal to float32 rounding)",
}


class MergeOptions(BaseModel):
    """How a merge runs; see the module docstring. Frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kernels: dict[str, bool] = {}
    direct_reads: bool = True
    debug: bool = False

    @field_validator("kernels")
    @classmethod
    def _known_kernels(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(KERNEL_NAMES))
        if unknown:
            raise ValueError(
                f"unknown kernel(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(KERNEL_NAMES)}"
            )
        return value

    def uses(self, kernel: str) -> bool:
        """Whether ``kernel`` may run (on unless turned off by name)."""
        return self.kernels.get(kernel, True)

    @classmethod
    def reference(cls) -> MergeOptions:
        """Every kernel off: the reference maths of :mod:`darwinmerge.merge.ops` only."""
        return cls(kernels=dict.fromkeys(KERNEL_NAMES, False))


DEFAULT_OPTIONS = MergeOptions()


@dataclass(frozen=True)
class KernelContext:
    """What one job's kernels may use: the options, and ``threads`` for one op's inner
    loops (a job that runs alone gets the merge's threads; the result is the same)."""

    options: MergeOptions = field(default_factory=MergeOptions)
    threads: int = 1

    def uses(self, kernel: str) -> bool:
        return self.options.uses(kernel)
