"""The tiny demo parents: random tiny models of every family (``zoo.tiny``), and the
trained zoo (tokenizer, synthetic skills, base / father / mother, the ``zoo`` task
source and the hand-made winning recipe)."""

from darwinmerge.zoo import tasks as _tasks  # noqa: F401  (registers the "zoo" task source)
from darwinmerge.zoo.build import (
    PARENTS,
    ZOO_FORMAT,
    ZooConfig,
    build_zoo,
    micro_config,
    read_manifest,
)
from darwinmerge.zoo.recipes import RECIPES, WINNING, Entry, HandRecipe, mother_share, to_recipe
from darwinmerge.zoo.skills import CATEGORIES, eval_items, make_world
from darwinmerge.zoo.tasks import zoo_items
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
    "CATEGORIES",
    "FAMILIES",
    "LAYOUTS",
    "MTP_TENSOR_NAMES",
    "PARENTS",
    "RECIPES",
    "WINNING",
    "ZOO_FORMAT",
    "Entry",
    "HandRecipe",
    "ZooConfig",
    "add_fake_mtp",
    "build_tiny_model",
    "build_zoo",
    "eval_items",
    "make_parent_pair",
    "make_world",
    "micro_config",
    "mother_share",
    "read_manifest",
    "save_tiny",
    "tiny_config",
    "to_recipe",
    "zoo_items",
]
