"""Verified downloads: mirrors in order with retries, checksums, safe extraction, an atomic "verified" marker.

    fetch("cifar10", root="data")   # download, verify, extract, prepare; then write data/cifar10/.verified

The top layer of optrepro.data: the layout of a source's files (layout.py) and their decoding (arrays.py) sit
below it. checksums.json records the sha256 seen for every file (trust on first use where no checksum is
published).

A file without a published checksum cannot poison that record: a download must be as long as its
Content-Length, must not be an HTML page, and an archive must read to its end (layout.integrity_problem), or
the next mirror is tried; and its sha256 is pinned only once the whole source has been extracted and prepared
from it. A file that fails any of this is removed, never pinned. `force=True` downloads such files again and
replaces their pinned sha256 (published checksums always hold).

Everything is idempotent: a source with its marker is skipped once its extracted folders still match the
marker; a raw file matching its checksum is not downloaded again; an archive already unpacked is not unpacked
again; what a killed fetch left (partial downloads, half-extracted archives) is removed first.
"""
from __future__ import annotations

import hashlib
import http.client
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
from optrepro.data.arrays import PreparedMismatchError, prepare
from optrepro.data.layout import (ARCHIVE_ERRORS, CHUNK, extracted_dir, file_digests, integrity_problem, is_verified,
                                  marker_path, raw_dir, remove_stale, resolve_source, safe_extract, source_dir,
                                  tree_digest)
from optrepro.data.sources import RemoteFile, Source
from optrepro.io import atomic_write_json

log = logging.getLogger("optrepro.data")

USER_AGENT = "optrepro-data/1 (+reproducible research pipeline)"
OFFLINE_ENV = "OPTREPRO_OFFLINE"  # "1": never touch the network, use only files already present


class DownloadError(RuntimeError):
    """Every mirror and retry failed for one file; the message (one line) lists each attempt."""


class ChecksumError(ValueError):
    pass


class CorruptDataError(ValueError):
    """A source's files are there but do not extract or decode (a damaged archive that matches its checksum)."""


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

    A download that fails its length (Content-Length), size or checksum, or, without a published checksum, is an
    HTML page or an archive that does not read to its end, is removed and the next mirror is tried. Only a
    verified file is renamed to `dest`.
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
                    announced = response.headers.get("Content-Length")
                    try:
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            md5.update(chunk)
                            sha256.update(chunk)
                            size += len(chunk)
                    except http.client.IncompleteRead as exc:  # the server closed early: never a whole file
                        raise ChecksumError(f"short transfer: the connection closed after "
                                            f"{size + len(exc.partial)} bytes") from None
                    if announced is not None and announced.isdigit() and size != int(announced):
                        raise ChecksumError(f"short transfer: {size} of the {announced} bytes announced")
                digests = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
                problem = check_digests(spec, digests, size, recorded_sha256)
                if problem is None and not spec.verified:  # nothing published to hold it to: is it what it says?
                    problem = integrity_problem(tmp, spec.name)
                if problem:
                    raise ChecksumError(problem)
                os.replace(tmp, dest)
                log.info("downloaded %s from %s (%d bytes, sha256 %s)", spec.name, url, size, digests["sha256"])
                return digests
            except (OSError, urllib.error.URLError, http.client.HTTPException, ChecksumError) as exc:
                failures.append(f"round {round_ + 1} {url}: {type(exc).__name__}: {exc}")
                log.warning("download of %s failed (%s); trying the next mirror", spec.name, failures[-1])
            finally:
                tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {spec.name} ({len(failures)} attempts: " + "; ".join(failures)
        + f"). You can place the file by hand at {dest}; its checksum is still checked.")


# ----------------------------------------------------------------------------------------------- fetch
def ensure_files(source: str | Source, root: str | Path, *, force: bool = False, retries: int = 3,
                 backoff_s: float = 2.0, timeout_s: float = 60.0) -> dict[str, dict[str, str]]:
    """Make every raw file of `source` present and verified; return {file name: digests}. Pins nothing
    (`pin_checksums` does, once the source is extracted and prepared). `force`: files without a published
    checksum are downloaded again, whatever sha256 is pinned for them."""
    source = resolve_source(source)
    raw = raw_dir(root, source.name)
    recorded = _read_recorded(root, source.name)
    seen: dict[str, dict[str, str]] = {}
    for spec in source.files:
        dest = raw / spec.name
        pinned = None if force else recorded.get(spec.name)
        digests = None
        if dest.is_file() and not (force and not spec.verified):
            digests = file_digests(dest)
            problem = check_digests(spec, digests, dest.stat().st_size, pinned)
            if problem is None and not spec.verified and pinned is None:  # first seen (placed by hand)
                problem = integrity_problem(dest, spec.name)
            if problem:
                log.warning("%s: present but bad (%s); removed and downloaded again", dest, problem)
                dest.unlink()
                digests = None
        if digests is None:
            digests = download_file(spec, dest, recorded_sha256=pinned, retries=retries, backoff_s=backoff_s,
                                    timeout_s=timeout_s)
        seen[spec.name] = digests
    return seen


