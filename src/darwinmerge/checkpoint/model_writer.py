"""Writing tensors into a resident torch model: the one writer that the in-memory merge,
the evaluation backend's ``load_state``, the MRI layer swap and the health localization
share. It sits below merging and scoring, so that evaluation and the MRI write weights
without importing the merge engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from darwinmerge.errors import ArchitectureMismatchError, MergeError

__all__ = ["ModelWriter", "write_into_model"]


class ModelWriter:
    """The state-dict view of one model, with its tied-weight groups, for repeated writes.

    ``write`` is :func:`write_into_model`; keeping the writer avoids rebuilding the
    state dict (and the tied groups) on every call. Build a new one when the model's
    parameters are replaced (not merely written into).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.state: dict[str, torch.Tensor] = dict(model.state_dict(keep_vars=False))
        groups: dict[tuple[Any, ...], list[str]] = {}
        for name, t in self.state.items():
            key = (t.device, t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
            groups.setdefault(key, []).append(name)
        #: name -> every state-dict name sharing its storage (itself included), in order.
        self.tied: dict[str, tuple[str, ...]] = {}
        for names in groups.values():
            if len(names) > 1:
                for n in names:
                    self.tied[n] = tuple(names)

    def stale(self) -> bool:
        """True when the model's parameters were replaced since this view was taken
        (``model.to(...)`` to another device or dtype allocates new storage)."""
        for name, param in self.model.named_parameters():
            held = self.state.get(name)
            return held is None or held.data_ptr() != param.data_ptr()
        return False

    def write(self, tensors: Mapping[str, torch.Tensor], *, strict: bool = False) -> None:
        """Copy ``tensors`` into the model (see :func:`write_into_model`)."""
        own = self.state
        unknown = [n for n in tensors if n not in own]
        if unknown:
            raise MergeError(
                f"{len(unknown)} tensor(s) not in the model, e.g. {unknown[0]!r} "
                f"(names must be the model's state-dict names)"
            )
        if strict:
            given = set(tensors)
            missing = [
                n for n in own if n not in given and not given.intersection(self.tied.get(n, ()))
            ]
            if missing:
                raise MergeError(
                    f"{len(missing)} model tensor(s) not given, e.g. {missing[0]!r} (strict)"
                )
        for name, value in tensors.items():
            if tuple(value.shape) != tuple(own[name].shape):
                raise ArchitectureMismatchError(
                    f"tensor {name!r} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(own[name].shape)}"
                )
        first_of: dict[str, str] = {}  # tied group head -> first given name
        todo: list[str] = []
        for name in tensors:
            group = self.tied.get(name)
            if group is None:
                todo.append(name)
                continue
            first = first_of.setdefault(group[0], name)
            if first == name:
                todo.append(name)
                continue
            dst = own[name]
            a = tensors[first].to(device=dst.device, dtype=dst.dtype)
            b = tensors[name].to(device=dst.device, dtype=dst.dtype)
            if not torch.equal(a, b):
                raise MergeError(
                    f"{first!r} and {name!r} are tied (one tensor) in the model "
                    f"but were given different values"
                )
        with torch.no_grad():
            for name in todo:
                own[name].copy_(tensors[name])


def write_into_model(
    model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], *, strict: bool = False
) -> None:
    """Copy ``tensors`` (named as in ``model.state_dict()``) into the model's own storage.

    Values are cast to each parameter's dtype and device; the storage is reused (no
    reallocation). Tied weights (``lm_head.weight`` sharing ``embed_tokens``'s storage)
    are one tensor: writing either name updates both, once; giving two different values
    for tied names is an error. A subset is fine unless ``strict`` (then every model
    tensor must be given, a tied alias counting as given). Unknown names and tied
    conflicts raise :class:`MergeError`, shape mismatches
    :class:`ArchitectureMismatchError`, each one line naming the tensor; nothing is
    written when a check fails.
    """
    ModelWriter(model).write(tensors, strict=strict)
