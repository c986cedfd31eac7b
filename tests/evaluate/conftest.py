"""Fixtures for the evaluation tests: a tiny tokenizer, tiny random models, saved
model folders and a fake backend with scripted outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from darwinmerge.zoo.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="session")
def tok() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def saved_models(tok: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random tiny models (seeds 0 and 1) saved as Hugging Face folders."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, seed in (("alpha", 0), ("beta", 1)):
        model = tiny_model(tok, seed=seed)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


class FakeBackend:
    """Returns scripted generations (by prompt) and log-likelihoods (by pair)."""

    def __init__(
        self,
        generations: Mapping[str, str] | None = None,
        logliks: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        self.generations = dict(generations or {})
        self.logliks = dict(logliks or {})
        self.calls: list[int] = []

    def generate(self, prompts: Sequence[str]) -> list[str]:
        self.calls.append(len(prompts))
        return [self.generations[p] for p in prompts]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        self.calls.append(len(requests))
        return [self.logliks[r] for r in requests]

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.loaded = dict(tensors)  # a scripted backend has no weights; keep what it was given


@pytest.fixture
def fake_backend_cls() -> type[FakeBackend]:
    return FakeBackend


def train_on(model: Any, tok: Any, texts: list[str], steps: int = 60, lr: float = 3e-3) -> None:
    """A few Adam steps of next-token loss on ``texts`` (each followed by EOS)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batch = [tok(t + tok.eos_token)["input_ids"] for t in texts]
    width = max(map(len, batch))
    ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch])
    mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
    labels = ids.masked_fill(mask == 0, -100)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture
def trainer() -> Any:
    return train_on
