"""The tiny demo parents: random tiny models of every family and the tiny evaluation
tokenizer / LM (``zoo.tiny``), and the trained zoo (tokenizer, synthetic skills, base /
father / mother, the ``zoo`` task source and probe set, the hand-made winning recipe).

The zoo is a plug-in: the library never imports it; the task-source and probe-set registries name
``zoo.tasks`` and ``zoo.probes`` in their plug-in tables and import them the first time
``zoo`` is asked for; they register the ``zoo`` task source and probe set.
"""

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
    tiny_model,
    tiny_tokenizer,
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
    "tiny_model",
    "tiny_tokenizer",
    "to_recipe",
    "zoo_items",
]
