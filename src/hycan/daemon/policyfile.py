"""TEMPORARY STUB (replaced by the policyfile branch)."""

from __future__ import annotations

from typing import Any

from hycan.daemon.policy import Rules


class PolicyFileError(Exception):
    def __init__(self, path: str, line: int, column: int, problem: str) -> None:
        super().__init__(f"{path}:{line}:{column}: {problem}")


def load(path: str, **kwargs: Any) -> Rules:
    raise PolicyFileError(path, 1, 1, "not implemented")


def check(path: str, **kwargs: Any) -> int:
    return 1
