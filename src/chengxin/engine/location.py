"""Where exports and results live: a directory on the local disk or in an object store.

Read and written through ``pyarrow.fs``, so a job on a cluster reads an
export copied to an object store (``s3a://``, ``gs://``) as Spark names it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["Location", "data_files", "parquet_parts"]

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Location:
    """A directory on the local disk or in an object store, as pyarrow and Spark name it."""

    fs: Any
    root: str
    uri: str

    @classmethod
    def of(cls, where: str | Path) -> Location:
        """A local path, ``file://…``, or an object-store URI (``s3a://`` is read as ``s3://``)."""
        text = str(where)
        if "://" in text and not text.startswith("file://"):
            scheme, rest = text.split("://", 1)
            fs, root = pafs.FileSystem.from_uri(
                ("s3" if scheme == "s3a" else scheme) + "://" + rest
            )
            return cls(fs, root.rstrip("/"), text.rstrip("/"))
        local = os.path.abspath(text.removeprefix("file://"))
        return cls(pafs.LocalFileSystem(), local, local)

    def child(self, rel: str) -> Location:
        """A directory under this one."""
        return Location(self.fs, self.path(rel), f"{self.uri}/{rel}")

    def path(self, rel: str = "") -> str:
        """The pyarrow path of ``rel``."""
        return f"{self.root}/{rel}" if rel else self.root

    def spark_path(self, rel: str = "") -> str:
        """The path of ``rel`` as Spark reads it."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def exists(self, rel: str = "") -> bool:
        """Whether a file or directory is there."""
        return bool(self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound)

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel`` (recursively), relative to this directory, sorted."""
        selector = pafs.FileSelector(self.path(rel), recursive=True, allow_not_found=True)
        skip = len(self.root) + 1
        return sorted(
            info.path[skip:]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def size(self, rel: str) -> int:
        """A file's size in bytes."""
        return int(self.fs.get_file_info(self.path(rel)).size)

    def sha256(self, rel: str) -> str:
        """A file's sha256, read in blocks."""
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.path(rel)) as stream:
            while block := stream.read(_HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def parquet_rows(self, rel: str) -> int:
        """Rows in a Parquet file, from its footer."""
        with self.fs.open_input_file(self.path(rel)) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    def read_text(self, rel: str) -> str:
        """A text file's contents."""
        with self.fs.open_input_stream(self.path(rel)) as stream:
            return bytes(stream.read()).decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        """Write a text file (object stores write it whole on close)."""
        with self.fs.open_output_stream(self.path(rel)) as stream:
            stream.write(text.encode("utf-8"))

    def delete(self, rel: str) -> None:
        """Remove a file or directory if it is there."""
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(rel))


def data_files(where: Location, rel: str) -> list[str]:
    """The files under ``rel`` that readers read: Spark's markers and checksums, and any
    other name starting with ``_`` or ``.``, aside (Spark and pyarrow skip those too)."""
    return [p for p in where.files(rel) if not any(s[:1] in "._" for s in p.split("/"))]


def parquet_parts(where: Location, rel: str) -> list[str]:
    """The Parquet files under ``rel``."""
    return [p for p in data_files(where, rel) if p.endswith(".parquet")]
