"""Copy the non-weight files a Hugging Face model directory needs (config, tokenizer ...)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from darwinmerge.errors import CheckpointError

__all__ = ["DROPPED_CONFIG_KEYS", "SIDE_FILES", "copy_side_files"]

SIDE_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
)


# Config keys never carried into a child: darwinmerge writes dequantized weights, so a
# quantized donor's ``quantization_config`` would describe weights the child does not have.
DROPPED_CONFIG_KEYS: tuple[str, ...] = ("quantization_config",)


def copy_side_files(
    donor_dir: Path, dest_dir: Path, *, config_updates: dict[str, Any] | None = None
) -> list[str]:
    """Copy every file of :data:`SIDE_FILES` that ``donor_dir`` has into ``dest_dir``.

    ``config_updates`` is merged into the copied ``config.json``: nested dicts are merged
    key by key, any other value replaces the donor's. The keys of
    :data:`DROPPED_CONFIG_KEYS` are removed from the config (and its ``text_config``).
    Returns the copied names in :data:`SIDE_FILES` order. Symlinked files (hub cache) are
    copied as their content.
    """
    donor_dir, dest_dir = Path(donor_dir), Path(dest_dir)
    if not donor_dir.is_dir():
        raise CheckpointError(f"{donor_dir}: donor directory does not exist; check the parent path")
    if config_updates and not (donor_dir / "config.json").is_file():
        raise CheckpointError(
            f"{donor_dir / 'config.json'}: missing, cannot apply config updates; "
            "use a donor model directory that has a config.json"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    for name in SIDE_FILES:
        src = donor_dir / name
        if not src.is_file():
            continue
        try:
            if name == "config.json":
                _write_updated_config(src, dest_dir / name, config_updates or {})
            else:
                shutil.copyfile(src, dest_dir / name)
        except OSError as exc:
            raise CheckpointError(f"{src}: cannot copy to {dest_dir} ({exc})") from exc
        copied.append(name)
    return copied


def _write_updated_config(src: Path, dest: Path, updates: dict[str, Any]) -> None:
    try:
        config = json.loads(src.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if not updates:  # nothing to change: carry the donor's file as it is
            shutil.copyfile(src, dest)
            return
        raise CheckpointError(f"{src}: is not valid JSON ({exc}); fix the donor config") from exc
    if not isinstance(config, dict):
        if not updates:
            shutil.copyfile(src, dest)
            return
        raise CheckpointError(f"{src}: is not a JSON object; fix the donor config")
    dropped = _drop_keys(config)
    if not updates and not dropped:
        shutil.copyfile(src, dest)  # byte-for-byte when nothing changes
        return
    dest.write_text(json.dumps(_deep_merge(config, updates), indent=2) + "\n", "utf-8")


def _drop_keys(config: dict[str, Any]) -> bool:
    """Remove :data:`DROPPED_CONFIG_KEYS` in place (top level and ``text_config``)."""
    dropped = False
    for holder in (config, config.get("text_config")):
        if isinstance(holder, dict):
            for key in DROPPED_CONFIG_KEYS:
                dropped |= holder.pop(key, None) is not None
    return dropped


def _deep_merge(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
