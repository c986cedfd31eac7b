"""One shared suite run over every registered merge method (STYLE rule 13)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
import torch

from darwinmerge.errors import ConfigError, MergeError, UnknownNameError
from darwinmerge.merge.ops import METHODS, MergeMethod, apply_method, draw_method_masks

NAMES = METHODS.names()
E, HALVES, INNER, H = 3, 2, 4, 6
WEIGHTS = [0.7, 0.4, -0.2]
DENSITIES = [0.5, 0.7, 0.4]
# methods whose result depends on per-group statistics (not just elementwise maths)
ELEMENTWISE = ("linear", "task_arithmetic", "nearswap", "ram", "passthrough")
STATISTICAL = {n for n in NAMES if n not in ELEMENTWISE}
# methods that count which models touch an entry: their inputs leave some entries alone
SPARSE_DELTAS = ("ram", "ramplus_tl")


def _inputs(
    method: MergeMethod, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    scale = (10.0 ** torch.arange(E, dtype=torch.float32)).view(E, 1, 1, 1)  # experts differ
    base = torch.randn(E, HALVES, INNER, H, generator=g)
    count = min(3, method.max_inputs or 3)
    tensors = [base + scale * torch.randn(E, HALVES, INNER, H, generator=g) for _ in range(count)]
    if method.name in SPARSE_DELTAS:  # some deltas exactly 0: few in expert 0, many in 2
        share = torch.tensor([0.1, 0.5, 0.9]).view(E, 1, 1, 1)
        keep = [torch.rand(E, HALVES, INNER, H, generator=g) < share for _ in tensors]
        tensors = [torch.where(k, t, base) for k, t in zip(keep, tensors, strict=True)]
    if method.name == "slerp":
        tensors = [base, tensors[0]]
    return [t.to(dtype) for t in tensors], (base.to(dtype) if method.needs_base else None)


def _model_params(method: MergeMethod, count: int) -> list[dict[str, float]]:
    params: list[dict[str, float]] = []
    for i in range(count):
        p: dict[str, float] = {}
        if "weight" in method.model_params:
            p["weight"] = WEIGHTS[i]
        if "density" in method.model_params:
            p["density"] = DENSITIES[i]
        params.append(p)
    return params


def _global(method: MergeMethod) -> dict[str, float | bool]:
    """A value for every required global parameter (``t``)."""
    return {k: 0.3 for k, v in method.global_params.items() if v is None}


def _complete(spec: Mapping[str, float | bool | None], given: Mapping[str, float | bool]) -> dict:
    return {**{k: v for k, v in spec.items() if v is not None}, **given}


def _run(
    method: MergeMethod,
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    group_dims: int,
    masks: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Call ``fn`` directly (so random methods can replay given masks)."""
    kwargs = {"masks": masks} if masks is not None else {}
    return method.function(
        tensors,
        base=base,
        model_params=[
            _complete(method.model_params, p) for p in _model_params(method, len(tensors))
        ],
        params=_complete(method.global_params, _global(method)),
        group_dims=group_dims,
        generator=None,
        **kwargs,
    )


def _slice_masks(masks: list[torch.Tensor | None], e: int, h: int) -> list[torch.Tensor | None]:
    return [None if m is None else m.view(E, HALVES, INNER, H)[e, h] for m in masks]


