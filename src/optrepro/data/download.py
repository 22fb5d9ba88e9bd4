"""Verified downloads: mirrors in order with retries, checksums, safe extraction, an atomic "verified" marker.

    fetch("cifar10", root="data")   # download, verify, extract, prepare; then write data/cifar10/.verified

Layout of one source under the data root:

    <root>/<source>/raw/<file>              downloaded files, kept only once their checksum matched
    <root>/<source>/extracted/<archive>/    each archive unpacked (a temp dir renamed when complete)
    <root>/<source>/prepared/               arrays decoded once (see prepare.py)
    <root>/<source>/checksums.json          the sha256 seen for every file (trust on first use where no
                                            checksum is published)
    <root>/<source>/.verified               written last, atomically: the DAG's output for the source

Everything is idempotent: a source with its marker is skipped; a raw file matching its checksum is not
downloaded again; an archive already unpacked is not unpacked again.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from optrepro.data import sources as _sources
from optrepro.data.sources import RemoteFile, Source
from optrepro.io import atomic_write_json

log = logging.getLogger("optrepro.data")

MARKER = ".verified"
CHUNK = 1 << 20
USER_AGENT = "optrepro-data/1 (+reproducible research pipeline)"
OFFLINE_ENV = "OPTREPRO_OFFLINE"  # "1": never touch the network, use only files already present


class DownloadError(RuntimeError):
    """Every mirror and retry failed for one file; the message lists each attempt."""


class ChecksumError(ValueError):
    pass


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target directory (path traversal, absolute path, bad link)."""


class UnverifiedChecksumWarning(UserWarning):
    """A file has no published checksum: its sha256 was recorded on first download (trust on first use)."""


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


def check_digests(spec: RemoteFile, digests: dict[str, str], size: int, recorded_sha256: str | None) -> str | None:
    """None if the file is good, else why not. Published checksums win; a recorded sha256 is the fallback."""
    if spec.size is not None and size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    if spec.checksum is not None:
        seen = digests[spec.algorithm]
        ok = seen.startswith(spec.checksum.lower()) if spec.prefix else seen == spec.checksum.lower()
        if not ok:
            what = "prefix " if spec.prefix else ""
            return f"{spec.algorithm} {seen} does not match the published {what}{spec.checksum}"
    if recorded_sha256 is not None and digests["sha256"] != recorded_sha256:
        return f"sha256 {digests['sha256']} does not match the one recorded on first download {recorded_sha256}"
    return None


def _read_recorded(root, name) -> dict[str, str]:
    path = source_dir(root, name) / "checksums.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------------------------- download
def download_file(spec: RemoteFile, dest: Path, *, recorded_sha256: str | None = None, retries: int = 3,
                  backoff_s: float = 2.0, timeout_s: float = 60.0) -> dict[str, str]:
    """Download `spec` to `dest`, trying every mirror in order, `retries` rounds; return its digests.

    A download that fails its size or checksum (corrupted, truncated, an HTML error page) is removed and the
    next mirror is tried. Only a verified file is renamed to `dest`.
    """
    if os.environ.get(OFFLINE_ENV) == "1":
        raise DownloadError(f"{spec.name}: not present in {dest.parent} and {OFFLINE_ENV}=1 forbids downloads")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for round_ in range(max(1, retries)):
        if round_ and backoff_s:
            time.sleep(backoff_s * 2 ** (round_ - 1))
        for url in spec.urls:
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            tmp = Path(tmp_name)
            try:
                md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
                request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout_s) as response:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        md5.update(chunk)
                        sha256.update(chunk)
                        size += len(chunk)
                digests = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
                problem = check_digests(spec, digests, size, recorded_sha256)
                if problem:
                    raise ChecksumError(problem)
                os.replace(tmp, dest)
                log.info("downloaded %s from %s (%d bytes, sha256 %s)", spec.name, url, size, digests["sha256"])
                return digests
            except (OSError, urllib.error.URLError, ChecksumError) as exc:  # HTTPError is a URLError
                failures.append(f"round {round_ + 1} {url}: {type(exc).__name__}: {exc}")
                log.warning("download of %s failed (%s); trying the next mirror", spec.name, failures[-1])
            finally:
                tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {spec.name} ({len(failures)} attempts):\n  " + "\n  ".join(failures)
        + f"\nYou can place the file by hand at {dest}; its checksum is still checked.")


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


