"""Durable files of the index folder: atomic replacement, fsync, and documents' extracted texts kept by hash."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


class TextFile:
    """A document's extracted text written block by block, kept under its hash once complete."""

    def __init__(self, path: Path) -> None:
        self.docs = path / "docs"
        self.docs.mkdir(parents=True, exist_ok=True)
        self.temp = self.docs / f"incoming.{os.getpid()}.tmp"
        self.handle = open(self.temp, "wb")
        self.digest = hashlib.sha256()

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self.digest.update(data)
        self.handle.write(data)

    def commit(self) -> str:
        """Keep the text as docs/<sha256>.txt (not flushed here: `commit` flushes everything at once)."""
        self.handle.close()
        sha = self.digest.hexdigest()
        os.replace(self.temp, self.docs / f"{sha}.txt")
        return sha

    def discard(self) -> None:
        self.handle.close()
        self.temp.unlink(missing_ok=True)


def save_text(path: Path, text: str) -> str:
    """Keep a document's extracted text under its hash (for context and citations); returns the hash."""
    data = text.encode("utf-8", "surrogatepass")
    sha = hashlib.sha256(data).hexdigest()
    target = path / "docs" / f"{sha}.txt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Not flushed one by one (two fsyncs per file dominated indexing many small files): the commit flushes
        # everything once before the manifest that refers to these texts is written.
        write_atomic(target, data, sync=False)
    return sha


def write_atomic(target: Path, data: bytes, sync: bool = True) -> None:
    """Replace `target` with `data` whole: a reader sees the old file or the new one, never part of either."""
    temp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        if sync:
            flush(handle)
    os.replace(temp, target)
    if sync:
        flush_folder(target.parent)


def flush(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def flush_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
