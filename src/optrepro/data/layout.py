"""Where a data source's files live under the data root, and what can be done with them without the network:
digests and safe extraction. The bottom layer of optrepro.data: arrays.py (decoding) and download.py
(fetching, on top of both) import it; it imports neither.

    <root>/<source>/raw/<file>              downloaded files, kept only once their checksum matched
    <root>/<source>/extracted/<archive>/    each archive unpacked (a temp dir renamed when complete)
    <root>/<source>/prepared/               arrays decoded once (arrays.py)
    <root>/<source>/checksums.json          the sha256 seen for every file
    <root>/<source>/.verified               written last, atomically: the DAG's output for the source
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import zlib
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from optrepro.data import sources as _sources
from optrepro.data.sources import Source

MARKER = ".verified"
CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target directory (path traversal, absolute path, bad link)."""


# What a damaged archive raises while it is read to its end.
ARCHIVE_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError, tarfile.TarError, zipfile.BadZipFile)


# ----------------------------------------------------------------------------------------------- paths
def resolve_source(source: str | Source) -> Source:
    return source if isinstance(source, Source) else _sources.get(source)


def source_dir(root: str | Path, name: str) -> Path:
    return Path(root) / name


def raw_dir(root, name) -> Path:
    return source_dir(root, name) / "raw"


def extracted_dir(root, name) -> Path:
    return source_dir(root, name) / "extracted"


def prepared_dir(root, name) -> Path:
    return source_dir(root, name) / "prepared"


def marker_path(root, name) -> Path:
    return source_dir(root, name) / MARKER


def is_verified(root, name) -> bool:
    return marker_path(root, name).is_file()


# ----------------------------------------------------------------------------------------------- digests
def file_digests(path: Path) -> dict[str, str]:
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def tree_digest(directory: Path) -> str:
    """A digest of an extracted folder: every file's path and size (cheap enough for 100,000 files; a file
    deleted, added or cut short changes it)."""
    directory = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() or p.is_symlink()):
        h.update(f"{path.relative_to(directory).as_posix()}\0{path.lstat().st_size}\n".encode())
    return h.hexdigest()


def remove_stale(root, name) -> list[Path]:
    """Remove what a killed fetch leaves behind: partial downloads (raw/.*.part), half-extracted archives
    (extracted/.*.tmp) and half-prepared arrays (.prepared.*.tmp). Call it holding the source's lock."""
    base = source_dir(root, name)
    stale = [*raw_dir(root, name).glob(".*.part"), *extracted_dir(root, name).glob(".*.tmp"),
             *base.glob(".prepared.*.tmp")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


# ----------------------------------------------------------------------------------------------- integrity
HTML_START = (b"<!doctype html", b"<html", b"<head")


def integrity_problem(path: Path, name: str) -> str | None:
    """None when the file `name` (stored at `path`) is what its name says, else why not: an HTML page where a
    data file was asked for, or an archive that does not read to its end (a truncated or damaged download).
    Compressed files and archives are read fully, so their checksums (gzip's CRC, zip's CRCs) are checked."""
    lower = name.lower()
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if not lower.endswith((".html", ".htm")) and head.startswith(HTML_START):
        return "an HTML page, not the data file (an error or login page served in its place)"
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            return f"damaged zip archive (member {bad!r} fails its CRC)" if bad else None
        if lower.endswith((".tar", ".tgz", ".tar.gz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")):
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile():
                        stream = tar.extractfile(member)
                        while stream.read(CHUNK):
                            pass
            return None
        for suffix, opener in ((".gz", gzip.open), (".xz", lzma.open), (".bz2", bz2.open)):
            if lower.endswith(suffix):
                with opener(path, "rb") as stream:
                    while stream.read(CHUNK):
                        pass
                return None
    except (*ARCHIVE_ERRORS, OSError) as exc:
        return f"not a complete archive ({type(exc).__name__}: {exc or 'ends early'})"
    return None


# ----------------------------------------------------------------------------------------------- extraction
def _inside(target: Path, name: str) -> bool:
    """Whether archive member `name` resolves inside `target` (refuses absolute paths and ../ escapes)."""
    if not name or PurePosixPath(name).is_absolute() or Path(name).is_absolute() or name.startswith(("/", "\\")):
        return False
    if any(part == ".." for part in PurePosixPath(name.replace("\\", "/")).parts):
        return False
    resolved = (target / name).resolve()
    return resolved == target or target in resolved.parents


def _check_tar(tar: tarfile.TarFile, target: Path) -> None:
    for member in tar.getmembers():
        if not _inside(target, member.name):
            raise UnsafeArchiveError(f"archive member {member.name!r} would be written outside {target}")
        if member.issym() or member.islnk():
            base = (target / member.name).parent if member.issym() else target
            if PurePosixPath(member.linkname).is_absolute() or not _inside(target, os.path.relpath(
                    (base / member.linkname).resolve(), target)):
                raise UnsafeArchiveError(
                    f"archive link {member.name!r} -> {member.linkname!r} points outside {target}")
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"archive member {member.name!r} is a device or fifo; refused")


def safe_extract(archive: Path, target: Path) -> Path:
    """Unpack a tar (.tar, .tar.gz/.tgz, .tar.xz), .zip or single-file .gz archive into `target`.

    Every member is checked before anything is written; a member with `..`, an absolute path, or a link
    pointing outside `target` raises UnsafeArchiveError. The archive is unpacked into a temporary directory
    that is renamed to `target` once complete, so a killed extraction leaves nothing that looks finished.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        tmp_resolved = tmp.resolve()
        name = archive.name.lower()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not _inside(tmp_resolved, info.filename):
                        raise UnsafeArchiveError(f"archive member {info.filename!r} would be written outside "
                                                 f"{target}")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                _check_tar(tar, tmp_resolved)
                tar.extractall(tmp, filter="data")
        elif name.endswith(".gz"):
            with gzip.open(archive, "rb") as src, open(tmp / archive.name[:-3], "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        else:
            raise ValueError(f"{archive}: not a tar, zip or gz archive")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
