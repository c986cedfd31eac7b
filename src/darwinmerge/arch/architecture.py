"""One checkpoint's architecture: family, layers, experts, layout, and every tensor's role.

:func:`~darwinmerge.arch.detect.detect_architecture` builds it; :class:`Architecture`
answers, for a stored name, its :class:`TensorRole` and canonical :class:`Piece` s, and
for a canonical piece, where this checkpoint stores it (:meth:`Architecture.locate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from darwinmerge.arch.roles import Piece, TensorRole
from darwinmerge.arch.tables import FamilySpec
from darwinmerge.errors import ArchitectureMismatchError, MergeError

__all__ = ["Architecture", "text_config"]

Index = tuple[Any, ...]


def text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language-model part of a config (``text_config`` of a multimodal wrapper)."""
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def _classify(spec: FamilySpec, name: str, num_experts: int | None) -> TensorRole:
    for scope in spec.scopes:
        if not name.startswith(scope.stored):
            continue
        rest = name[len(scope.stored) :]
        if scope.rules is None:
            return TensorRole(name, None, scope.component or "other", scope.canonical + rest)
        for r in scope.rules:
            match = r.pattern.fullmatch(rest)
            if match is None:
                continue
            groups = match.groupdict()
            layer = int(groups["layer"]) if groups.get("layer") is not None else None
            expert = int(groups["expert"]) if groups.get("expert") is not None else None
            relative = r.canonical.format(**groups) if r.canonical is not None else rest
            return TensorRole(
                name=name,
                layer=layer if scope.keep_layer else None,
                component=scope.component or r.component,
                canonical=scope.canonical + relative,
                expert=expert,
                expert_axis=0 if r.fused else None,
                num_experts=num_experts if r.fused else None,
                proj=r.proj or groups.get("proj"),
            )
    raise MergeError(
        f"tensor {name!r} is unknown to the {spec.family} architecture table; "
        "the checkpoint may belong to another family or carry extra modules "
        "(see docs/architectures.md)"
    )


