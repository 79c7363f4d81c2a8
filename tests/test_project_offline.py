"""The project runs offline: a plain `kedro run` in it, outside the Makefile, sends no telemetry either."""

from __future__ import annotations

from kedro_telemetry.plugin import _check_for_telemetry_consent

from tests.kedro_project import PROJECT


def test_the_project_declines_kedro_telemetry(monkeypatch):
    for var in ("DO_NOT_TRACK", "KEDRO_DISABLE_TELEMETRY", "GITHUB_REPOSITORY_OWNER"):
        monkeypatch.delenv(var, raising=False)
    assert _check_for_telemetry_consent(PROJECT) is False
