"""The decode cache: what prepare already decoded and validated, by file content, outside the DVC output.

`data/cache/<policy>/` (in the repository root, shared by `dvc exp` copies) holds packs,
one per chunk of files decoded together:

    <id>.npy         the uint8 pixels of the chunk's good images (N x H x W x C)
    <id>.index.npy   per good image: the sha256 of its file and its original width and height
    <id>.bad.json    per bad file: its sha256, problem kind and detail (only when there are some)

`<policy>` names everything a decoded result depends on: the image size, channels, the
size limits, and a hash of the decoder (images.py, Pillow's and simplejpeg's versions), so
a change to any of them starts a fresh cache instead of reusing stale pixels. A pack's index
is written last, so a killed prepare leaves only complete packs (and stray `.tmp` files,
removed with the packs below).

Bound and cleaning: once a prepare has read its source, the packs holding no file of it are
deleted, and so are other policies' caches (each policy has a lock file; a running prepare
holds its lock, and a cache in use is never deleted). The cache therefore holds the current
dataset's decoded pixels (as many bytes as data/prepared/ itself) plus the few stale images
that share a pack with current ones. Deleting `data/cache/` while no prepare runs is always
safe: the next prepare decodes everything again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from resnet_mlops.data.examples import digest_prefixes
from resnet_mlops.dataset import images

_INDEX = np.dtype([("sha256", "S32"), ("width", "<i4"), ("height", "<i4")])


def policy_key(size: int, channels: int, min_size: int, max_pixels: int | None) -> str:
    import PIL
    import simplejpeg

    decoder = hashlib.sha256(Path(images.__file__).read_bytes())
    decoder.update(f"{PIL.__version__} {simplejpeg.__version__}".encode())
    return f"{size}x{size}x{channels}-min{min_size}-max{max_pixels}-{decoder.hexdigest()[:12]}"


class DecodeCache:
    """Content-addressed decode results of one image policy."""

    def __init__(self, root: str | Path, policy: str, shape: tuple[int, int, int]):
        self.root = Path(root)
        self.folder = self.root / policy
        self.shape = shape
        self._lock = None
        self.decoded = 0  # files decoded by this run (stored here)
        self.packs: list[str] = []          # pack number -> id
        self._bad: dict[bytes, tuple[int, str, str]] = {}  # sha -> (pack, kind, detail)
        shas, where = [], []                # (pack, row, width, height) per indexed sha
        for index_file in sorted(self.folder.glob("*.index.npy")):
            index = np.load(index_file, allow_pickle=False)
            where.append(self._add(index_file.name.removesuffix(".index.npy"), index))
            shas.append(index["sha256"])
        # The packs known when this run began, sorted by sha for `lookup`; packs stored by this
        # run are not looked up again (its files are each looked up once).
        shas = np.concatenate(shas) if shas else np.zeros(0, "S32")
        where = np.concatenate(where) if where else np.zeros((0, 4), np.int32)
        order = np.argsort(shas, kind="stable")
        self._sorted, self._sorted_where = _Sorted(shas[order]), where[order]
        self._sorted_bad = _Sorted(np.array(sorted(self._bad), "S32"))

    def _add(self, pack_id: str, index: np.ndarray) -> np.ndarray:
        """Number a pack; its images' (pack, row, width, height)."""
        number = len(self.packs)
        self.packs.append(pack_id)
        where = np.zeros((len(index), 4), np.int32)
        where[:, 0], where[:, 1] = number, np.arange(len(index))
        where[:, 2], where[:, 3] = index["width"], index["height"]
        bad = self.folder / f"{pack_id}.bad.json"
        if bad.exists():
            for sha, kind, detail in json.loads(bad.read_text()):
                self._bad[bytes.fromhex(sha)] = (number, kind, detail)
        return where

    def _hold(self) -> None:
        """Take this policy's shared lock for the life of this object: a prepare of another
        policy deletes this one's cache only while no prepare holds it (`prune`)."""
        if self._lock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.root / f"{self.folder.name}.lock", "a")
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    def lookup(self, shas: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[int, str, str]]]:
        """The cached verdicts on files with these sha256s (S32), in one search: an int32 array (N, 4)
        of (pack, row, width, height), pack -1 where the file is not cached as a good image, and
        {position: (pack, kind, detail)} for the files cached as bad."""
        self._hold()
        where = np.full((len(shas), 4), -1, np.int32)
        at, hits = self._sorted.find(shas)
        where[hits] = self._sorted_where[at[hits]]
        raw = np.ascontiguousarray(shas).tobytes()
        bad = {int(i): self._bad[raw[32 * i:32 * i + 32]] for i in np.flatnonzero(self._sorted_bad.find(shas)[1])}
        return where, bad

    def close_index(self) -> None:
        """The source is read, its files looked up: let go of the index of the packs known at the
        start (about 60 bytes per cached image) before the shards are written."""
        self._sorted = self._sorted_where = self._sorted_bad = None
        self._bad = {}

    def store(self, pixels: np.ndarray, good: list[tuple[bytes, tuple[int, int]]],
              bad: list[tuple[bytes, str, str]]) -> int:
        """Keep a decoded chunk (good images' pixels and (sha, size), bad files' (sha, kind, detail));
        return its pack number (row i of the pack is good[i])."""
        index = np.array([(sha, w, h) for sha, (w, h) in good], dtype=_INDEX)
        digest = hashlib.sha256(index.tobytes())
        for sha, kind, detail in bad:
            digest.update(sha)
        pack_id = digest.hexdigest()[:32]
        self.decoded += len(good) + len(bad)
        self._hold()
        self.folder.mkdir(parents=True, exist_ok=True)
        if bad:
            _write(self.folder / f"{pack_id}.bad.json",
                   lambda f: f.write(json.dumps([[sha.hex(), kind, detail] for sha, kind, detail in bad]).encode()))
        _write(self.folder / f"{pack_id}.npy", lambda f: np.save(f, pixels, allow_pickle=False))
        _write(self.folder / f"{pack_id}.index.npy", lambda f: np.save(f, index, allow_pickle=False))
        self._add(pack_id, index)
        return len(self.packs) - 1

    def pixels(self, packs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The images at (packs[i], rows[i]), in that order; each pack is mapped only while it is read."""
        out = np.empty((len(rows), *self.shape), np.uint8)
        for pack in np.unique(packs):
            mine = packs == pack
            stored = np.load(self.folder / f"{self.packs[pack]}.npy", mmap_mode="r", allow_pickle=False)
            out[mine] = stored[rows[mine]]
            del stored
        return out

    def prune(self, used_packs: np.ndarray) -> None:
        """Delete every pack of this policy not in `used_packs` (the packs holding the verdict on some
        file of the dataset being prepared), and the caches of other policies no prepare is using.

        Pruning this policy waits for no one: it is skipped while another prepare of it runs."""
        if not self.folder.exists():
            return
        for lock_file in self.root.glob("*.lock"):
            other = self.root / lock_file.name.removesuffix(".lock")
            if other != self.folder:
                with _exclusive(lock_file) as free:
                    if free:
                        shutil.rmtree(other, ignore_errors=True)
                        lock_file.unlink(missing_ok=True)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        with _exclusive(self.root / f"{self.folder.name}.lock") as free:
            if free:
                keep = {self.packs[p] for p in np.unique(used_packs)}
                for path in self.folder.iterdir():
                    if path.name.endswith(".tmp") or path.name.split(".")[0] not in keep:
                        path.unlink(missing_ok=True)
        fcntl.flock(self._lock, fcntl.LOCK_SH)


class _Sorted:
    """Sorted fixed-width digests (S16 or S32), searched by their first 8 bytes as integers: numpy
    compares strings byte by byte, which made the look-ups of a large folder a good part of its read."""

    def __init__(self, digests: np.ndarray):
        self.digests = digests
        self._prefixes = digest_prefixes(digests)

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of `wanted`: a position in the digests, and whether the digest there is it."""
        if not len(self.digests) or not len(wanted):
            return np.zeros(len(wanted), np.intp), np.zeros(len(wanted), bool)
        prefixes = digest_prefixes(wanted)
        at = np.minimum(np.searchsorted(self._prefixes, prefixes), len(self.digests) - 1)
        hits = self.digests[at] == wanted
        shared = ~hits & (self._prefixes[at] == prefixes)  # another digest with the same first 8 bytes
        if shared.any():
            at[shared] = np.minimum(np.searchsorted(self.digests, wanted[shared]), len(self.digests) - 1)
            hits[shared] = self.digests[at[shared]] == wanted[shared]
        return at, hits


@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """Whether `lock_file`'s exclusive lock could be taken at once (held inside the block)."""
    with open(lock_file, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True


def _write(path: Path, write) -> None:
    """Write a file whole or not at all (an interrupted write leaves `<name>.tmp`, pruned later)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


class CachedPixels:
    """The pixels of some cached images, read from the cache only when asked for (see examples.ArrayPixels)."""

    def __init__(self, cache: DecodeCache, packs: np.ndarray, rows: np.ndarray):
        self.cache, self.packs, self.rows = cache, packs, rows
        self.shape = cache.shape

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: np.ndarray) -> "CachedPixels":
        return CachedPixels(self.cache, self.packs[index], self.rows[index])

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.cache.pixels(self.packs[index], self.rows[index])


class KnownFiles:
    """The sha256 of each file of a folder as last read, by (path, size, mtime, inode), as git and DVC
    keep them: a file whose stat is unchanged is not read again (an archive is always read).

    One file per folder, `data/cache/files/<hash of the folder's path>.npy`, rewritten after each read."""

    _DTYPE = np.dtype([("key", "S16"), ("stat", "<i8", 3), ("sha256", "S32")])

    def __init__(self, cache_root: str | Path, folder: str | Path):
        name = hashlib.blake2b(str(Path(folder).resolve()).encode(), digest_size=16).hexdigest()
        self.path = Path(cache_root) / "files" / f"{name}.npy"
        known = np.load(self.path, allow_pickle=False) if self.path.exists() else np.zeros(0, self._DTYPE)
        self._known = known[np.argsort(known["key"], kind="stable")]
        self._keys_sorted = _Sorted(self._known["key"])
        # What this run saw, as records on disk until `save` (a large folder's would be tens of MB).
        self._seen = None
        self._batch = None  # (keys, stats, has a stat) of the files of the last `shas` call

    def shas(self, files: list[tuple[str, tuple[int, int, int] | None]]) -> tuple[np.ndarray, np.ndarray]:
        """The known sha256 of each (path, stat) (S32, zeros where unknown), and a mask of the files
        whose stat is as last read: the others must be read. `saw` then takes this batch's hashes."""
        keys = np.array([hashlib.blake2b(path.encode(), digest_size=16).digest() for path, _ in files], "S16")
        stated = np.array([stat is not None for _, stat in files], bool)
        stats = np.array([stat or (-1, -1, -1) for _, stat in files], np.int64).reshape(-1, 3)
        self._batch = keys, stats, stated
        shas, known = np.zeros(len(files), "S32"), np.zeros(len(files), bool)
        at, hits = self._keys_sorted.find(keys)
        if hits.any():
            found = self._known[at]
            known = hits & stated & (found["stat"] == stats).all(axis=1)
            shas[known] = found["sha256"][known]
        return shas, known

    def saw(self, shas: np.ndarray) -> None:
        """The sha256s (S32) of the files of the last `shas` call, to remember (those with a stat)."""
        keys, stats, stated = self._batch
        if not stated.any():
            return
        seen = np.zeros(int(stated.sum()), self._DTYPE)
        seen["key"], seen["stat"], seen["sha256"] = keys[stated], stats[stated], shas[stated]
        if self._seen is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._seen = tempfile.TemporaryFile(dir=self.path.parent)  # gone with the process, killed or not
        self._seen.write(seen.tobytes())

    def save(self) -> None:
        """Replace the folder's file with what this run saw (the bytes np.save would write)."""
        if self._seen is None:
            return
        header = {"descr": np.lib.format.dtype_to_descr(self._DTYPE), "fortran_order": False,
                  "shape": (self._seen.tell() // self._DTYPE.itemsize,)}

        def write(handle):
            np.lib.format.write_array_header_1_0(handle, header)
            self._seen.seek(0)
            shutil.copyfileobj(self._seen, handle)

        _write(self.path, write)
        self._seen.close()
        self._seen = None
