"""The tiny demo parents: random tiny models of every family (``zoo.tiny``), and the
trained zoo (tokenizer, synthetic skills, base / father / mother)."""

from darwinmerge.zoo.tiny import (
    FAMILIES,
    LAYOUTS,
    MTP_TENSOR_NAMES,
    add_fake_mtp,
    build_tiny_model,
    make_parent_pair,
    save_tiny,
    tiny_config,
)

__all__ = [
    "FAMILIES",
    "LAYOUTS",
    "MTP_TENSOR_NAMES",
    "add_fake_mtp",
    "build_tiny_model",
    "make_parent_pair",
    "save_tiny",
    "tiny_config",
]
