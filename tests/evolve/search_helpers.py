"""A two-gene genome space over the micro zoo's father and mother, for the search tests
(independent of the genome modules): gene ``t_mlp`` is the mother's share of the MoE
blocks (experts, shared expert, router), gene ``t_rest`` her share of everything else;
the recipe is a linear merge with weights ``1 - t`` / ``t``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from darwinmerge.merge import Recipe


@dataclass(frozen=True)
class Gene:
    name: str


class TwoGeneSpace:
    name = "two-gene-test"
    genes = (Gene("t_mlp"), Gene("t_rest"))
    dim = 2

    def __init__(self, father: str | Path, mother: str | Path) -> None:
        self.father, self.mother = str(father), str(mother)

    def describe(self, x: Any) -> dict[str, float]:
        x = np.asarray(x, dtype=float)
        return {"t_mlp": round(float(x[0]), 6), "t_rest": round(float(x[1]), 6)}

    def decode(self, x: Any) -> Recipe:
        t_mlp, t_rest = (float(v) for v in np.asarray(x, dtype=float))
        mother = [
            {"component": ["mlp", "router"], "value": t_mlp},
            {"value": t_rest},
        ]
        father = [{**r, "value": 1.0 - r["value"]} for r in mother]
        return Recipe.parse(
            {
                "method": "linear",
                "parents": [
                    {"name": "father", "path": self.father, "parameters": {"weight": father}},
                    {"name": "mother", "path": self.mother, "parameters": {"weight": mother}},
                ],
                "parameters": {"normalize": False},
                "donor": "father",
            }
        )


def config_data(zoo: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "parents": {"father": str(zoo / "father"), "mother": str(zoo / "mother")},
        "tasks": f"zoo:{zoo}",
        "space": {"kind": "seed"},
        "trials": 4,
        "fitness": {"subset": 4, "chunk_size": 5},
        "optimizer": {"name": "cmaes", "seed": 0, "popsize": 4},
        "backend": {"batch_size": 32, "max_new_tokens": 8},
        "select": {"top_k": 2},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


# --- a synthetic objective: no models, a fake pool -------------------------------------


class GenomeRecipe:
    """Stands in for a Recipe: its YAML is the genome."""

    def __init__(self, genome: Any) -> None:
        self.genome = [float(v) for v in genome]

    def to_yaml(self) -> str:
        import json

        return json.dumps(self.genome)


class SyntheticSpace:
    """``dim`` genes; decode returns the genome itself."""

    name = "synthetic"

    def __init__(self, dim: int, fail_above: float | None = None) -> None:
        self.genes = tuple(Gene(f"g{i}") for i in range(dim))
        self.dim = dim
        self.fail_above = fail_above

    def decode(self, x: Any) -> GenomeRecipe:
        if self.fail_above is not None and float(np.asarray(x)[0]) > self.fail_above:
            raise ValueError("gene g0 too large for this test space")
        return GenomeRecipe(x)

    def describe(self, x: Any) -> dict[str, float]:
        return {g.name: float(v) for g, v in zip(self.genes, np.asarray(x), strict=True)}


class SyntheticPool:
    """Scores a genome by ``1 - mean((x - target)^2) * 4`` (1 at the target)."""

    def __init__(self, target: Any, size: int = 1, nan_above: float | None = None) -> None:
        self.target = np.asarray(target, dtype=float)
        self.size = size
        self.nan_above = nan_above
        self.calls: list[int] = []

    def map(self, requests: Any) -> list[Any]:
        import json

        from darwinmerge.evolve.workers import CandidateResult

        out = []
        for r in requests:
            self.calls.append(r.trial)
            x = np.asarray(json.loads(r.recipe_yaml))
            value = float(1.0 - 4.0 * np.mean((x - self.target) ** 2))
            if self.nan_above is not None and x[-1] > self.nan_above:
                out.append(CandidateResult(r.trial, "failed", error="NaN/Inf logits"))
                continue
            res = CandidateResult(r.trial, "complete", fitness=value, items_used=10)
            res.items_planned = 10
            res.categories = {"all": [round(10 * max(value, 0)), 10]}
            out.append(res)
        return out

    def close(self) -> None:
        pass


# --- the micro zoo and a multiple-choice task file ---------------------------------------


@pytest.fixture(scope="session")
def micro_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro zoo (seconds to build); built once, reused by every module."""
    from darwinmerge.zoo.build import build_zoo, micro_config

    out = tmp_path_factory.getbasetemp() / "search-microzoo"
    build_zoo(out, micro_config())  # reuses a complete zoo with the same config
    return out


def write_mc_tasks(path: Path, n: int = 24) -> Path:
    """Multiple-choice items (log-likelihood scored: every genome gives other numbers)."""
    import json

    lines = []
    for i in range(n):
        a, b = i % 7, (3 * i) % 5
        lines.append(
            {
                "id": f"sum-{i}",
                "category": "sums",
                "prompt": f"{a} + {b} =",
                "answer": f" {a + b}",
                "choices": [f" {a + b}", f" {a + b + 1}", f" {a + b + 2}"],
            }
        )
        lines.append(
            {
                "id": f"word-{i}",
                "category": "words",
                "prompt": f"the {['cat', 'dog', 'sun'][i % 3]} is",
                "answer": " red",
                "choices": [" red", " blue"],
            }
        )
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path
