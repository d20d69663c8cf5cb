"""data/prepared/manifest.parquet: one row per image (path, label, split, sha256, original size).

Its paths, sha256s and sizes (about 60 bytes an image) are needed by nothing else once the split
is drawn, and the parquet writer needs a few dozen MB for each row group it writes. So prepare sets
them aside in an unnamed temporary file first (`ManifestColumns`), lets go of them, and the
manifest is written from there a row group at a time.
"""

from __future__ import annotations

import binascii
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from resnet_mlops.data.examples import Examples, split_names

# Rows written at a time, as one parquet row group each: what the manifest holds in memory (a few
# dozen MB), whatever the dataset's size. CIFAR-10's 60,000 fit in one: the bytes DataFrame.to_parquet gives.
MANIFEST_ROWS = 1 << 16

_SIZES = np.dtype("<i4")  # original width and height, each
_SIZE_ROW = 2 * _SIZES.itemsize


class ManifestColumns:
    """The paths, sha256s and sizes of `examples`, in a temporary file in `folder` (gone when it is
    closed, or with the process if it is killed) until `write`."""

    def __init__(self, folder: str | Path, examples: Examples):
        self.count = len(examples.paths)
        column = examples.paths.column
        ends = np.frombuffer(column.buffers()[1], np.int64)[column.offset:column.offset + self.count + 1]
        self._first = int(ends[0])
        self._file = tempfile.TemporaryFile(dir=folder)
        self._file.write(np.ascontiguousarray(examples.hashes).data)
        self._file.write(np.ascontiguousarray(examples.sizes, _SIZES).data)
        self._file.write(ends.data)
        self._file.write(memoryview(column.buffers()[2])[self._first:int(ends[-1])])
        self._file.flush()
        self._sizes_at = 32 * self.count
        self._ends_at = self._sizes_at + _SIZE_ROW * self.count
        self._text_at = self._ends_at + 8 * (self.count + 1)

    def __enter__(self) -> "ManifestColumns":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def write(self, path: Path, labels: np.ndarray, class_names: tuple[str, ...], split_of: np.ndarray) -> None:
        """manifest.parquet, MANIFEST_ROWS at a time, with the schema (pandas metadata included) that
        DataFrame.to_parquet gives."""
        writer = None
        try:
            for start in range(0, max(self.count, 1), MANIFEST_ROWS):
                stop = min(start + MANIFEST_ROWS, self.count)
                rows = pa.Table.from_pandas(self._rows(start, stop, labels, class_names, split_of), preserve_index=False)
                writer = writer or pq.ParquetWriter(path, rows.schema, compression="snappy")
                writer.write_table(rows)
                del rows
                # Arrow's allocator (mimalloc) keeps what each row group freed; left so, a manifest of
                # ten row groups held five groups' worth of memory instead of one.
                pa.default_memory_pool().release_unused()
        finally:
            if writer:
                writer.close()

    def _rows(self, start: int, stop: int, labels: np.ndarray, class_names: tuple[str, ...],
              split_of: np.ndarray) -> pd.DataFrame:
        """Rows start..stop. The text columns are made in Arrow's own layout (no Python string per
        image); parquet gets the bytes that lists of str give."""
        names = pa.array(list(class_names), pa.large_string())
        sizes = np.frombuffer(self._read(self._sizes_at + _SIZE_ROW * start, _SIZE_ROW * (stop - start)), _SIZES).reshape(-1, 2)
        return pd.DataFrame({
            "path": _string_column(self._paths(start, stop)),
            "label": _string_column(names.take(pa.array(labels[start:stop]))),
            "label_index": labels[start:stop],
            "split": split_names(split_of[start:stop]),
            "sha256": _string_column(_hex_digests(self._read(32 * start, 32 * (stop - start)))),
            "width": sizes[:, 0].astype(np.int64),
            "height": sizes[:, 1].astype(np.int64),
        })

    def _paths(self, start: int, stop: int) -> pa.Array:
        ends = np.frombuffer(self._read(self._ends_at + 8 * start, 8 * (stop - start + 1)), np.int64)
        text = self._read(self._text_at + int(ends[0]) - self._first, int(ends[-1] - ends[0]))
        return pa.Array.from_buffers(pa.large_string(), stop - start,
                                     [None, pa.py_buffer(ends - ends[0]), pa.py_buffer(text)])

    def _read(self, at: int, size: int) -> bytes:
        """`size` bytes at offset `at` (a few MB at most; pread: the file's pages are not mapped into
        this process, where they would count as its memory)."""
        data = os.pread(self._file.fileno(), size, at)
        if len(data) != size:
            raise EOFError(f"{self._file.name}: ends before offset {at + size}")
        return data


def _hex_digests(shas: bytes) -> pa.Array:
    """The hex digests of raw sha256s end to end (32 bytes each) as an Arrow string array, 64 bytes each."""
    data = binascii.hexlify(shas)
    offsets = np.arange(0, len(data) + 1, 64, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _string_column(column: pa.Array) -> pd.api.extensions.ExtensionArray:
    """An Arrow large_string array as pandas' string column, without a copy."""
    return pd.array(column, dtype=pd.StringDtype(na_value=np.nan))
