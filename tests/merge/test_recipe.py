"""Recipe validation, YAML round trip and schedule resolution."""

import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.merge.recipe import Recipe, Rule, resolve_router, resolve_schedule


def _recipe(**kw):
    data = {
        "parents": [{"name": "father", "path": "/a"}, {"name": "mother", "path": "/b"}],
        "method": "slerp",
        "parameters": {"t": 0.5},
    }
    data.update(kw)
    return Recipe.parse(data)


def where(layer, component="attn", name="model.layers.0.self_attn.q_proj.weight", n=5):
    return dict(layer=layer, component=component, tensor_name=name, num_layers=n)


def test_scalar_gradient_and_rules():
    assert resolve_schedule(0.3, **where(2)) == 0.3
    # gradient over 5 layers: t = l / 4 -> anchors [0, 1]
    assert resolve_schedule([0.0, 1.0], **where(0)) == 0.0
    assert resolve_schedule([0.0, 1.0], **where(1)) == pytest.approx(0.25)
    assert resolve_schedule([0.0, 1.0], **where(4)) == 1.0
    # three anchors: layer 1 -> t=0.25 -> scaled 0.5 between 0 and 10
    assert resolve_schedule([0.0, 10.0, 20.0], **where(1)) == pytest.approx(5.0)
    # non-layer tensors (embeddings, final norm, lm_head) read a gradient at t=0, as
    # mergekit 0.1.5 does for its pre and post weights
    assert resolve_schedule([0.2, 0.8], **where(None, "embed")) == pytest.approx(0.2)
    assert resolve_schedule([0.2, 0.8], **where(None, "lm_head")) == pytest.approx(0.2)
    rules = [
        Rule(component="attention", value=0.1),
        Rule(layers=(3, 4), value=[0.5, 0.9]),
        Rule(filter="mlp.gate", value=0.7),
        Rule(value=0.4),
    ]
    assert resolve_schedule(rules, **where(4, "linear_attn")) == 0.1  # group 'attention'
    assert resolve_schedule(rules, **where(3, "experts")) == pytest.approx(
        0.5
    )  # block gradient start
    assert resolve_schedule(rules, **where(4, "experts")) == pytest.approx(0.9)
    assert resolve_schedule(rules, **where(1, "router", "model.layers.1.mlp.gate.weight")) == 0.7
    assert resolve_schedule(rules, **where(1, "experts")) == 0.4
    assert resolve_schedule([Rule(layers=(0, 1), value=1.0)], **where(3)) is None


def test_seed_style_three_block_recipe_and_router():
    r = _recipe(
        parameters={
            "t": [
                {"layers": [0, 2], "value": 0.599},
                {"layers": [3, 3], "value": 0.9},
                {"layers": [4, 4], "value": 0.534},
            ]
        },
        router=[{"layers": [0, 3], "source": "mother"}, {"layers": [4, 4], "source": "father"}],
    )
    vals = [resolve_schedule(r.parameters["t"], **where(layer)) for layer in range(5)]
    assert vals == pytest.approx([0.599, 0.599, 0.599, 0.9, 0.534])
    assert [resolve_router(r, layer) for layer in range(5)] == ["mother"] * 4 + ["father"]


def test_yaml_round_trip_is_identity():
    r = _recipe(
        parameters={"t": [{"component": "mlp", "value": [0.2, 0.8]}, {"value": 0.5}]},
        transplants=[{"layer": 1, "expert": 2, "source": "father"}],
        router="mother",
        dtype="bfloat16",
        seed=7,
    )
    again = Recipe.from_yaml(r.to_yaml())
    assert again == r
    assert again.donor_name == "father"


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Recipe.parse(
            {
                "parents": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}],
                "method": "slerp",
                "parameters": {"t": 0.5, "bogus": 1},
                "donor": "zed",
                "router": "nobody",
                "transplants": [{"layer": 0, "expert": 1, "source": "ghost"}],
            },
            source="r.yaml",
        )
    msg = str(info.value)
    assert msg.startswith("r.yaml:")
    for part in (
        "duplicate names",
        "donor: 'zed'",
        "router: source 'nobody'",
        "transplants[0].source",
        "parameters.bogus",
    ):
        assert part in msg, part
    assert "\n" not in msg


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        _recipe(method="tiez")
    assert "did you mean 'ties'" in str(info.value)
    assert "slerp" in str(info.value)


def test_task_vector_method_needs_base_and_field_errors():
    with pytest.raises(ConfigError, match="base: method ties needs a base"):
        _recipe(method="ties", parameters={})
    with pytest.raises(ConfigError, match="unknown component 'atn'"):
        _recipe(parameters={"t": [{"component": "atn", "value": 0.1}]})
    with pytest.raises(ConfigError, match="layers must be"):
        _recipe(parameters={"t": [{"layers": [3, 1], "value": 0.1}]})
    with pytest.raises(ConfigError, match="colour: Extra inputs are not permitted"):
        _recipe(colour="blue")


