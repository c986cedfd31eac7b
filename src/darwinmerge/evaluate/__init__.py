"""Evaluation: task items and splits, scorers, backends, statistics, comparisons."""

from darwinmerge.evaluate.backends import (
    BACKENDS,
    Backend,
    TransformersBackend,
    VLLMBackend,
    answer_line_end,
    make_backend,
)
from darwinmerge.evaluate.compare import Comparison, PairedRow, compare, verdict
from darwinmerge.evaluate.extraction import (
    DEFAULT_ANSWER_PATTERN,
    AnswerExtractor,
    normalise_answer,
    strip_thinking,
)
from darwinmerge.evaluate.lmeval_source import lmeval_items
from darwinmerge.evaluate.results import (
    OVERALL,
    ChunkReport,
    EvalResult,
    Score,
    evaluate,
    summarise,
)
from darwinmerge.evaluate.results_io import results_payload, write_json_atomic
from darwinmerge.evaluate.scorers import (
    SCORERS,
    ExactMatch,
    ItemResult,
    MCLoglik,
    Scorer,
    make_scorer,
)
from darwinmerge.evaluate.stats import (
    macro_interval,
    mcnemar_exact,
    stratified_sign_test,
    wilson_interval,
)
from darwinmerge.evaluate.tasks import (
    SPLITS,
    TASK_SOURCES,
    TaskItem,
    TaskSource,
    filter_split,
    load_jsonl,
    load_tasks,
    split_of,
    stratified_subset,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ANSWER_PATTERN",
    "OVERALL",
    "SCORERS",
    "SPLITS",
    "TASK_SOURCES",
    "AnswerExtractor",
    "Backend",
    "ChunkReport",
    "Comparison",
    "EvalResult",
    "ExactMatch",
    "ItemResult",
    "MCLoglik",
    "PairedRow",
    "Score",
    "Scorer",
    "TaskItem",
    "TaskSource",
    "TransformersBackend",
    "VLLMBackend",
    "answer_line_end",
    "compare",
    "evaluate",
    "filter_split",
    "lmeval_items",
    "load_jsonl",
    "load_tasks",
    "macro_interval",
    "make_backend",
    "make_scorer",
    "mcnemar_exact",
    "normalise_answer",
    "split_of",
    "strip_thinking",
    "stratified_subset",
    "stratified_sign_test",
    "summarise",
    "verdict",
    "wilson_interval",
    "results_payload",
    "write_json_atomic",
]
