"""Suite-wide settings: one torch thread per process (two threads on a busy 2-core
machine were 10-80x slower)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_zoo():
    """The full-size demo zoo, shared by the slow tests: DARWIN_ZOO if set, else the
    repository's ``runs/zoo`` (the one ``make demo`` builds), built here when missing."""
    from pathlib import Path

    from darwinmerge.zoo.build import build_zoo

    given = os.environ.get("DARWIN_ZOO")
    out = Path(given) if given else Path(__file__).resolve().parents[1] / "runs" / "zoo"
    build_zoo(out)  # reuses a complete zoo built with the same config
    return out
