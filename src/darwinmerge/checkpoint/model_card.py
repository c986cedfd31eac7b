"""Write the ``README.md`` model card of a merged model (Hugging Face front matter + recipe)."""

from __future__ import annotations

from pathlib import Path

import yaml

from darwinmerge.errors import ConfigError

__all__ = ["write_model_card"]


def write_model_card(
    dest_dir: Path,
    *,
    base_models: list[str],
    recipe_yaml: str,
    title: str,
    method: str,
    notes: list[str] | None = None,
    extra_sections: dict[str, str] | None = None,
) -> Path:
    """Write ``dest_dir/README.md`` and return its path.

    Front matter: ``base_model`` (the parents), ``library_name: transformers``, ``tags``
    (merge, darwinmerge, the method). Body: title, method, parents, notes, the extra
    sections (heading -> markdown text) and the full recipe in a fenced yaml block.
    """
    if not base_models or not all(isinstance(b, str) and b.strip() for b in base_models):
        raise ConfigError("model card: base_models must be a non-empty list of model names")
    if not method.strip() or not title.strip():
        raise ConfigError("model card: title and method must be non-empty")
    try:
        yaml.safe_load(recipe_yaml)
    except yaml.YAMLError as exc:
        raise ConfigError(f"model card: recipe_yaml is not valid YAML ({exc})") from exc
    front = {
        "base_model": list(base_models),
        "library_name": "transformers",
        "tags": list(dict.fromkeys(["merge", "darwinmerge", method])),
    }
    one_line_title = " ".join(title.split())
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"),
        "---",
        "",
        f"# {one_line_title}",
        "",
        f"This model is a merge made with darwinmerge using the `{method}` method.",
        "",
        "## Parents",
        "",
        *[f"- `{b}`" for b in base_models],
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    for heading, text in (extra_sections or {}).items():
        lines += [f"## {' '.join(heading.split())}", "", text.rstrip("\n"), ""]
    fence = "```"
    while fence in recipe_yaml:
        fence += "`"
    lines += ["## Recipe", "", f"{fence}yaml", recipe_yaml.rstrip("\n"), fence, ""]
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / "README.md"
    path.write_text("\n".join(lines), "utf-8")
    return path
