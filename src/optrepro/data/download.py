"""Verified downloads: mirrors in order with retries, checksums, safe extraction, an atomic "verified" marker.

    fetch("cifar10", root="data")   # download, verify, extract, prepare; then write data/cifar10/.verified

The top layer of optrepro.data: the layout of a source's files (layout.py) and their decoding (arrays.py) sit
below it. checksums.json records the sha256 seen for every file (trust on first use where no checksum is
published).

Everything is idempotent: a source with its marker is skipped; a raw file matching its checksum is not
downloaded again; an archive already unpacked is not unpacked again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from optrepro.data import sources as _sources
from optrepro.data.arrays import prepare
from optrepro.data.layout import (CHUNK, extracted_dir, file_digests, is_verified, marker_path, raw_dir,
                                  resolve_source, safe_extract, source_dir)
from optrepro.data.sources import RemoteFile, Source
from optrepro.io import atomic_write_json

log = logging.getLogger("optrepro.data")

USER_AGENT = "optrepro-data/1 (+reproducible research pipeline)"
OFFLINE_ENV = "OPTREPRO_OFFLINE"  # "1": never touch the network, use only files already present


class DownloadError(RuntimeError):
    """Every mirror and retry failed for one file; the message lists each attempt."""


class ChecksumError(ValueError):
    pass


class UnverifiedChecksumWarning(UserWarning):
    """A file has no published checksum: its sha256 was recorded on first download (trust on first use)."""


# ----------------------------------------------------------------------------------------------- digests
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
