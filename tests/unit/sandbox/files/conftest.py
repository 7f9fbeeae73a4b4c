"""Fixtures of the file and package-environment tests: the app with a stand-in runner."""

from __future__ import annotations

from tests.unit.sandbox.test_app import make_service

__all__ = ["make_service"]