# ----------------------------------------------------------------------------------------------- fetch
def ensure_files(source: str | Source, root: str | Path, *, retries: int = 3, backoff_s: float = 2.0,
                 timeout_s: float = 60.0) -> dict[str, dict[str, str]]:
    """Make every raw file of `source` present and verified; return {file name: digests}."""
    source = resolve_source(source)
    raw = raw_dir(root, source.name)
    recorded = _read_recorded(root, source.name)
    seen: dict[str, dict[str, str]] = {}
    for spec in source.files:
        dest = raw / spec.name
        digests = None
        if dest.is_file():
            digests = file_digests(dest)
            problem = check_digests(spec, digests, dest.stat().st_size, recorded.get(spec.name))
            if problem:
                log.warning("%s: present but bad (%s); removed and downloaded again", dest, problem)
                dest.unlink()
                digests = None
        if digests is None:
            digests = download_file(spec, dest, recorded_sha256=recorded.get(spec.name), retries=retries,
                                    backoff_s=backoff_s, timeout_s=timeout_s)
        if not spec.verified and spec.name not in recorded:
            warnings.warn(
                f"{source.name}/{spec.name}: no published checksum exists; recorded the sha256 seen now "
                f"({digests['sha256']}) in {source_dir(root, source.name) / 'checksums.json'}. Later downloads "
                "must match it, but this first copy is trusted unchecked.", UnverifiedChecksumWarning, stacklevel=2)
        recorded[spec.name] = digests["sha256"]
        seen[spec.name] = digests
    if source.files:
        atomic_write_json(source_dir(root, source.name) / "checksums.json", recorded)
    return seen


def extract_all(source: str | Source, root: str | Path) -> None:
    source = resolve_source(source)
    for spec in source.files:
        if spec.extract:
            safe_extract(raw_dir(root, source.name) / spec.name, extracted_dir(root, source.name) / spec.name)


def fetch(source: str | Source, root: str | Path = "data", *, force: bool = False, requirements: bool = True,
          retries: int = 3, backoff_s: float = 2.0, timeout_s: float = 60.0) -> Path:
    """Download, verify, extract and prepare one source; return its marker path. Idempotent.

    `requirements`: fetch the sources this one needs first (a tokenizer for GLUE and OpenWebText).
    `force`: re-check every file and redo extraction and preparation even if the marker exists.
    """
    from filelock import FileLock

    from optrepro.data.arrays import prepare

    source = resolve_source(source)
    if source.kind == "user_dir":
        raise ValueError(f"{source.name} is not downloadable: it comes from a directory you supply "
                         f"(`optrepro data verify-imagenet DIR`, config key {_sources.IMAGENET_CONFIG_KEY})")
    if requirements:
        for dep in source.requires:
            fetch(dep, root, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
    for dep in source.requires:
        if not is_verified(root, dep):
            raise FileNotFoundError(f"{source.name} needs {dep}, which is not fetched under {root}: "
                                    f"run `optrepro data fetch {dep} --root {root}` first")
    marker = marker_path(root, source.name)
    source_dir(root, source.name).mkdir(parents=True, exist_ok=True)
    with FileLock(str(source_dir(root, source.name) / ".lock")):
        if marker.is_file() and not force:
            log.info("%s: already verified (%s)", source.name, marker)
            return marker
        marker.unlink(missing_ok=True)
        if force:
            shutil.rmtree(extracted_dir(root, source.name), ignore_errors=True)
        digests = ensure_files(source, root, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
        extract_all(source, root)
        written = prepare(source, root, force=force) if source.prepare else {}
        atomic_write_json(marker, {
            "source": source.name,
            "files": [{"name": spec.name, "sha256": digests[spec.name]["sha256"], "verified": spec.verified,
                       "checksum_source": spec.checksum_source or "recorded on first download"}
                      for spec in source.files],
            "prepared": written,
        })
    return marker
