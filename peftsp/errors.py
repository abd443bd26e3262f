"""Errors that the command line reports to the user without a traceback."""

from __future__ import annotations


class PeftSPError(Exception):
    """Base class: a problem the user can fix (bad input, missing model, bad option)."""


class InputError(PeftSPError):
    """Bad input data, located by file, record and line where known."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        record: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = path
        self.record = record
        self.line = line
        self.reason = message
        where = []
        if path is not None:
            where.append(f"{path}")
        if line is not None:
            where.append(f"line {line}")
        if record is not None:
            where.append(f"record {record!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ModelError(PeftSPError):
    """A model bundle or checkpoint that is missing, corrupt or does not match."""


class DeviceError(PeftSPError):
    """The requested execution device (CUDA, TensorRT) is not usable."""
