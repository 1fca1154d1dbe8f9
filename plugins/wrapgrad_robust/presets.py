"""Presets: objective and loop options at two scales (placeholder, filled by the pilot)."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, dict[str, Any]]] = {"paper": {}, "embedded": {}}


def preset(objective: str, scale: str = "embedded") -> dict[str, Any]:
    return dict(PRESETS[scale].get(objective, {}))