@pytest.mark.parametrize("name", NAMES)
def test_fused_groups_equal_expert_by_expert(name: str) -> None:
    method = METHODS.get(name)
    tensors, base = _inputs(method)
    masks = None
    if method.random:
        assert base is not None
        masks = draw_method_masks(
            name,
            tensors,
            base=base,
            model_params=_model_params(method, len(tensors)),
            group_dims=2,
            generator=torch.Generator().manual_seed(7),
        )
        # the masks are exactly what the generator path draws
        via_generator = apply_method(
            name,
            tensors,
            base=base,
            model_params=_model_params(method, len(tensors)),
            params=_global(method),
            group_dims=2,
            generator=torch.Generator().manual_seed(7),
        )
        assert torch.equal(via_generator, _run(method, tensors, base, 2, masks))
    fused = _run(method, tensors, base, 2, masks)
    for e in range(E):
        for h in range(HALVES):
            part = [t[e, h] for t in tensors]
            part_masks = None if masks is None else _slice_masks(masks, e, h)
            expected = _run(method, part, None if base is None else base[e, h], 0, part_masks)
            torch.testing.assert_close(fused[e, h], expected, rtol=1e-6, atol=1e-5)
    if name in STATISTICAL:  # the grouping matters: whole-tensor statistics differ
        whole = _run(method, tensors, base, 0, masks)
        assert not torch.allclose(whole, fused, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_output_dtype_and_device_follow_inputs(name: str, dtype: torch.dtype) -> None:
    method = METHODS.get(name)
    tensors, base = _inputs(method, dtype)
    out = apply_method(
        name,
        tensors,
        base=base,
        model_params=_model_params(method, len(tensors)),
        params=_global(method),
        group_dims=2,
        generator=torch.Generator().manual_seed(1),
    )
    assert out.dtype == dtype and out.device == tensors[0].device
    assert out.shape == tensors[0].shape and torch.isfinite(out).all()
    # float64 inputs are computed in float64: agree with a float32 run only to float32 precision
    if dtype == torch.float64 and not method.random:  # bernoulli draws differ by dtype
        t32, b32 = _inputs(method, torch.float32)
        out32 = apply_method(
            name,
            t32,
            base=b32,
            model_params=_model_params(method, len(t32)),
            params=_global(method),
            group_dims=2,
            generator=torch.Generator().manual_seed(1),
        )
        torch.testing.assert_close(out.float(), out32, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_same_generator_seed_is_bit_identical(name: str) -> None:
    method = METHODS.get(name)
    tensors, base = _inputs(method)

    def once(seed: int) -> torch.Tensor:
        return apply_method(
            name,
            tensors,
            base=base,
            model_params=_model_params(method, len(tensors)),
            params=_global(method),
            group_dims=2,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(once(3), once(3))
    if method.random:
        assert not torch.equal(once(3), once(4))


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_are_config_errors(name: str) -> None:
    method = METHODS.get(name)
    tensors, base = _inputs(method)
    good_mp = _model_params(method, len(tensors))
    g = torch.Generator().manual_seed(0)

    def call(mp: list[dict[str, float]], params: Mapping[str, float | bool]) -> torch.Tensor:
        return apply_method(name, tensors, base=base, model_params=mp, params=params, generator=g)

    with pytest.raises(ConfigError, match="bogus"):
        call(good_mp, {**_global(method), "bogus": 1.0})
    with pytest.raises(ConfigError, match="bogus"):
        call([{**p, "bogus": 1.0} for p in good_mp], _global(method))
    required = [k for k, v in {**method.model_params, **method.global_params}.items() if v is None]
    for key in required:
        with pytest.raises(ConfigError, match=f"'{key}' is required"):
            call(
                [{k: v for k, v in p.items() if k != key} for p in good_mp],
                {k: v for k, v in _global(method).items() if k != key},
            )
    if "density" in method.model_params:
        for bad in (0.0, 1.5):
            with pytest.raises(ConfigError, match="density"):
                call([{**p, "density": bad} for p in good_mp], _global(method))
    if "t" in method.global_params and method.params["t"].high == 1:
        with pytest.raises(ConfigError, match="'t'"):
            call(good_mp, {"t": 1.5})
    if len(tensors) > 1 or base is not None:  # (one input alone has no shape to differ from)
        with pytest.raises(MergeError, match=r"\(3, 2, 4, 5\)"):
            narrowed = [tensors[0][..., :5]] + tensors[1:]
            apply_method(
                name, narrowed, base=base, model_params=good_mp, params=_global(method), generator=g
            )
    with pytest.raises(ConfigError, match="group_dims"):
        apply_method(
            name,
            tensors,
            base=base,
            model_params=good_mp,
            params=_global(method),
            generator=g,
            group_dims=5,
        )


def test_unknown_method_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'ties'.*known: .*slerp"):
        apply_method("tise", [torch.zeros(2)])


def test_base_and_generator_rules() -> None:
    x = [torch.zeros(2, 2), torch.ones(2, 2)]
    with pytest.raises(ConfigError, match="needs a base"):
        apply_method("ties", x, model_params=[{"weight": 1.0}] * 2)
    with pytest.raises(ConfigError, match="Generator"):
        apply_method("dare_ties", x, base=x[0], model_params=[{"weight": 1.0}] * 2)
    with pytest.raises(ConfigError, match="exactly 2"):
        apply_method("slerp", x + x, params={"t": 0.5})
    with pytest.raises(ConfigError, match="epsilon"):
        apply_method(
            "della",
            x,
            base=x[0],
            generator=torch.Generator(),
            model_params=[{"weight": 1.0, "density": 0.1, "epsilon": 0.2}] * 2,
        )


@pytest.mark.parametrize("name", NAMES)
def test_declared_ranges_are_what_apply_method_and_recipes_enforce(name: str) -> None:
    """One source of truth: a bound is accepted or refused exactly as declared, by
    apply_method and by a Recipe at parse time."""
    from darwinmerge.merge.recipe import Recipe

    method = METHODS.get(name)
    assert method.min_inputs >= 1
    tensors, base = _inputs(method)
    good_mp = _model_params(method, len(tensors))
    parents = [{"name": f"p{i}", "path": f"/p{i}"} for i in range(len(tensors))]
    required = {k: 0.5 for k, p in method.params.items() if p.default is None}
    for key, spec in method.params.items():
        if spec.kind == "bool":
            assert spec.check(True) and not spec.check(1)
            continue
        for bound, is_open, step in (
            (spec.low, spec.low_open, -1e-3),
            (spec.high, spec.high_open, 1e-3),
        ):
            if bound is None:
                continue
            for value, valid in ((bound, not is_open), (bound + step, False)):
                assert spec.check(value) is valid, (key, value)
                mp = [{**p, key: value} for p in good_mp] if spec.per_model else good_mp
                params = {**_global(method), **({} if spec.per_model else {key: value})}
                recipe = {
                    "parents": parents,
                    "method": name,
                    "parameters": {**required, key: value},
                    **({"base": "/b"} if method.needs_base else {}),
                }
                if valid:
                    apply_method(
                        name,
                        tensors,
                        base=base,
                        model_params=mp,
                        params=params,
                        generator=torch.Generator().manual_seed(0),
                    )
                    Recipe.parse(recipe)
                else:
                    with pytest.raises(ConfigError, match=re.escape(spec.describe())):
                        apply_method(
                            name,
                            tensors,
                            base=base,
                            model_params=mp,
                            params=params,
                            generator=torch.Generator().manual_seed(0),
                        )
                    with pytest.raises(ConfigError, match=re.escape(f"parameters.{key}: ")):
                        Recipe.parse(recipe)
