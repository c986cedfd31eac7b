"""lm-evaluation-harness task source (optional extra ``darwinmerge[lmeval]``,
lm-eval==0.4.13, imported lazily).

Spec ``lmeval:TASK[@INCLUDE_PATH]``: TASK is a task or group name; with
``@INCLUDE_PATH`` only the YAML configs under that folder are indexed (offline, fast),
without it lm-eval's built-in task index is used. Each document of the task's
evaluation split (test, else validation) becomes one item, zero-shot:

* id ``TASK/INDEX``, category ``TASK``, prompt = lm-eval's zero-shot context
  (description + ``doc_to_text``);
* ``multiple_choice`` tasks: choices = ``target_delimiter + choice`` (the literal
  continuations lm-eval scores), answer = the target choice;
* ``generate_until`` tasks: answer = ``str(doc_to_target)``, no choices (pick the
  answer regex that fits the task; lm-eval's own filters are not applied).
"""

from __future__ import annotations

from typing import Any

from darwinmerge.errors import ConfigError, EvaluationError, MissingDependencyError
from darwinmerge.evaluate.tasks import TASK_SOURCES, TaskItem

__all__ = ["import_lm_eval", "lmeval_items"]

INSTALL_HINT = "pip install 'darwinmerge[lmeval]' (lm-eval==0.4.13)"


def import_lm_eval() -> Any:
    """Import ``lm_eval`` or raise :class:`MissingDependencyError` with the hint."""
    try:
        import lm_eval
        import lm_eval.tasks
    except ImportError as exc:
        raise MissingDependencyError(
            f"lmeval task sources need the optional package lm-eval: {INSTALL_HINT}"
        ) from exc
    return lm_eval


def _task_items(task: Any) -> list[TaskItem]:
    name = str(getattr(task.config, "task", None) or type(task).__name__)
    output_type = task.OUTPUT_TYPE
    if output_type not in ("multiple_choice", "generate_until"):
        raise EvaluationError(
            f"lmeval task {name!r}: output type {output_type!r} is not supported "
            f"(multiple_choice and generate_until are)"
        )
    items = []
    for index, doc in enumerate(task.eval_docs):
        prompt = task.fewshot_context(doc, num_fewshot=0)
        if not isinstance(prompt, str):
            raise EvaluationError(f"lmeval task {name!r}: doc {index} has no plain-text prompt")
        target = task.doc_to_target(doc)
        item_id = f"{name}/{index}"
        if output_type == "multiple_choice":
            if getattr(task, "multiple_input", False):
                raise EvaluationError(
                    f"lmeval task {name!r}: multiple-input tasks are not supported"
                )
            raw = [str(c) for c in task.doc_to_choice(doc)]
            delim = task.config.target_delimiter
            choices = tuple(delim + c for c in raw)
            if isinstance(target, int):
                if not 0 <= target < len(raw):
                    raise EvaluationError(f"lmeval task {name!r}: doc {index} target out of range")
                answer = choices[target]
            elif isinstance(target, str) and target in raw:
                answer = choices[raw.index(target)]
            else:
                raise EvaluationError(
                    f"lmeval task {name!r}: doc {index} target {target!r} is not a choice"
                )
            if len(set(choices)) != len(choices):
                raise EvaluationError(f"lmeval task {name!r}: doc {index} has duplicate choices")
            items.append(TaskItem(item_id, name, prompt, answer, choices))
        else:
            if isinstance(target, list):
                target = target[0]
            items.append(TaskItem(item_id, name, prompt, str(target)))
    return items


def lmeval_items(task_name: str, include_path: str | None = None) -> list[TaskItem]:
    """All evaluation documents of an lm-eval task or group, as items."""
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    try:
        if include_path:
            manager = TaskManager(include_path=include_path, include_defaults=False)
        else:
            manager = TaskManager()
        loaded = manager.load([task_name])
    except Exception as exc:  # lm-eval raises KeyError / ValueError / datasets errors
        raise EvaluationError(f"lmeval task {task_name!r}: cannot load ({exc})") from exc
    tasks = [loaded["tasks"][name] for name in sorted(loaded["tasks"])]
    if not tasks:
        raise EvaluationError(f"lmeval task {task_name!r}: no tasks found")
    return [item for task in tasks for item in _task_items(task)]


@TASK_SOURCES.register("lmeval")
def _lmeval_source(arg: str) -> list[TaskItem]:
    name, _, include = arg.partition("@")
    if not name:
        raise ConfigError("task spec 'lmeval:' needs a task name, e.g. lmeval:arc_easy")
    return lmeval_items(name, include or None)
