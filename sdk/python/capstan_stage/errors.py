"""Errors a stage raises on purpose: their type and retry intent reach the worker as they are."""
from __future__ import annotations


class StageError(Exception):
    """An error with a stable ``type`` (SCREAMING_SNAKE) and what a retry would do.

    Not retried unless ``retryable=True`` (as lib/errors.ts's StageError); ``bad_input=True`` marks bad
    params or data (never retried). Any other exception is retried.
    """

    default_type = "STAGE_ERROR"

    def __init__(self, message: str, type: str | None = None, retryable: bool = False, bad_input: bool = False):
        super().__init__(message)
        self.message = message
        self.type = type or self.default_type
        self.retryable = bool(retryable)
        self.bad_input = bool(bad_input)


class BadInput(StageError):
    """Bad params or bad data: retrying will not help (never retried)."""

    default_type = "BAD_INPUT"

    def __init__(self, message: str, type: str | None = None):
        super().__init__(message, type=type, retryable=False, bad_input=True)


class ArtifactError(BadInput):
    """An input folder (dataset, model) that is missing, malformed or corrupt; names the file. Never retried."""

    def __init__(self, message: str, type: str, file):
        super().__init__(f"{file}: {message}", type=type)
        self.file = str(file)
