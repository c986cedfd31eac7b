"""``MriConfig``: the options of an MRI run, and the dead-expert thresholds.

Torch-free (the dtype is checked as a name), so that ``darwin validate`` checks a run
config's ``mri:`` section without importing torch; :mod:`darwinmerge.mri.pipeline` maps
the dtype name to the torch dtype when it loads a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from darwinmerge.dtypes import DTYPE_NAMES

if TYPE_CHECKING:
    from darwinmerge.mri.scan import ScanOptions

__all__ = ["DEAD_ABS_THRESHOLD", "DEAD_THRESHOLD", "MRI_DTYPES", "MriConfig", "RENAMED_KEYS"]

#: An expert is dead when its utilisation is below this fraction of the fair share.
DEAD_THRESHOLD = 0.05

#: The absolute alternative: dead when fewer than this share of all tokens route to it.
DEAD_ABS_THRESHOLD = 0.05

#: The dtypes a model may be loaded in for the scans.
MRI_DTYPES = DTYPE_NAMES


#: Earlier names of MriConfig keys, still read (YAML ``mri:`` sections, scripts).
RENAMED_KEYS = {"seed": "bootstrap_seed", "loss": "loss_tokens"}


class MriConfig(BaseModel):
    """Options of an MRI run. Each field is the ``darwin mri`` flag of the same name
    (``bootstrap_resamples`` is ``--bootstrap-resamples``) and the same key of a run
    config's ``mri:`` section; the scans carry the same names (``ScanOptions``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    probes: tuple[str, ...] = ("builtin",)
    max_length: int = Field(default=128, ge=2)
    batch_size: int = Field(default=16, ge=1)
    dead_threshold: float = Field(default=DEAD_THRESHOLD, gt=0.0, lt=1.0)
    dead_abs_threshold: float = Field(default=DEAD_ABS_THRESHOLD, gt=0.0, lt=1.0)
    bootstrap_resamples: int = Field(default=1000, ge=10)
    bootstrap_seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    swap: bool = True
    #: Also swap each layer's attention alone and its FFN (router + experts) alone: the
    #: per-component evidence of the prior's attention / FFN genes (three restarts per
    #: layer instead of one).
    swap_components: bool = True
    tokenizer: str | None = None
    #: Loss targets of the probe loss and the swap scan: tokens past each probe's prompt
    #: (``completion``) or every real token (``all``).
    loss_tokens: Literal["completion", "all"] = "completion"
    #: Most MiB of recorded layer inputs the swap scan keeps at once.
    swap_budget_mib: float = Field(default=1024.0, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """``seed`` and ``loss`` (the earlier names) are read as ``bootstrap_seed`` and
        ``loss_tokens`` with a deprecation note (a :class:`FutureWarning`, shown once per
        process); one key under both names is refused."""
        if not isinstance(data, dict) or not any(k in data for k in RENAMED_KEYS):
            return data
        import warnings

        data = dict(data)
        for old, new in RENAMED_KEYS.items():
            if old in data:
                if new in data:
                    raise ValueError(f"{old} and {new} are one key ({new}); give it once")
                warnings.warn(
                    f"mri.{old} is the earlier name of mri.{new}; it is still read, "
                    f"write {new} instead",
                    FutureWarning,
                    stacklevel=2,
                )
                data[new] = data.pop(old)
        return data

    @property
    def loss(self) -> str:
        """The earlier name of :attr:`loss_tokens`."""
        return self.loss_tokens

    @property
    def seed(self) -> int:
        """The earlier name of :attr:`bootstrap_seed`."""
        return self.bootstrap_seed

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in MRI_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(MRI_DTYPES)}")
        return v

    def scan_options(self) -> ScanOptions:
        from darwinmerge.mri.scan import ScanOptions

        return ScanOptions(
            dead_threshold=self.dead_threshold,
            dead_abs_threshold=self.dead_abs_threshold,
            bootstrap_resamples=self.bootstrap_resamples,
            bootstrap_seed=self.bootstrap_seed,
            loss_tokens=self.loss_tokens,
        )

    @property
    def swap_budget_bytes(self) -> int:
        return max(1, int(self.swap_budget_mib * 2**20))
