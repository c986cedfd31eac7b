"""The lm-evaluation-harness task source: the missing-dependency path always; the
adapter itself, and its agreement with lm-eval's own HF runner, where the optional
extra (lm-eval==0.4.13) is installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from darwinmerge.errors import ConfigError, MissingDependencyError
from darwinmerge.evaluate import TransformersBackend, evaluate, load_tasks
from darwinmerge.zoo.tiny import tiny_model


def test_missing_lm_eval_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'darwinmerge\[lmeval\]'"):
        load_tasks("lmeval:arc_easy", split=None)
    with pytest.raises(ConfigError, match="needs a task name"):
        load_tasks("lmeval:", split=None)


MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}} A:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{q}}}}"
doc_to_target: "{{{{a}}}}"
generation_kwargs:
  until: ["\\n"]
metric_list:
  - metric: exact_match
"""


@pytest.fixture
def lmeval_tasks(tmp_path: Path) -> Path:
    pytest.importorskip("lm_eval", reason="optional extra darwinmerge[lmeval] not installed")
    folder = tmp_path / "lmeval_tasks"
    folder.mkdir()
    mc = [
        {"question": f"is {i} even?", "choices": ["yes", "no", "maybe"], "label": i % 2}
        for i in range(12)
    ]
    gen = [{"q": f"{i} + 1 =", "a": str(i + 1)} for i in range(5)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen))
    (folder / "tiny_mc.yaml").write_text(MC_YAML.format(data=tmp_path / "mc.jsonl"))
    (folder / "tiny_gen.yaml").write_text(GEN_YAML.format(data=tmp_path / "gen.jsonl"))
    return folder


def test_lmeval_adapter_items(lmeval_tasks: Path) -> None:
    items = load_tasks(f"lmeval:tiny_mc@{lmeval_tasks}", split=None)
    assert len(items) == 12
    first = items[0]
    assert (first.id, first.category, first.prompt) == ("tiny_mc/0", "tiny_mc", "Q: is 0 even? A:")
    assert first.choices == (" yes", " no", " maybe") and first.answer == " yes"
    assert items[1].answer == " no"
    gen = load_tasks(f"lmeval:tiny_gen@{lmeval_tasks}", split=None)
    assert [(g.prompt, g.answer, g.choices) for g in gen[:2]] == [
        ("0 + 1 =", "1", None),
        ("1 + 1 =", "2", None),
    ]
    test = load_tasks(f"lmeval:tiny_mc@{lmeval_tasks}", split="test")
    fit = load_tasks(f"lmeval:tiny_mc@{lmeval_tasks}", split="fitness")
    assert len(test) + len(fit) == 12 and not {t.id for t in test} & {f.id for f in fit}


def test_lmeval_adapter_agrees_with_lm_eval_runner(lmeval_tasks: Path, tok: Any) -> None:
    """On the adapted items our per-choice log-likelihoods and mc_loglik accuracy equal
    lm-eval's own (HF runner, same model)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = tiny_model(tok, seed=5)
    items = load_tasks(f"lmeval:tiny_mc@{lmeval_tasks}", split=None)
    ours = evaluate(TransformersBackend(model, tok, batch_size=4), items, scorer="mc_loglik")
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, add_bos_token=False)
    manager = TaskManager(include_path=str(lmeval_tasks), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=["tiny_mc"], task_manager=manager, log_samples=True)
    theirs = out["results"]["tiny_mc"]
    assert ours.overall.score == pytest.approx(theirs["acc,none"])
    samples = sorted(out["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    for sample, result, item in zip(samples, ours.items, items, strict=True):
        their_ll = [float(r[0][0]) for r in sample["resps"]]
        assert result.loglikelihoods == pytest.approx(their_ll, rel=1e-5, abs=1e-4)
        # our normalised variant divides by the bytes of the scored continuation
        # (delimiter included); lm-eval's acc_norm divides by the raw choice's characters
        assert item.choices is not None
        per_byte = [ll / len(c.encode()) for ll, c in zip(their_ll, item.choices, strict=True)]
        best = max(range(len(per_byte)), key=lambda i: (per_byte[i], -i))
        assert result.correct_norm == (item.choices[best] == item.answer)