class Architecture:
    """Architecture of one checkpoint; build it with :func:`detect_architecture`."""

    def __init__(
        self,
        *,
        spec: FamilySpec,
        model_type: str,
        num_layers: int,
        layer_types: list[str],
        num_experts: int | None,
        top_k: int | None,
        vocab_size: int,
        hidden_size: int,
        expert_intermediate_size: int | None,
        multimodal: bool,
        keys: Sequence[str],
        shapes: Mapping[str, tuple[int, ...]] | None,
    ) -> None:
        self.spec = spec
        self.family = spec.family
        self.model_type = model_type
        self.num_layers = num_layers
        self.layer_types = list(layer_types)
        self.num_experts = num_experts
        self.top_k = top_k
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.expert_intermediate_size = expert_intermediate_size
        self.keys: tuple[str, ...] = tuple(keys)
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in (shapes or {}).items()}
        self._roles: dict[str, TensorRole] = {}
        unknown: list[str] = []
        for name in self.keys:
            try:
                self._roles[name] = self._classify(name)
            except MergeError:
                unknown.append(name)
        #: Stored tensors no rule of the family matches (``role`` raises for them).
        self.unknown: tuple[str, ...] = tuple(unknown)
        self.prefix = (
            "model.language_model."
            if any(k.startswith("model.language_model.") for k in self.keys)
            else "model."
        )
        self.multimodal = multimodal or any(r.component == "vision" for r in self._roles.values())
        self.expert_layout = self._detect_layout()
        self._locations: dict[str, tuple[str, Index]] = {}
        for name in self._roles:
            for piece in self.pieces(name):
                if piece.canonical in self._locations:
                    other = self._locations[piece.canonical][0]
                    raise MergeError(
                        f"tensors {other!r} and {name!r} both hold {piece.canonical!r}; "
                        "the checkpoint mixes two copies of the same weight"
                    )
                self._locations[piece.canonical] = (name, piece.index)

    # ------------------------------------------------------------------ roles
    def _classify(self, name: str) -> TensorRole:
        role = _classify(self.spec, name, self.num_experts)
        shape = self.shapes.get(name)
        if role.fused and shape is not None and role.num_experts != shape[0]:
            raise ArchitectureMismatchError(
                f"tensor {name!r} stacks {shape[0]} experts "
                f"but the config says num_experts={role.num_experts}"
            )
        if (
            role.expert is not None
            and self.num_experts is not None
            and role.expert >= self.num_experts
        ):
            raise ArchitectureMismatchError(
                f"tensor {name!r} is expert {role.expert} "
                f"but the config says num_experts={self.num_experts}"
            )
        return role

    def role(self, name: str) -> TensorRole:
        """The role of a stored tensor; an unknown tensor raises :class:`MergeError`."""
        role = self._roles.get(name)
        return role if role is not None else self._classify(name)

    def roles(self) -> list[TensorRole]:
        """Roles of every known stored tensor, in stored order (``unknown`` left out)."""
        return list(self._roles.values())

    def _expert_size(self, name: str, role: TensorRole) -> int:
        shape = self.shapes.get(name)
        if shape is not None:
            return shape[1] // 2 if role.proj == "gate_up" else shape[2]
        if self.expert_intermediate_size is None:
            raise MergeError(f"tensor {name!r}: expert size unknown (no shape and no config value)")
        return self.expert_intermediate_size

    def pieces(self, name: str) -> list[Piece]:
        """Canonical pieces of a stored tensor: one for a plain tensor, one per expert
        (and per projection: 2E for ``gate_up_proj``) for a fused tensor."""
        role = self.role(name)
        if not role.fused:
            return [Piece(role.canonical, ())]
        experts_prefix = role.canonical.rsplit(".", 1)[0]  # "...mlp.experts"
        count = role.num_experts
        if count is None:
            raise MergeError(f"tensor {name!r}: expert count unknown (config has no expert count)")
        if role.proj == "down":
            return [Piece(f"{experts_prefix}.{e}.down_proj.weight", (e,)) for e in range(count)]
        size = self._expert_size(name, role)
        out: list[Piece] = []
        for e in range(count):
            out.append(Piece(f"{experts_prefix}.{e}.gate_proj.weight", (e, slice(0, size))))
            out.append(Piece(f"{experts_prefix}.{e}.up_proj.weight", (e, slice(size, 2 * size))))
        return out

    def locate(self, canonical: str) -> tuple[str, Index] | None:
        """Where this checkpoint stores a canonical piece: ``(stored name, index)``."""
        return self._locations.get(canonical)

    def canonical_keys(self) -> list[str]:
        """Every canonical piece this checkpoint holds, in stored order."""
        return list(self._locations)

    def piece_shape(self, canonical: str) -> tuple[int, ...] | None:
        """Shape of one canonical piece (``None`` when absent or shapes are unknown)."""
        where = self.locate(canonical)
        if where is None or where[0] not in self.shapes:
            return None
        name, index = where
        shape = self.shapes[name]
        if not index:
            return shape
        rest = shape[1:]
        if len(index) == 2:
            sl = index[1]
            rest = (sl.stop - sl.start, *rest[1:])
        return rest

    # ------------------------------------------------------------------ summary
    @property
    def has_mtp(self) -> bool:
        return any(r.component == "mtp" for r in self._roles.values())

    @property
    def has_vision(self) -> bool:
        return any(r.component == "vision" for r in self._roles.values())

    def mlp_types(self) -> list[str]:
        """Per decoder layer: ``"moe"``, ``"dense"`` or ``"none"`` (from the tensors)."""
        kinds = ["none"] * self.num_layers
        for role in self._roles.values():
            if role.layer is None or role.component == "mtp":
                continue
            if role.component == "experts":
                kinds[role.layer] = "moe"
            elif role.component == "dense_mlp" and kinds[role.layer] == "none":
                kinds[role.layer] = "dense"
        return kinds

    def _detect_layout(self) -> str | None:
        fused = [r.name for r in self._roles.values() if r.component == "experts" and r.fused]
        split = [
            r.name
            for r in self._roles.values()
            if r.component == "experts" and r.expert is not None
        ]
        if fused and split:
            raise MergeError(
                f"expert tensors are stored both fused ({fused[0]!r}) "
                f"and per expert ({split[0]!r}); "
                "save the checkpoint in one layout"
            )
        return "fused" if fused else "per_expert" if split else None

    def __repr__(self) -> str:
        return (
            f"Architecture(family={self.family!r}, model_type={self.model_type!r}, "
            f"num_layers={self.num_layers}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"expert_layout={self.expert_layout!r}, "
            f"prefix={self.prefix!r}, multimodal={self.multimodal})"
        )
