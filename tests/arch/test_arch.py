"""Architecture tables, canonical keys, fused <-> per-expert pieces, compatibility."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from darwinmerge.arch import COMPONENTS, Piece, check_compatible, detect_architecture
from darwinmerge.errors import ArchitectureMismatchError, MergeError
from darwinmerge.zoo.tiny import (
    FAMILIES,
    MTP_TENSOR_NAMES,
    add_fake_mtp,
    build_tiny_model,
    make_parent_pair,
    save_tiny,
)

from .arch_helpers import arch_of, read_header, read_tensors

L, E = 4, 4

# Expected tensor count per component for the default tiny model (4 layers, 4 experts,
# the layer types of the family), per-expert layout; derived by hand from the
# Transformers modules, independently of the tables under test.
_ATTN_QWEN3 = 6 * L  # q, k, v, o, q_norm, k_norm
_ATTN_QWEN2 = 7 * L  # q, k, v, o + q/k/v biases
_ATTN_LLAMA = 4 * L
_BASE = {"embed": 1, "lm_head": 1, "final_norm": 1, "norm": 2 * L}
EXPECTED: dict[str, dict[str, int]] = {
    "qwen3_5_moe": {
        **_BASE,
        "attn": 6,  # one full-attention layer
        "linear_attn": 9
        * 3,  # in_proj_qkv/z/a/b, conv1d, A_log, dt_bias, norm, out_proj x 3 layers
        "router": L,
        "experts": 3 * E * L,
        "shared_expert": 3 * L,
        "shared_expert_gate": L,
    },
    "qwen3_moe": {**_BASE, "attn": _ATTN_QWEN3, "router": L, "experts": 3 * E * L},
    "qwen2_moe": {
        **_BASE,
        "attn": _ATTN_QWEN2,
        "router": L,
        "experts": 3 * E * L,
        "shared_expert": 3 * L,
        "shared_expert_gate": L,
    },
    "mixtral": {**_BASE, "attn": _ATTN_LLAMA, "router": L, "experts": 3 * E * L},
    "llama": {**_BASE, "attn": _ATTN_LLAMA, "dense_mlp": 3 * L},
    "mistral": {**_BASE, "attn": _ATTN_LLAMA, "dense_mlp": 3 * L},
    "qwen2": {**_BASE, "attn": _ATTN_QWEN2, "dense_mlp": 3 * L},
    "qwen3": {**_BASE, "attn": _ATTN_QWEN3, "dense_mlp": 3 * L},
}
MOE_FAMILIES = [f for f in FAMILIES if "dense_mlp" not in EXPECTED[f]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every family saved in both layouts (same weights in both)."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for family in FAMILIES:
        model = build_tiny_model(family, seed=11)
        for layout in ("per_expert", "fused"):
            out[family, layout] = save_tiny(model, root / f"{family}-{layout}", layout=layout)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_tables_classify_every_tensor(family: str, saved: dict) -> None:
    arch = arch_of(saved[family, "per_expert"])
    counts = Counter(role.component for role in arch.roles())
    assert dict(counts) == EXPECTED[family]
    assert set(counts) <= set(COMPONENTS)
    assert arch.family == family
    assert arch.num_layers == L and arch.hidden_size == 32 and arch.vocab_size == 128
    assert arch.prefix == "model." and not arch.multimodal
    for role in arch.roles():
        if role.component in (
            "attn",
            "linear_attn",
            "norm",
            "router",
            "experts",
            "dense_mlp",
            "shared_expert",
        ):
            assert role.layer is not None and 0 <= role.layer < L, role
        assert role.canonical.startswith(("model.layers.", "model.embed", "model.norm", "lm_head"))
    if family in MOE_FAMILIES:
        assert arch.expert_layout == "per_expert" and arch.num_experts == E and arch.top_k == 2
        assert arch.mlp_types() == ["moe"] * L
    else:
        assert arch.expert_layout is None and arch.num_experts is None
        assert arch.mlp_types() == ["dense"] * L


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_fused_layout_has_same_canonical_pieces(family: str, saved: dict) -> None:
    per_expert, fused = arch_of(saved[family, "per_expert"]), arch_of(saved[family, "fused"])
    assert fused.expert_layout == "fused"
    assert Counter(r.component for r in fused.roles())["experts"] == 2 * L
    assert sorted(per_expert.canonical_keys()) == sorted(fused.canonical_keys())
    for canonical in per_expert.canonical_keys():
        assert per_expert.piece_shape(canonical) == fused.piece_shape(canonical), canonical
    check_compatible(per_expert, fused)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_fused_slice_equals_per_expert_tensor_bit_for_bit(family: str, saved: dict) -> None:
    per_expert_path, fused_path = saved[family, "per_expert"], saved[family, "fused"]
    per_expert, fused = arch_of(per_expert_path), arch_of(fused_path)
    tensors_p, tensors_f = read_tensors(per_expert_path), read_tensors(fused_path)
    checked = 0
    for name in fused.keys:
        for piece in fused.pieces(name):
            stored, index = per_expert.locate(piece.canonical)
            assert index == ()
            a = tensors_f[name][piece.index]
            b = tensors_p[stored]
            assert a.shape == b.shape and torch.equal(a, b), (name, piece.canonical)
            checked += 1
    assert checked == len(per_expert.keys)
    # and the reverse direction lands on the same stored fused slices
    for name in per_expert.keys:
        stored, index = fused.locate(per_expert.role(name).canonical)
        assert torch.equal(tensors_f[stored][index], tensors_p[name])


def test_fused_gate_up_pieces_and_indices(saved: dict) -> None:
    arch = arch_of(saved["qwen3_moe", "fused"])
    pieces = arch.pieces("model.layers.2.mlp.experts.gate_up_proj")
    assert len(pieces) == 2 * E
    assert pieces[0] == Piece("model.layers.2.mlp.experts.0.gate_proj.weight", (0, slice(0, 16)))
    assert pieces[1] == Piece("model.layers.2.mlp.experts.0.up_proj.weight", (0, slice(16, 32)))
    assert pieces[7] == Piece("model.layers.2.mlp.experts.3.up_proj.weight", (3, slice(16, 32)))
    down = arch.pieces("model.layers.2.mlp.experts.down_proj")
    assert [p.index for p in down] == [(e,) for e in range(E)]
    assert down[1].canonical == "model.layers.2.mlp.experts.1.down_proj.weight"
    role = arch.role("model.layers.2.mlp.experts.gate_up_proj")
    assert (role.component, role.layer, role.expert_axis, role.num_experts, role.proj) == (
        "experts",
        2,
        0,
        E,
        "gate_up",
    )
    assert arch.locate("model.layers.2.mlp.experts.3.down_proj.weight") == (
        "model.layers.2.mlp.experts.down_proj",
        (3,),
    )
    assert arch.piece_shape("model.layers.2.mlp.experts.3.up_proj.weight") == (16, 32)
    assert arch.locate("model.layers.2.mlp.experts.9.down_proj.weight") is None


def test_mixtral_names_map_to_canonical_projections(saved: dict) -> None:
    arch = arch_of(saved["mixtral", "per_expert"])
    role = arch.role("model.layers.1.block_sparse_moe.experts.2.w3.weight")
    assert (role.component, role.layer, role.expert, role.proj) == ("experts", 1, 2, "up")
    assert role.canonical == "model.layers.1.mlp.experts.2.up_proj.weight"
    assert arch.role("model.layers.1.block_sparse_moe.experts.2.w1.weight").proj == "gate"
    assert arch.role("model.layers.1.block_sparse_moe.experts.2.w2.weight").canonical.endswith(
        "2.down_proj.weight"
    )
    router = arch.role("model.layers.1.block_sparse_moe.gate.weight")
    assert (router.component, router.canonical) == ("router", "model.layers.1.mlp.gate.weight")
    fused = arch_of(saved["mixtral", "fused"])
    assert fused.locate("model.layers.1.mlp.gate.weight") == ("model.layers.1.mlp.gate.weight", ())


def test_qwen3_5_roles_and_layer_types(saved: dict) -> None:
    arch = arch_of(saved["qwen3_5_moe", "fused"])
    assert arch.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    assert arch.role("model.layers.0.linear_attn.A_log").component == "linear_attn"
    assert arch.role("model.layers.0.linear_attn.conv1d.weight").layer == 0
    assert arch.role("model.layers.3.self_attn.q_norm.weight").component == "attn"
    shared = arch.role("model.layers.2.mlp.shared_expert.down_proj.weight")
    assert (shared.component, shared.proj, shared.expert) == ("shared_expert", "down", None)
    assert (
        arch.role("model.layers.2.mlp.shared_expert_gate.weight").component == "shared_expert_gate"
    )
    assert arch.role("model.layers.2.mlp.gate.weight").component == "router"
    assert arch.role("model.norm.weight").component == "final_norm"


def test_father_multimodal_fused_vs_mother_text_per_expert(tmp_path: Path) -> None:
    father_path, mother_path = make_parent_pair(
        "qwen3_5_moe",
        tmp_path,
        layout_a="fused",
        multimodal_a=True,
        mtp_a=True,
        layout_b="per_expert",
    )
    father, mother = arch_of(father_path), arch_of(mother_path)
    assert (
        father.prefix,
        father.expert_layout,
        father.multimodal,
        father.has_mtp,
        father.has_vision,
    ) == ("model.language_model.", "fused", True, True, True)
    assert (mother.prefix, mother.expert_layout, mother.multimodal, mother.has_mtp) == (
        "model.",
        "per_expert",
        False,
        False,
    )
    check_compatible(father, mother)
    check_compatible(mother, father)
    for canonical in mother.canonical_keys():
        assert father.locate(canonical) is not None, canonical
        assert father.piece_shape(canonical) == mother.piece_shape(canonical), canonical
    only_father = Counter()
    for name in father.keys:
        role = father.role(name)
        for piece in father.pieces(name):
            if mother.locate(piece.canonical) is None:
                only_father[role.component] += 1
    assert set(only_father) == {"vision", "mtp"}
    assert only_father["vision"] == sum(1 for k in father.keys if k.startswith("model.visual."))
    # the MTP head: 17 plain tensors + fused experts split into 3E pieces
    assert only_father["mtp"] == len(MTP_TENSOR_NAMES) - 2 + 3 * E
    assert father.locate("model.layers.3.self_attn.q_proj.weight") == (
        "model.language_model.layers.3.self_attn.q_proj.weight",
        (),
    )
    assert mother.locate("model.layers.3.self_attn.q_proj.weight") == (
        "model.layers.3.self_attn.q_proj.weight",
        (),
    )
    assert father.locate("model.layers.1.mlp.experts.2.up_proj.weight") == (
        "model.language_model.layers.1.mlp.experts.gate_up_proj",
        (2, slice(16, 32)),
    )
    mtp = father.role("mtp.layers.0.mlp.experts.gate_up_proj")
    assert (mtp.component, mtp.layer, mtp.proj) == ("mtp", None, "gate_up")
    assert father.locate("mtp.layers.0.mlp.experts.1.gate_proj.weight") == (
        "mtp.layers.0.mlp.experts.gate_up_proj",
        (1, slice(0, 16)),
    )
    assert father.role("model.visual.blocks.0.attn.qkv.weight").component == "vision"


def test_unknown_tensor_raises_merge_error_naming_it(saved: dict) -> None:
    config, keys, shapes = read_header(saved["qwen3_moe", "per_expert"])
    bad = "model.layers.0.mlp.mystery.weight"
    arch = detect_architecture(config, [*keys, bad], {**shapes, bad: (2,)})
    assert arch.unknown == (bad,)
    assert bad not in [r.name for r in arch.roles()] and len(arch.roles()) == len(keys)
    with pytest.raises(MergeError, match=r"model\.layers\.0\.mlp\.mystery\.weight.*qwen3_moe"):
        arch.role(bad)
    with pytest.raises(MergeError, match="visual"):
        arch.role("model.visual.blocks.0.attn.qkv.weight")  # vision only exists for qwen3_5_moe


def test_unsupported_model_type_lists_families(saved: dict) -> None:
    config, keys, shapes = read_header(saved["llama", "per_expert"])
    with pytest.raises(ArchitectureMismatchError, match=r"'gpt2'.*qwen3_5_moe.*mixtral.*llama"):
        detect_architecture({**config, "model_type": "gpt2"}, keys, shapes)


def test_missing_layer_is_reported(saved: dict) -> None:
    config, keys, shapes = read_header(saved["qwen2", "per_expert"])
    kept = [k for k in keys if ".layers.3." not in k]
    with pytest.raises(ArchitectureMismatchError, match=r"num_hidden_layers=4.*0-2.*missing 3"):
        detect_architecture(config, kept, shapes)


def test_expert_count_mismatch_with_config(saved: dict) -> None:
    config, keys, shapes = read_header(saved["qwen3_moe", "fused"])
    with pytest.raises(ArchitectureMismatchError, match="stacks 4 experts.*num_experts=8"):
        detect_architecture({**config, "num_experts": 8}, keys, shapes)


def test_check_compatible_reports_vocab_and_family(tmp_path: Path) -> None:
    a, _ = make_parent_pair("qwen3_moe", tmp_path / "x")
    b, _ = make_parent_pair("qwen3_moe", tmp_path / "y", vocab_size=256)
    with pytest.raises(ArchitectureMismatchError, match=r"vocab_size differs.*128 vs 256"):
        check_compatible(arch_of(a), arch_of(b))
    c, _ = make_parent_pair("qwen2_moe", tmp_path / "z")
    with pytest.raises(ArchitectureMismatchError, match="families differ: qwen3_moe.*qwen2_moe"):
        check_compatible(arch_of(a), arch_of(c))
    d, _ = make_parent_pair("qwen3_moe", tmp_path / "w", num_layers=2, num_experts=8)
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"layer counts differ: 4 vs 2.*expert counts differ: 4 vs 8",
    ):
        check_compatible(arch_of(a), arch_of(d))


def test_piece_shape_mismatch_is_reported(tmp_path: Path) -> None:
    a = save_tiny(build_tiny_model("llama"), tmp_path / "a")
    b = save_tiny(build_tiny_model("llama", intermediate_size=80), tmp_path / "b")
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"tensor shapes differ: model\.layers\.0\.mlp\.\w+_proj\.weight",
    ):
        check_compatible(arch_of(a), arch_of(b))


def test_dense_layers_inside_moe_model(tmp_path: Path) -> None:
    path = save_tiny(
        build_tiny_model("qwen3_moe", mlp_only_layers=[1]), tmp_path / "m", layout="fused"
    )
    arch = arch_of(path)
    assert arch.mlp_types() == ["moe", "dense", "moe", "moe"]
    assert arch.role("model.layers.1.mlp.gate_proj.weight").component == "dense_mlp"


def test_mtp_added_to_text_checkpoint_is_classified(tmp_path: Path) -> None:
    path = save_tiny(build_tiny_model("qwen3_5_moe"), tmp_path / "t")
    add_fake_mtp(path, seed=3)
    arch = arch_of(path)
    assert arch.has_mtp and not arch.multimodal and arch.prefix == "model."
    assert {arch.role(n).component for n in MTP_TENSOR_NAMES} == {"mtp"}
    assert all(arch.role(n).layer is None for n in MTP_TENSOR_NAMES)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_table_for_checkpoints_and_live_modules(family: str, tmp_path: Path) -> None:
    """The MRI hook layout and the checkpoint roles come from the same table entry: the
    sparse layers, expert count and top-k read from config.json (dict) match the live
    model's routers (config object) and the layers whose tensors are experts."""
    import json

    from darwinmerge.arch import (
        FAMILY_SPECS,
        expert_count,
        experts_per_token,
        is_sparse_layer,
        text_config,
    )
    from darwinmerge.mri import resolve_layout

    kw = {"mlp_only_layers": [1]} if family in ("qwen3_moe", "qwen2_moe") else {}
    model = build_tiny_model(family, **kw)
    path = save_tiny(model, tmp_path / "m")
    spec = FAMILY_SPECS[family]
    config = text_config(json.loads((path / "config.json").read_text()))
    from_dict = [i for i in range(L) if is_sparse_layer(spec, config, i)]
    layout = resolve_layout(model)
    assert list(layout.sparse_layers) == from_dict
    assert [i for i, t in enumerate(arch_of(path).mlp_types()) if t == "moe"] == from_dict
    moe = spec.modules.router is not None
    assert from_dict == ([0, 2, 3] if kw else list(range(L)) if moe else [])
    assert layout.num_experts == expert_count(spec, config) == (E if moe else 0)
    assert layout.top_k == experts_per_token(spec, config) == (2 if moe else 0)
    assert arch_of(path).num_experts == (E if moe else None)
