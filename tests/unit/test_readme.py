"""The README's settings reference names every setting, and only real ones."""

from __future__ import annotations

import re

from pydantic import BaseModel

from mailstack.settings import SECRET_KEYS, Settings
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
    documented = set(re.findall(r"^\| `mailstack:([a-z_.]+)` \|", readme, re.M))
    assert documented == setting_keys(Settings) | set(SECRET_KEYS)


def test_readme_first_screen_gives_the_two_setup_commands():
    first_screen = "\n".join((PROJECT / "README.md").read_text().splitlines()[:20])
    assert "bash scripts/bootstrap && .venv/bin/mailstack preview -s dev" in first_screen
    assert "bash scripts/bootstrap && .venv/bin/pytest" in first_screen
    assert "bash scripts/bootstrap && .venv/bin/pytest" in (PROJECT / ".ci/run").read_text()
