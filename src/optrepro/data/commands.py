"""`optrepro data fetch|verify-imagenet|list|fetch-published`: what workflow/rules/data.smk calls.

`add_commands(subparsers)` is called by optrepro.cli with the top-level subparsers.
"""
from __future__ import annotations

import argparse
import logging

from optrepro.data import sources
from optrepro.registry import unknown


def _check_source(name: str) -> sources.Source:
    if name not in sources.SOURCES:
        raise unknown("data source", name, sources.names())
    source = sources.get(name)
    if source.kind == "user_dir":
        raise ValueError(f"data source {name!r} is supplied by you, not downloaded: use "
                         f"`optrepro data verify-imagenet DIR --root ROOT`. Downloadable sources: "
                         f"{', '.join(sources.downloadable())}")
    return source


def _raise_interrupted(signum, frame):
    from optrepro.stopping import Interrupted

    raise Interrupted(f"signal {signum}: the download stopped; its partial file was removed, a rerun starts over")


def cmd_fetch(args: argparse.Namespace) -> int:
    """Errors are one line (optrepro.cli prints ValueErrors and Interrupted so); a SIGTERM stops the fetch
    through its clean-up, so no partial file is left."""
    import signal

    from optrepro.data.download import DownloadError, fetch

    source = _check_source(args.source)  # bad names fail before any download
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        marker = fetch(source, args.root, force=args.force, retries=args.retries, timeout_s=args.timeout)
    except DownloadError as exc:
        raise ValueError(f"{source.name}: {exc}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{source.name}: verified ({marker})")
    return 0


def cmd_verify_imagenet(args: argparse.Namespace) -> int:
    from optrepro.data.imagenet import verify_imagenet

    counts = verify_imagenet(args.directory, root=args.root)
    print(f"imagenet: {counts['train']} train and {counts['val']} val images in {args.directory}")
    return 0


def cmd_fetch_published(args: argparse.Namespace) -> int:
    from optrepro.data import published_raw

    paths = list(args.paths)
    if args.paths_from:
        with open(args.paths_from) as f:
            paths += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if not paths:
        raise ValueError("no results paths given (positional PATH... or --paths-from FILE)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written = published_raw.fetch_runs(paths, args.commit, cache=args.root, root=args.into, retries=args.retries)
    for path in written:
        print(f"updated {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = [sources.get(name) for name in sources.names()]
    for s in rows:
        checks = "published checksums" if s.verified else (
            "user directory" if s.kind == "user_dir" else "no published checksum for "
            + ", ".join(f.name for f in s.files if not f.verified) + " (recorded on first download)")
        print(f"{s.name}: {s.description}\n    licence: {s.licence}\n    checksums: {checks}"
              f"\n    papers: {', '.join(s.papers)}" + (f"\n    arrays: {s.keys}" if args.verbose else ""))
    return 0


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="download, verify and prepare datasets and weights")
    sub = data.add_subparsers(dest="data_command", required=True)

    fetch = sub.add_parser("fetch", help="download, verify, extract and prepare one source (idempotent)")
    fetch.add_argument("source", help=f"one of: {', '.join(sources.downloadable())}")
    fetch.add_argument("--root", default="data", help="data directory (config data_dir; default: data)")
    fetch.add_argument("--force", action="store_true", help="re-verify files and redo extraction and prepare")
    fetch.add_argument("--retries", type=int, default=3, help="rounds over all mirrors (default 3)")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds per network read (default 60)")
    fetch.set_defaults(func=cmd_fetch)

    imagenet = sub.add_parser("verify-imagenet", help="check a user-supplied ImageNet directory (imagenet_dir)")
    imagenet.add_argument("directory", nargs="?", default=None,
                          help="the directory of config key imagenet_dir (train/ and val/ inside)")
    imagenet.add_argument("--root", default=None,
                          help="data directory: also write the file index and data/imagenet/.verified")
    imagenet.set_defaults(func=cmd_verify_imagenet)

    raw = sub.add_parser("fetch-published", help="add published per-run results (Crowded Valley) to "
                         "paper/published/raw, downloaded from the results repository at a commit and verified")
    raw.add_argument("commit", help="40-hex commit of SirRob1997/Crowded-Valley---Results the files are read at")
    raw.add_argument("paths", nargs="*", metavar="PATH",
                     help="results_main/<budget>/<schedule>/<problem>/<optimizer>/<setting>/random_seed__*.json")
    raw.add_argument("--paths-from", default=None, help="a file with one such path per line")
    raw.add_argument("--root", default="data", help="download cache (default: data)")
    raw.add_argument("--into", default=None, help="raw-results directory (default: paper/published/raw)")
    raw.add_argument("--retries", type=int, default=3, help="rounds over the URL (default 3)")
    raw.set_defaults(func=cmd_fetch_published)

    lst = sub.add_parser("list", help="list data sources with licence and checksum status")
    lst.add_argument("-v", "--verbose", action="store_true", help="also print the arrays each source provides")
    lst.set_defaults(func=cmd_list)

