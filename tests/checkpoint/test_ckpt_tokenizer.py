"""A model folder without tokenizer files: one line saying so and to pass --tokenizer,
in the loader, ``darwin mri`` and ``darwin eval`` (not a confusing error downstream)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from darwinmerge.checkpoint import load_tokenizer
from darwinmerge.cli import main
from darwinmerge.errors import MissingTokenizerError
from darwinmerge.zoo.tiny import tiny_model, tiny_tokenizer


def _run(args: list[str]) -> int:
    argv = sys.argv
    sys.argv = ["darwin", *args]
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = argv
    return 0


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a model folder without any tokenizer file, the same model with its tokenizer)."""
    root = tmp_path_factory.mktemp("tok")
    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=0)
    bare, full = root / "bare", root / "full"
    model.save_pretrained(bare)
    model.save_pretrained(full)
    tok.save_pretrained(full)
    return bare, full


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_loader_names_the_missing_tokenizer(folders):
    bare, full = folders
    with pytest.raises(MissingTokenizerError, match=r"has no tokenizer.*pass --tokenizer"):
        load_tokenizer(bare)
    tok = load_tokenizer(bare, full)  # another folder's tokenizer
    assert len(tok("ANSWER: 19")["input_ids"]) > 1
    with pytest.raises(MissingTokenizerError, match="--tokenizer has no tokenizer"):
        load_tokenizer(full, bare)


def test_empty_tokenizer_is_refused(tmp_path, folders):
    """A tokenizer.json with an empty vocabulary loads but encodes text to no tokens."""
    _, full = folders
    d = tmp_path / "empty"
    d.mkdir()
    data = json.loads((full / "tokenizer.json").read_text())
    data["model"]["vocab"], data["model"]["merges"], data["added_tokens"] = {}, [], []
    (d / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(MissingTokenizerError, match="encodes text to no tokens"):
        load_tokenizer(d)


def test_mri_on_a_folder_without_tokenizer(folders, tmp_path, capsys):
    bare, full = folders
    code = _run(["mri", str(bare), "--probes", "builtin", "--out", str(tmp_path / "scan")])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1 and "has no tokenizer" in line and "--tokenizer" in line, line
    assert "fewer than 2 tokens" not in line
    scan = tmp_path / "scan"
    assert not scan.exists() or not any(scan.iterdir())  # nothing written


def test_eval_on_a_folder_without_tokenizer(folders, tmp_path, capsys):
    bare, full = folders
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "category": "R", "prompt": f"{i} + 1 =", "answer": "x"})
            + "\n"
            for i in range(3)
        )
    )
    args = ["eval", str(bare), "--tasks", str(tasks), "--split", "all", "--max-new-tokens", "2"]
    assert _run(args) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "has no tokenizer" in line and "--tokenizer" in line, line
    # with --tokenizer the same folder is scored
    assert _run([*args, "--tokenizer", str(full)]) == 0, capsys.readouterr().err
