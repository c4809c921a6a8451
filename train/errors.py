"""Errors of the training pipeline; ``python -m train`` turns them into exit codes."""

from __future__ import annotations


class TrainError(Exception):
    """A build that must not ship (failed export parity, failed checks) or cannot start."""

    exit_code = 1


class TrainUsageError(TrainError):
    """Bad input from the caller (no photos found, unusable folders)."""

    exit_code = 2
