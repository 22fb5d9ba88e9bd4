"""Datasets and pretrained weights: a registry of sources, verified downloads, arrays decoded once.

    from optrepro import data
    data.fetch("cifar10", root="data")     # download + verify + extract + prepare (idempotent)
    arrays = data.load_arrays("cifar10")   # {"x_train": uint8 [50000,32,32,3], "y_train": int64, ...}
    data.weights_dir("bert_base_uncased")  # a directory for from_pretrained(), offline
    data.verify_imagenet("/datasets/imagenet", root="data")

Training never downloads: load_arrays/weights_dir only read what `optrepro data fetch` verified.
Importing this package does not import torch.
"""
from optrepro.data.arrays import (PreparedMismatchError, decode_image, default_root, load_arrays, prepare,
                                  weights_dir, weights_file)
from optrepro.data.download import ChecksumError, DownloadError, UnverifiedChecksumWarning, fetch
from optrepro.data.layout import UnsafeArchiveError, is_verified, marker_path, safe_extract
from optrepro.data.imagenet import ImageNetNotFoundError, verify_imagenet
from optrepro.data.sources import SOURCES, RemoteFile, Source, downloadable, get, names

__all__ = [
    "SOURCES", "RemoteFile", "Source", "get", "names", "downloadable",
    "fetch", "prepare", "load_arrays", "weights_dir", "weights_file", "decode_image", "default_root",
    "verify_imagenet", "is_verified", "marker_path", "safe_extract",
    "DownloadError", "ChecksumError", "UnsafeArchiveError", "UnverifiedChecksumWarning", "PreparedMismatchError",
    "ImageNetNotFoundError",
]