def pin_checksums(source: Source, root: str | Path, seen: dict[str, dict[str, str]]) -> None:
    """Record the sha256 of every file in checksums.json (trust on first use where none is published)."""
    recorded = _read_recorded(root, source.name)
    for spec in source.files:
        sha = seen[spec.name]["sha256"]
        if not spec.verified and recorded.get(spec.name) != sha:
            warnings.warn(
                f"{source.name}/{spec.name}: no published checksum exists; recorded the sha256 seen now "
                f"({sha}) in {source_dir(root, source.name) / 'checksums.json'}, after the source extracted and "
                "prepared from it. Later downloads must match it, but this first copy is trusted unchecked.",
                UnverifiedChecksumWarning, stacklevel=3)
        recorded[spec.name] = sha
    if source.files:
        atomic_write_json(source_dir(root, source.name) / "checksums.json", recorded)


def extract_all(source: str | Source, root: str | Path) -> dict[str, str]:
    """Unpack every archive of `source`; return {archive: digest of its extracted folder} for the marker."""
    source = resolve_source(source)
    digests = {}
    for spec in source.files:
        if spec.extract:
            target = safe_extract(raw_dir(root, source.name) / spec.name, extracted_dir(root, source.name) / spec.name)
            digests[spec.name] = tree_digest(target)
    return digests


def extracted_changed(source: Source, root: str | Path, marker: Path) -> list[str]:
    """The archives whose extracted folder no longer matches the digest its marker recorded."""
    recorded = json.loads(marker.read_text()).get("extracted", {})
    changed = []
    for name, digest in recorded.items():
        folder = extracted_dir(root, source.name) / name
        if not folder.is_dir() or tree_digest(folder) != digest:
            changed.append(name)
    return changed


def fetch(source: str | Source, root: str | Path = "data", *, force: bool = False, requirements: bool = True,
          retries: int = 3, backoff_s: float = 2.0, timeout_s: float = 60.0) -> Path:
    """Download, verify, extract and prepare one source; return its marker path. Idempotent.

    `requirements`: fetch the sources this one needs first (a tokenizer for GLUE and OpenWebText).
    `force`: re-check every file and redo extraction and preparation even if the marker exists; download again
    the files without a published checksum, replacing their pinned sha256.
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
        for stale in remove_stale(root, source.name):
            log.info("%s: removed %s, left by a fetch that was killed", source.name, stale)
        if marker.is_file() and not force:
            changed = extracted_changed(source, root, marker)
            if not changed:
                log.info("%s: already verified (%s)", source.name, marker)
                return marker
            log.warning("%s: the extracted %s no longer match the marker; extracting again",
                        source.name, ", ".join(changed))
            for name in changed:
                shutil.rmtree(extracted_dir(root, source.name) / name, ignore_errors=True)
        marker.unlink(missing_ok=True)
        if force:
            shutil.rmtree(extracted_dir(root, source.name), ignore_errors=True)
        recorded = _read_recorded(root, source.name)
        digests = ensure_files(source, root, force=force, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
        unpinned = [spec for spec in source.files if not spec.verified
                    and recorded.get(spec.name) != digests[spec.name]["sha256"]]
        try:
            extracted = extract_all(source, root)
            written = prepare(source, root, force=force or bool(unpinned)) if source.prepare else {}
        except (*ARCHIVE_ERRORS, UnicodeDecodeError, PreparedMismatchError) as exc:
            # a first-seen file the source does not extract, decode or prepare from is not trusted: removed, never
            # pinned. Anything else (a stop signal, a full disk, a bug in prepare) says nothing against the file:
            # it stays, unpinned, and the next fetch extracts it again instead of downloading it again.
            for spec in unpinned:
                (raw_dir(root, source.name) / spec.name).unlink(missing_ok=True)
                shutil.rmtree(extracted_dir(root, source.name) / spec.name, ignore_errors=True)
            if isinstance(exc, PreparedMismatchError):
                raise
            raise CorruptDataError(f"{source.name}: its files do not extract or decode "
                                   f"({type(exc).__name__}: {exc or 'ends early'})") from exc
        pin_checksums(source, root, digests)
        atomic_write_json(marker, {
            "source": source.name,
            "files": [{"name": spec.name, "sha256": digests[spec.name]["sha256"], "verified": spec.verified,
                       "checksum_source": spec.checksum_source or "recorded on first download"}
                      for spec in source.files],
            "extracted": extracted,
            "prepared": written,
        })
    return marker
