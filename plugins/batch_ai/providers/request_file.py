"""A job's requests as a JSONL file on local disk, written one request at a time and uploaded
from the file: a job of 200,000 requests never sits in memory as a list or as one byte string."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from batch_ai import jsonio
from batch_ai.providers.base import jsonl_line


class RequestFile:
    """A spooled JSONL file of requests (``with`` it, or :meth:`close` it): ``count`` requests,
    ``size`` bytes, written in order."""

    def __init__(self):
        self._file = tempfile.NamedTemporaryFile(prefix="batch-ai-requests-", suffix=".jsonl")  # noqa: SIM115
        self.count = 0
        self.size = 0

    @classmethod
    def of(cls, requests: Iterable[dict[str, Any]]) -> RequestFile:
        file = cls()
        for request in requests:
            file.add(request)
        return file

    def add(self, request: dict[str, Any]) -> None:
        line = jsonl_line(request)
        self._file.write(line)
        self.count += 1
        self.size += len(line)

    @property
    def path(self) -> str:
        """The file on disk (complete once nothing more is added)."""
        self._file.flush()
        return self._file.name

    def open(self) -> IO[bytes]:
        """The file, read from its start."""
        self._file.flush()
        self._file.seek(0)
        return self._file

    def read(self) -> bytes:
        return self.open().read()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The requests again, parsed (for a provider that takes them in the request body)."""
        for line in self.open():
            yield jsonio.loads(line)

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RequestFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
