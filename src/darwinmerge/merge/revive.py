"""Dead-expert revival: the ``revive:`` recipe field turned into expert transplants.

Per sparse layer, every expert a scan finds dead in the receiving parent (``into``,
default the donor) becomes the ``source`` parent's expert in the same slot, all
projections verbatim and its router row copied verbatim (the row is that expert's
routing key: the gate scores it against the hidden state, so a kept dead row would keep
routing no tokens to the revived expert). The planner applies them with the ordinary
:class:`~darwinmerge.merge.recipe.Transplant` machinery.

The merge layer does not read MRI scans itself (it sits below the MRI): a reader that
turns a saved scan into dead experts registers in :data:`SCAN_READERS`
(``darwinmerge.mri.revival`` registers the MRI's; it is imported the first time a
reader is asked for).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from darwinmerge.errors import ConfigError
from darwinmerge.merge.recipe import Recipe, Transplant
from darwinmerge.registry import Registry

__all__ = ["SCAN_READERS", "DeadExperts", "ScanReader", "read_dead_experts", "revival_transplants"]


@dataclass(frozen=True)
class DeadExperts:
    """Dead experts per sparse layer, as a scan saw them.

    ``num_layers`` / ``num_experts`` / ``sparse_layers`` are the scanned model's (``None``
    for an inline map, which says nothing about them)."""

    dead: dict[int, list[int]]
    num_layers: int | None = None
    num_experts: int | None = None
    sparse_layers: tuple[int, ...] | None = None
    origin: str = "inline"


#: ``reader(path, threshold)`` -> the dead experts of the scan saved at ``path``, or
#: ``None`` when ``path`` is not in the reader's format (the next reader is tried).
ScanReader = Callable[[Path, float], DeadExperts | None]

#: the MRI registers its reader (the merge sits below the MRI and never imports it)
SCAN_READERS: Registry[ScanReader] = Registry(
    "scan reader", plugins={"mri": "darwinmerge.mri.revival"}
)

_CACHE: dict[tuple[str, int, float], DeadExperts] = {}


def read_dead_experts(
    spec: str | Mapping[int, list[int]], threshold: float, *, field: str = "revive.scan"
) -> DeadExperts:
    """Dead experts of an inline map or of a saved scan (through :data:`SCAN_READERS`)."""
    if not isinstance(spec, str):
        return DeadExperts(dead={int(k): sorted(v) for k, v in spec.items()})
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"{field}: {path} not found; give a saved MRI scan or {{layer: [...]}}")
    stamp = max((p.stat().st_mtime_ns for p in [path, *path.glob("*")]), default=0)
    key = (str(path.resolve()), stamp, float(threshold))
    if key in _CACHE:
        return _CACHE[key]
    if not len(SCAN_READERS):
        raise ConfigError(
            f"{field}: no scan reader is registered to read {path}; import "
            "darwinmerge.mri.revival (the darwin CLI does) or give the dead experts inline"
        )
    for name in SCAN_READERS:
        got = SCAN_READERS.get(name)(path, threshold)
        if got is not None:
            _CACHE[key] = got
            return got
    raise ConfigError(
        f"{field}: {path} is not a scan any reader knows ({', '.join(SCAN_READERS.names())}); "
        "give a `darwin mri` scan folder or its JSON file"
    )


def _check_against(dead: DeadExperts, arch: Any, field: str, who: str) -> None:
    moe = [i for i, kind in enumerate(arch.mlp_types()) if kind == "moe"]
    experts = arch.num_experts or 0
    if dead.num_layers is not None and (
        dead.num_layers != arch.num_layers or dead.num_experts != experts
    ):
        raise ConfigError(
            f"{field}: the scan ({dead.origin}) has {dead.num_layers} layers x "
            f"{dead.num_experts} experts but the parents have {arch.num_layers} layers x "
            f"{experts} experts; scan {who} itself"
        )
    if dead.sparse_layers is not None and list(dead.sparse_layers) != moe:
        raise ConfigError(
            f"{field}: the scan ({dead.origin}) has sparse layers {list(dead.sparse_layers)} "
            f"but the parents have {moe}; scan {who} itself"
        )
    for layer, ids in sorted(dead.dead.items()):
        if layer not in moe:
            raise ConfigError(
                f"{field}: layer {layer} is not a sparse (MoE) layer of the parents "
                f"(sparse layers: {moe})"
            )
        bad = [e for e in ids if e >= experts]
        if bad:
            raise ConfigError(
                f"{field}: layer {layer} lists expert {bad[0]} but the parents have "
                f"{experts} experts"
            )


def revival_transplants(recipe: Recipe, matching: Any) -> tuple[list[Transplant], list[str]]:
    """The transplants ``recipe.revive`` asks for on these parents, and plan notes saying
    which experts are revived per layer (and which are skipped, and why)."""
    rv = recipe.revive
    if rv is None:
        return [], []
    into = rv.into or recipe.donor_name
    arch = matching.out_arch
    dead = read_dead_experts(rv.scan, rv.threshold)
    _check_against(dead, arch, "revive.scan", into)
    donor_dead: DeadExperts | None = None
    if rv.donor_scan is not None:
        donor_dead = read_dead_experts(rv.donor_scan, rv.threshold, field="revive.donor_scan")
        _check_against(donor_dead, arch, "revive.donor_scan", rv.source)
    out: list[Transplant] = []
    notes: list[str] = []
    for layer, ids in sorted(dead.dead.items()):
        skipped = [e for e in ids if donor_dead and e in donor_dead.dead.get(layer, [])]
        kept = [e for e in ids if e not in skipped]
        out.extend(Transplant(layer=layer, expert=e, source=rv.source) for e in kept)
        if kept:
            notes.append(
                f"revive: layer {layer}: experts {kept} dead in {into} <- {rv.source}'s "
                "(projections and router rows verbatim)"
            )
        if skipped:
            notes.append(
                f"revive: layer {layer}: experts {skipped} skipped, dead in {rv.source} too "
                "(donor_scan)"
            )
    if not dead.dead or not any(dead.dead.values()):
        notes.append(f"revive: no expert of {into} is dead at threshold {rv.threshold}")
    elif donor_dead is None and out:
        notes.append(
            f"revive: the health of {rv.source}'s transplanted experts is unknown "
            "(no donor_scan given)"
        )
    return out, notes
