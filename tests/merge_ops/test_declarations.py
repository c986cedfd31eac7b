"""One declaration per merge method (darwinmerge.merge.methods, torch-free), one function
attached to it by the ops modules; the plain functions take the declared defaults."""

from __future__ import annotations

import inspect

import pytest
import torch

from darwinmerge.errors import MergeError, UnknownNameError
from darwinmerge.merge import methods
from darwinmerge.merge.ops import (
    METHODS,
    MergeMethod,
    ParamSpec,
    apply_method,
    breadcrumbs,
    breadcrumbs_ties,
    dare_linear,
    dare_ties,
    della,
    della_linear,
    task_arithmetic,
    ties,
)


def test_ops_reexport_the_declarations():
    assert METHODS is methods.METHODS
    assert MergeMethod is methods.MergeMethod and ParamSpec is methods.ParamSpec


@pytest.mark.parametrize("name", METHODS.names())
def test_every_declared_method_has_its_function(name: str):
    fn = METHODS.get(name).function
    params = inspect.signature(fn).parameters
    assert {"base", "model_params", "params", "group_dims", "generator"} <= set(params), name


def test_a_method_is_implemented_once():
    with pytest.raises(ValueError, match="'linear' already has an implementation"):
        methods.implement("linear", lambda *a, **k: None)
    with pytest.raises(UnknownNameError, match="did you mean 'slerp'"):
        methods.implement("slerpp", lambda *a, **k: None)


def test_a_declaration_without_function_says_so():
    declared = MergeMethod("mine", needs_base=False, random=False, params={})
    with pytest.raises(MergeError, match="implementation is not loaded"):
        declared.function([torch.zeros(2)])


PLAIN = {
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare_ties": dare_ties,
    "dare_linear": dare_linear,
    "breadcrumbs": breadcrumbs,
    "breadcrumbs_ties": breadcrumbs_ties,
    "della": della,
    "della_linear": della_linear,
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_function_takes_the_declared_defaults(name: str):
    """normalize, rescale, gamma, epsilon and lambda left out of the plain function give the
    same merge as apply_method filling the declaration's defaults (same generator seed)."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 64, generator=g)
    tensors = [base + torch.randn(4, 64, generator=g) * s for s in (0.5, 2.0)]
    weights, densities = [0.8, 0.5], [0.6, 0.3]
    declared = METHODS.get(name)
    kw = {"densities": densities} if "density" in declared.params else {}
    plain = PLAIN[name](
        tensors, base=base, weights=weights, generator=torch.Generator().manual_seed(7), **kw
    )
    per_model = [
        {"weight": w, **({"density": d} if kw else {})}
        for w, d in zip(weights, densities, strict=True)
    ]
    via_registry = apply_method(
        name,
        tensors,
        base=base,
        model_params=per_model,
        generator=torch.Generator().manual_seed(7) if declared.random else None,
    )
    assert torch.equal(plain, via_registry), name
    # and the defaults matter: a different normalize (or lambda) changes the merge
    other = not declared.params["normalize"].default
    changed = PLAIN[name](
        tensors,
        base=base,
        weights=weights,
        generator=torch.Generator().manual_seed(7),
        normalize=other,
        lambda_=0.5,
        **kw,
    )
    assert not torch.allclose(changed, plain, rtol=1e-3, atol=1e-3 * float(plain.abs().max()))


def test_built_in_functions_are_registered_beside_their_unchanged_declarations():
    # the declaration registered in METHODS is never mutated: its function is looked up
    ties_decl = METHODS.get("ties")
    assert ties_decl.fn is methods._not_loaded
    assert ties_decl.function is methods.IMPLEMENTATIONS.get("ties")
    assert set(methods.IMPLEMENTATIONS.names()) == set(METHODS.names())
