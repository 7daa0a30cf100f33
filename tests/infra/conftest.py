"""Fixtures for the program under mocks."""

from __future__ import annotations

import pytest


@pytest.fixture
def declared_types(monkeypatch) -> list[str]:
    """Every resource type the program declares during the test, in order."""
    from mailstack.infra import offline

    declared: list[str] = []
    original = offline.RecordingMocks.new_resource
    monkeypatch.setattr(offline.RecordingMocks, "new_resource",
                        lambda self, args: declared.append(args.typ) or original(self, args))
    return declared
