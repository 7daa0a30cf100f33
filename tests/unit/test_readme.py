"""The README's settings reference names every setting, and only real ones."""

from __future__ import annotations

import re

from pydantic import BaseModel

from mailstack.stack.settings import SECRET_KEYS, Settings
from tests.conftest import PROJECT


def setting_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            keys |= setting_keys(nested[0], f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_readme_documents_every_setting_and_no_other():
    readme = (PROJECT / "README.md").read_text()
    documented = set(re.findall(r"^\| `mailstack:([a-z0-9_.]+)` \|", readme, re.M))
    assert documented == setting_keys(Settings) | set(SECRET_KEYS)


def test_readme_first_screen_gives_the_two_setup_commands():
    first_screen = "\n".join((PROJECT / "README.md").read_text().splitlines()[:20])
    assert "bash scripts/bootstrap && .venv/bin/mailstack rehearse" in first_screen
    assert "bash scripts/bootstrap && .venv/bin/pytest" in first_screen
    assert "bash scripts/bootstrap && .venv/bin/pytest" in (PROJECT / ".ci/run").read_text()


def layout_block() -> str:
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## How the code is laid out", 1)[1]
    return section.split("```", 2)[1]


def package_lines(block: str, folder: str) -> str:
    """The lines of the layout block under ``  folder/`` (deeper-indented lines that follow it)."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {folder}/"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("   ")), len(lines))
    return "\n".join(lines[start:end])


def test_readme_layout_names_every_package_and_only_real_files():
    block = layout_block()
    packages = {p.name for p in (PROJECT / "mailstack").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.name for p in (PROJECT / "mailstack").glob("*.py") if p.name != "__init__.py"}
    for name in sorted(packages):
        assert f"  {name}/" in block, f"README layout does not show mailstack/{name}/"
    for name in sorted(modules):
        assert f"  {name}" in block, f"README layout does not show mailstack/{name}"
    for folder in sorted(packages):
        shown = set(re.findall(r"\b([a-z_]+\.py)\b", package_lines(block, folder)))
        missing = [name for name in sorted(shown) if not (PROJECT / "mailstack" / folder / name).exists()]
        assert not missing, f"README layout shows {missing} in mailstack/{folder}/, which has no such file"
    for top in ("templates", "stacks", "tests", "bench", "scripts"):
        assert (PROJECT / top).is_dir() and f"{top}/" in block