def test_one_parent_needs_a_base():
    with pytest.raises(ConfigError, match="at least two parents"):
        Recipe.parse(
            {
                "parents": [{"name": "a", "path": "/a"}],
                "method": "linear",
                "parameters": {"weight": 1.0},
            }
        )
    r = Recipe.parse(
        {
            "parents": [{"name": "a", "path": "/a"}],
            "base": "/b",
            "method": "ties",
            "parameters": {"weight": 1.0, "density": 0.5},
        }
    )
    assert r.donor_name == "a"


def test_parameter_values_are_range_checked_at_parse_time_all_at_once():
    with pytest.raises(ConfigError) as info:
        Recipe.parse(
            {
                "parents": [
                    {"name": "a", "path": "/a", "parameters": {"density": 0.0}},
                    {"name": "b", "path": "/b", "parameters": {"density": [0.5, 1.2]}},
                ],
                "base": "/c",
                "method": "della",
                "parameters": {
                    "weight": [0.3, float("nan")],
                    "epsilon": [{"component": "attention", "value": 1.0}, {"value": 0.1}],
                    "density": [{"layers": [0, 1], "value": [0.4, -0.1]}, {"value": 0.5}],
                    "normalize": 0.5,
                },
            },
            source="r.yaml",
        )
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("r.yaml: ")
    for part in (
        "parents[a].parameters.density: 0.0 is not valid for della (must be a number in (0, 1])",
        "parents[b].parameters.density[1]: 1.2 is not valid",
        "parameters.weight[1]: nan is not valid for della (must be a finite number)",
        "parameters.epsilon[0].value: 1.0 is not valid for della (must be a number in [0, 1))",
        "parameters.density[0].value[1]: -0.1 is not valid",
        "parameters.normalize: 0.5 is not valid for della (must be true or false)",
    ):
        assert part in msg, part
    # the valid values of the same schedules are not reported
    assert "parameters.weight[0]" not in msg and "parameters.epsilon[1]" not in msg
    assert msg.count("is not valid") == 6


def test_boundaries_follow_the_declaration():
    def ok(**params):
        return _recipe(method="slerp", parameters=params)

    ok(t=0.0), ok(t=1.0), ok(t=[0.0, 1.0])
    with pytest.raises(ConfigError, match=r"parameters.t: 1.5 is not valid for slerp .*\[0, 1\]"):
        ok(t=1.5)
    with pytest.raises(ConfigError, match=r"parameters.t\[2\]: -0.01"):
        ok(t=[0.2, 0.5, -0.01])
    base = {"base": "/c", "method": "ties"}
    _recipe(**base, parameters={"weight": 1.0, "density": 1.0})  # (0, 1]: 1 is in
    with pytest.raises(ConfigError, match=r"density: 0.0 is not valid .*\(0, 1\]"):
        _recipe(**base, parameters={"weight": 1.0, "density": 0.0})


def test_input_count_and_required_values_from_the_declaration():
    three = [{"name": n, "path": f"/{n}"} for n in "abc"]
    with pytest.raises(ConfigError, match="parents: slerp merges exactly 2 parents, got 3"):
        Recipe.parse({"parents": three, "method": "slerp", "parameters": {"t": 0.5}})
    with pytest.raises(ConfigError, match="parameters.t: slerp's parameter 't' has no value"):
        _recipe(parameters={})
    # a per-model value given for one parent only: the other is reported by name
    with pytest.raises(ConfigError) as info:
        Recipe.parse(
            {
                "parents": [
                    {"name": "a", "path": "/a", "parameters": {"weight": 1.0}},
                    {"name": "b", "path": "/b"},
                ],
                "method": "linear",
            }
        )
    assert "parents[b].parameters.weight" in str(info.value)
    assert "parents[a]" not in str(info.value)


def test_della_joint_rule_is_checked_at_parse_time_when_values_are_single_numbers():
    def della(parent_b=None, **params):
        b = {"name": "b", "path": "/b", **({"parameters": parent_b} if parent_b else {})}
        return Recipe.parse(
            {
                "parents": [{"name": "a", "path": "/a"}, b],
                "base": "/c",
                "method": "della",
                "parameters": {"weight": 1.0, **params},
            }
        )

    della(density=0.5, epsilon=0.2)
    della(density=1.0, epsilon=0.5)  # density 1: nothing pruned, no window needed
    with pytest.raises(ConfigError) as info:
        della(density=0.5, epsilon=0.2, parent_b={"density": 0.9})
    msg = str(info.value)
    assert "parents[b].parameters: density=0.9 and epsilon=0.2 must keep" in msg
    assert "parents[a]" not in msg
    # a per-layer schedule is checked per tensor at merge time instead
    della(density=[0.5, 0.9], epsilon=0.2)
