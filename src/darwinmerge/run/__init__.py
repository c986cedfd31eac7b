"""The whole pipeline as one resumable run (``darwin run``): MRI, prior, evolution,
health, the final test-split table and the run report."""

from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (_EXPORTS below)
    from darwinmerge.run.config import (
        FinalConfig,
        HealthSection,
        PriorSection,
        RunConfig,
        check_run_config,
        is_run_config,
        load_run_config,
    )
    from darwinmerge.run.final import (
        FINAL_SCORES_FILE,
        FinalScores,
        evaluate_final,
        final_table,
        scores_from_items,
    )
    from darwinmerge.run.pipeline import PHASES, RunResult, final_child, run
    from darwinmerge.run.report import run_report_sections, write_run_report
    from darwinmerge.run.state import LEDGER_FILE, RunLedger

#: export -> the module that defines it, imported on first use (tests/test_lazy.py
#: checks this table against the imports above and against the modules)
_EXPORTS = {
    "FinalConfig": "darwinmerge.run.config",
    "HealthSection": "darwinmerge.run.config",
    "PriorSection": "darwinmerge.run.config",
    "RunConfig": "darwinmerge.run.config",
    "check_run_config": "darwinmerge.run.config",
    "is_run_config": "darwinmerge.run.config",
    "load_run_config": "darwinmerge.run.config",
    "FINAL_SCORES_FILE": "darwinmerge.run.final",
    "FinalScores": "darwinmerge.run.final",
    "evaluate_final": "darwinmerge.run.final",
    "final_table": "darwinmerge.run.final",
    "scores_from_items": "darwinmerge.run.final",
    "PHASES": "darwinmerge.run.pipeline",
    "RunResult": "darwinmerge.run.pipeline",
    "final_child": "darwinmerge.run.pipeline",
    "run": "darwinmerge.run.pipeline",
    "run_report_sections": "darwinmerge.run.report",
    "write_run_report": "darwinmerge.run.report",
    "LEDGER_FILE": "darwinmerge.run.state",
    "RunLedger": "darwinmerge.run.state",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FINAL_SCORES_FILE",
    "FinalConfig",
    "FinalScores",
    "HealthSection",
    "LEDGER_FILE",
    "PHASES",
    "PriorSection",
    "RunConfig",
    "RunLedger",
    "RunResult",
    "check_run_config",
    "evaluate_final",
    "final_child",
    "final_table",
    "is_run_config",
    "load_run_config",
    "run",
    "run_report_sections",
    "scores_from_items",
    "write_run_report",
]
