"""mergekit YAML import / export."""

from pathlib import Path

import pytest
import yaml

from darwinmerge.errors import ConfigError
from darwinmerge.merge.mergekit_io import load_any_config, recipe_from_mergekit, recipe_to_mergekit
from darwinmerge.merge.recipe import resolve_schedule


def test_slerp_import_puts_base_first_and_keeps_filters():
    cfg = yaml.safe_load("""
merge_method: slerp
base_model: /m/a
models: [{model: /m/a}, {model: /m/b}]
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 1]
    - filter: mlp
      value: [1, 0.5, 0]
    - value: 0.5
dtype: bfloat16
""")
    r = recipe_from_mergekit(cfg)
    assert [p.path for p in r.parents] == ["/m/a", "/m/b"]
    assert r.base is None and r.dtype == "bfloat16"
    t = r.parameters["t"]
    kw = dict(component="attn", num_layers=5)
    assert (
        resolve_schedule(t, layer=2, tensor_name="model.layers.2.self_attn.q_proj.weight", **kw)
        == 0.5
    )
    assert (
        resolve_schedule(t, layer=1, tensor_name="model.layers.1.self_attn.q_proj.weight", **kw)
        == 0.25
    )
    assert (
        resolve_schedule(t, layer=1, tensor_name="model.layers.1.mlp.up_proj.weight", **kw) == 0.75
    )
    assert (
        resolve_schedule(t, layer=1, tensor_name="model.layers.1.input_layernorm.weight", **kw)
        == 0.5
    )
    back = recipe_to_mergekit(r)
    assert back["base_model"] == "/m/a" and back["merge_method"] == "slerp"
    assert recipe_from_mergekit(back) == r


def test_ties_import_separates_base_and_per_model_params():
    cfg = yaml.safe_load("""
merge_method: ties
base_model: /m/base
models:
  - model: /m/base
  - model: /m/x
    parameters: {weight: 0.7, density: 0.5}
  - model: /m/y
    parameters: {weight: [0.1, 0.3], density: 0.9}
parameters: {normalize: true, int8_mask: true}
""")
    r = recipe_from_mergekit(cfg)
    assert r.base == "/m/base"
    assert [p.name for p in r.parents] == ["x", "y"]
    assert r.parents[0].parameters == {"weight": 0.7, "density": 0.5}
    assert r.parameters == {"normalize": True}  # int8_mask only changes how mergekit computes


def test_slices_become_layer_rules_and_slice_beats_global():
    cfg = yaml.safe_load("""
merge_method: slerp
base_model: /m/a
slices:
  - sources:
      - {model: /m/a, layer_range: [0, 2]}
      - {model: /m/b, layer_range: [0, 2]}
    parameters: {t: 0.2}
  - sources:
      - {model: /m/a, layer_range: [2, 4]}
      - {model: /m/b, layer_range: [2, 4]}
parameters: {t: 0.9}
""")
    r = recipe_from_mergekit(cfg)
    t = r.parameters["t"]
    vals = [
        resolve_schedule(t, layer=i, component="attn", tensor_name="x", num_layers=4)
        for i in range(4)
    ]
    assert vals == [0.2, 0.2, 0.9, 0.9]

    # mergekit reads embeddings with the first slice, final norm and lm_head with the last
    def non_layer(component):
        return resolve_schedule(t, layer=None, component=component, tensor_name="x", num_layers=4)

    assert non_layer("embed") == 0.2
    assert non_layer("lm_head") == 0.9 and non_layer("final_norm") == 0.9


def test_frankenmerge_imports_as_slices_and_bad_configs_refused():
    stack = yaml.safe_load("""
merge_method: passthrough
slices:
  - sources: [{model: /m/a, layer_range: [0, 2]}]
  - sources: [{model: /m/a, layer_range: [0, 2], parameters: {scale: 0.5}}]
""")
    recipe = recipe_from_mergekit(stack)
    assert [p.path for p in recipe.parents] == ["/m/a"] and recipe.slices is not None
    assert [(s.sources[0].parent, s.sources[0].layers) for s in recipe.slices] == [
        ("a", (0, 2)),
        ("a", (0, 2)),
    ]
    assert recipe.slices[1].sources[0].parameters == {"scale": 0.5}
    uneven = yaml.safe_load("""
merge_method: linear
slices:
  - sources: [{model: /m/a, layer_range: [0, 2]}, {model: /m/b, layer_range: [0, 3]}]
""")
    with pytest.raises(ConfigError, match="every source must span the same number of layers"):
        recipe_from_mergekit(uneven)
    with pytest.raises(ConfigError, match="slerp needs base_model"):
        recipe_from_mergekit(
            {
                "merge_method": "slerp",
                "models": [{"model": "/a"}, {"model": "/b"}],
                "parameters": {"t": 0.5},
            }
        )
    with pytest.raises(ConfigError, match="did you mean"):
        recipe_from_mergekit(
            {"merge_method": "linaer", "models": [{"model": "/a"}, {"model": "/b"}]}
        )


def test_load_any_config_detects_format_resolves_paths_and_overrides(tmp_path: Path):
    (tmp_path / "mk.yaml").write_text(
        "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n"
        "  - {model: b, parameters: {weight: 3}}\n"
    )
    r = load_any_config(tmp_path / "mk.yaml", ["dtype=float16"])
    assert r.parents[0].path == str((tmp_path / "a").resolve())
    assert r.dtype == "float16"
    (tmp_path / "d.yaml").write_text(
        "parents: [{name: f, path: a}, {name: m, path: b}]\nmethod: slerp\nparameters: {t: 0.5}\n"
    )
    r = load_any_config(tmp_path / "d.yaml", ["parameters.t=0.25", "seed=4"])
    assert r.parameters["t"] == 0.25 and r.seed == 4
    with pytest.raises(ConfigError, match="expected key=value"):
        load_any_config(tmp_path / "d.yaml", ["seed"])
    with pytest.raises(ConfigError, match="not found"):
        load_any_config(tmp_path / "nope.yaml")
