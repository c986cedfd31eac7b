"""The dtype names darwinmerge accepts (recipes, configs, flags), and their torch dtypes.

The one table of them: configs validate a name against :data:`DTYPE_NAMES` (or type it
:data:`DTypeName`) without importing torch; code that loads or writes tensors maps the
name with :func:`torch_dtype`. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from darwinmerge.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPE_NAMES", "DTypeName", "dtype_name", "torch_dtype"]

DTypeName = Literal["float32", "bfloat16", "float16"]
#: The dtype names, in the order help texts list them.
DTYPE_NAMES: tuple[str, ...] = get_args(DTypeName)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of ``name`` (one of :data:`DTYPE_NAMES`); another name raises
    :class:`ConfigError` listing the known ones."""
    import torch

    if name not in DTYPE_NAMES:
        raise ConfigError(f"dtype {name!r} is not one of {', '.join(DTYPE_NAMES)}")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a torch dtype (``torch.bfloat16`` -> ``"bfloat16"``), one of
    :data:`DTYPE_NAMES`."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ConfigError(f"dtype {dtype} is not one of {', '.join(DTYPE_NAMES)}")
    return name
