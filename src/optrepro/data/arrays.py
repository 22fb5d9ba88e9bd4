"""Decode raw files once into numpy arrays under data/<source>/prepared/, and load them back.

    prepare("cifar10", "data")            -> {"x_train": {"shape": [...], "dtype": "uint8"}, ...}
    load_arrays("cifar10")                -> {"x_train": ndarray uint8 [50000,32,32,3], "y_train": ..., ...}

Each key is one `<key>.npy` file (no pickles); `manifest.json` lists shapes and dtypes. The directory is
written under a temporary name and renamed when complete. What each source's keys mean is in its registry
entry (`optrepro data list` prints it, docs/data.md lists it). Images are uint8 NHWC, labels int64, text
token ids in the smallest unsigned type that holds the vocabulary.
"""
from __future__ import annotations

import collections
import csv
import gzip
import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from optrepro.data.layout import (extracted_dir, file_digests, marker_path, prepared_dir, raw_dir, resolve_source,
                                  safe_extract, source_dir)
from optrepro.data.sources import Source
from optrepro.io import atomic_write_json
from optrepro.registry import import_target

DATA_ENV = "OPTREPRO_DATA"


def default_root() -> Path:
    """The data root: $OPTREPRO_DATA (the DAG sets it from config `data_dir`), else `data`."""
    return Path(os.environ.get(DATA_ENV, "data"))


class PreparedMismatchError(ValueError):
    """Prepared arrays do not have the lengths the publisher documents: a wrong or changed download."""


class ArrayWriter:
    """Writes one .npy per key into a directory and remembers shapes and dtypes for the manifest."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.entries: dict[str, dict] = {}

    def save(self, key: str, array) -> None:
        array = np.ascontiguousarray(array)
        if array.dtype == object:
            raise TypeError(f"{key}: object arrays would need pickle; store numbers or fixed-width strings")
        np.save(self.directory / f"{key}.npy", array, allow_pickle=False)
        self.entries[key] = {"shape": list(array.shape), "dtype": array.dtype.str}

    def stream(self, key: str, dtype) -> "StreamedArray":
        return StreamedArray(self, key, np.dtype(dtype))


class StreamedArray:
    """A 1-D .npy written piece by piece, for token streams too large for memory.

    The header is written for a 15-digit length first and rewritten with the real length at the end (the
    .npy header is padded to a fixed block, so both have the same size).
    """

    PLACEHOLDER = 10**15 - 1

    def __init__(self, writer: ArrayWriter, key: str, dtype: np.dtype):
        self.writer, self.key, self.dtype, self.length = writer, key, dtype, 0
        self.path = writer.directory / f"{key}.npy"
        self.file = open(self.path, "wb")
        self.header_size = self._write_header(self.PLACEHOLDER)

    def _write_header(self, length: int) -> int:
        start = self.file.tell()
        np.lib.format.write_array_header_1_0(
            self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (length,)})
        return self.file.tell() - start

    def append(self, values) -> None:
        values = np.asarray(values, dtype=self.dtype)
        self.file.write(values.tobytes())
        self.length += values.size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.seek(0)
        if self._write_header(self.length) != self.header_size:
            raise RuntimeError("npy header size changed; cannot patch the length in place")
        self.file.close()
        self.writer.entries[self.key] = {"shape": [self.length], "dtype": self.dtype.str}


# ----------------------------------------------------------------------------------------------- driver
def prepare(source: str | Source, root: str | Path | None = None, *, force: bool = False) -> dict[str, dict]:
    """Run the source's prepare step into data/<source>/prepared/ and return the manifest {key: shape, dtype}."""
    source = resolve_source(source)
    root = Path(root) if root is not None else default_root()
    if source.prepare is None:
        return {}
    target = prepared_dir(root, source.name)
    manifest_file = target / "manifest.json"
    if manifest_file.is_file() and not force:
        return json.loads(manifest_file.read_text())
    tmp = Path(tempfile.mkdtemp(dir=source_dir(root, source.name), prefix=".prepared.", suffix=".tmp"))
    try:
        writer = ArrayWriter(tmp)
        import_target(source.prepare)(source, root, writer)
        check_lengths(source, writer.entries)
        atomic_write_json(tmp / "manifest.json", writer.entries)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return writer.entries


def check_lengths(source: Source, entries: dict[str, dict]) -> None:
    for key, expected in source.expect_lengths.items():
        if key not in entries:
            raise PreparedMismatchError(f"{source.name}: prepare wrote no {key!r}; wrote {', '.join(sorted(entries))}")
        got = entries[key]["shape"][0]
        if got != expected:
            raise PreparedMismatchError(
                f"{source.name}: {key} has {got} entries where the publisher's data has {expected}; the download "
                f"differs from the one the papers used (delete data/{source.name} and fetch again, or report it)")


def load_arrays(source: str | Source, root: str | Path | None = None, *, mmap: bool | None = None) -> dict[str, np.ndarray]:
    """The prepared arrays of a fetched source, by key (see the source's `keys`). Never downloads.

    `mmap`: read-only memory maps instead of arrays in memory; default: only for large sources (OpenWebText).
    ImageNet returns its file index (paths and labels), built by `verify_imagenet(dir, root=...)`.
    """
    source = resolve_source(source)
    root = Path(root) if root is not None else default_root()
    if source.kind == "weights":
        raise ValueError(f"{source.name} holds files, not arrays: use optrepro.data.weights_dir({source.name!r})")
    if not marker_path(root, source.name).is_file():
        how = ("run `optrepro data verify-imagenet DIR --root ROOT` (config key imagenet_dir)"
               if source.kind == "user_dir" else f"run `optrepro data fetch {source.name} --root {root}`")
        raise FileNotFoundError(f"data source {source.name} is not prepared under {root}: {how}")
    directory = prepared_dir(root, source.name)
    manifest = json.loads((directory / "manifest.json").read_text())
    mode = "r" if (source.large if mmap is None else mmap) else None
    return {key: np.load(directory / f"{key}.npy", mmap_mode=mode, allow_pickle=False) for key in manifest}


def weights_dir(source: str | Source, root: str | Path | None = None) -> Path:
    """The directory holding a weights source's files (for from_pretrained(dir)); it must be fetched."""
    source = resolve_source(source)
    root = Path(root) if root is not None else default_root()
    if not marker_path(root, source.name).is_file():
        raise FileNotFoundError(f"{source.name} is not fetched under {root}: run "
                                f"`optrepro data fetch {source.name} --root {root}`")
    return raw_dir(root, source.name)


def weights_file(source: str | Source, root: str | Path | None = None) -> Path:
    """The single file of a one-file weights source (EfficientNetV2-S)."""
    source = resolve_source(source)
    if len(source.files) != 1:
        raise ValueError(f"{source.name} has {len(source.files)} files; use weights_dir()")
    return weights_dir(source, root) / source.files[0].name


def decode_image(arrays: dict[str, np.ndarray], split: str, index: int) -> np.ndarray:
    """Image `index` of an encoded-image source's split as uint8 HWC RGB (Flowers102, Cars, Caltech101)."""
    from PIL import Image

    offsets = arrays[f"offsets_{split}"]
    data = arrays[f"jpeg_{split}"][offsets[index]:offsets[index + 1]]
    with Image.open(io.BytesIO(data.tobytes())) as image:
        return np.asarray(image.convert("RGB"))


# ----------------------------------------------------------------------------------------------- images
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not: magic 0 0 <type> <ndim>, big-endian int32 dims, data."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for dims {dims.tolist()}")
    return body.reshape(dims.tolist())


def prepare_idx(source: Source, root: Path, out: ArrayWriter) -> None:
    raw = raw_dir(root, source.name)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise ValueError(f"{source.name} {split}: {len(images)} images but {len(labels)} labels")
        out.save(f"x_{split}", images[..., None])
        out.save(f"y_{split}", labels.astype(np.int64))


def _unpickle(path: Path) -> dict:
    # The CIFAR batches are pickles; they are read only after their archive's checksum matched.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_images(batch: dict) -> np.ndarray:
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def prepare_cifar10(source: Source, root: Path, out: ArrayWriter) -> None:
    base = extracted_dir(root, source.name) / source.files[0].name / "cifar-10-batches-py"
    train = [_unpickle(base / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(base / "test_batch")
    out.save("x_train", np.concatenate([_cifar_images(b) for b in train]))
    out.save("y_train", np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in train]))
    out.save("x_test", _cifar_images(test))
    out.save("y_test", np.asarray(test["labels"], dtype=np.int64))


def prepare_cifar100(source: Source, root: Path, out: ArrayWriter) -> None:
    base = extracted_dir(root, source.name) / source.files[0].name / "cifar-100-python"
    for split in ("train", "test"):
        batch = _unpickle(base / split)
        out.save(f"x_{split}", _cifar_images(batch))
        out.save(f"y_{split}", np.asarray(batch["fine_labels"], dtype=np.int64))
        out.save(f"y_coarse_{split}", np.asarray(batch["coarse_labels"], dtype=np.int64))


def prepare_svhn(source: Source, root: Path, out: ArrayWriter) -> None:
    from scipy.io import loadmat

    for split in ("train", "test"):
        mat = loadmat(raw_dir(root, source.name) / f"{split}_32x32.mat")
        out.save(f"x_{split}", np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))  # HWCN -> NHWC
        out.save(f"y_{split}", (np.asarray(mat["y"]).reshape(-1) % 10).astype(np.int64))  # label 10 is digit 0


def prepare_california_housing(source: Source, root: Path, out: ArrayWriter) -> None:
    raw = raw_dir(root, source.name)
    with np.load(raw / "california_housing.npz", allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    # keras.datasets.california_housing.load_data(version="large", test_split=0.2, seed=113), step by step.
    indices = np.arange(len(x))
    np.random.RandomState(113).shuffle(indices)
    x, y = x[indices], y[indices]
    n_train = int(len(x) * (1 - 0.2))
    out.save("x_train", x[:n_train])
    out.save("y_train", y[:n_train])
    out.save("x_test", x[n_train:])
    out.save("y_test", y[n_train:])
    with tarfile.open(raw / "cal_housing.tgz") as tar:  # read in memory: nothing is written from the archive
        member = tar.extractfile("CaliforniaHousing/cal_housing.data")
        table = np.loadtxt(member, delimiter=",", dtype=np.float64, ndmin=2)
    out.save("statlib_x", table[:, :8])
    out.save("statlib_y", table[:, 8])


# ----------------------------------------------------------------------------------------------- text
def delete_line_ranges(data: bytes, ranges: Iterable[tuple[int, int]]) -> bytes:
    """`sed -i 'a,bd'` applied in turn: delete 1-based inclusive line ranges, lines split at b'\\n' only."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines = [line + b"\n" for line in lines[:-1]]
    else:  # the last line has no newline; sed keeps it so
        lines = [line + b"\n" for line in lines[:-1]] + [lines[-1]]
    for first, last in ranges:
        del lines[first - 1:last]
    return b"".join(lines)


def prepare_tolstoi(source: Source, root: Path, out: ArrayWriter) -> None:
    """DeepOBS's War and Peace: trim with its sed line ranges, char vocabulary by frequency, 80/20 split.

    DeepOBS reads with codecs.open (binary mode: '\\r' is kept, no newline translation), so the bytes are
    decoded as they are. Characters are ranked by descending count; Counter keeps first-occurrence order
    and sorted() is stable, so ties go to the character seen first (our reading of Python >= 3.7 behaviour).
    """
    data = (raw_dir(root, source.name) / source.files[0].name).read_bytes()
    text = delete_line_ranges(data, source.extra["delete_line_ranges"]).decode("utf-8")
    counts = sorted(collections.Counter(text).items(), key=lambda item: -item[1])
    chars = [char for char, _ in counts]
    ids = {char: i for i, char in enumerate(chars)}
    if len(chars) > 256:
        raise ValueError(f"tolstoi: {len(chars)} distinct characters do not fit uint8")
    tokens = np.fromiter((ids[c] for c in text), dtype=np.uint8, count=len(text))
    train_size = int(np.ceil((1.0 - source.extra["test_size"]) * np.size(tokens)))  # DeepOBS's expression
    out.save("tokens_train", tokens[:train_size])
    out.save("tokens_test", tokens[train_size:])
    out.save("vocab_codepoints", np.array([ord(c) for c in chars], dtype=np.int32))


GLUE_LABELS = {
    "qnli": {"entailment": 0, "not_entailment": 1},
    "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2},
}


def _read_tsv(path: Path) -> list[dict[str, str]]:
    # As HF datasets' glue.py: tab-separated, no quoting (sentences contain quote characters).
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def glue_examples(source: Source, root: Path) -> dict[str, tuple[list, list[int]]]:
    """{split: (texts, labels)} with texts a list of str or (str, str) pairs, as GLUE/TFDS define the splits."""
    task = source.extra["task"]
    base = extracted_dir(root, source.name)
    if task == "sst2":
        d = base / "SST-2.zip" / "SST-2"
        return {split: ([r["sentence"] for r in rows], [int(r["label"]) for r in rows])
                for split, rows in (("train", _read_tsv(d / "train.tsv")), ("validation", _read_tsv(d / "dev.tsv")))}
    if task == "qnli":
        d = base / "QNLIv2.zip" / "QNLI"
        return {split: ([(r["question"], r["sentence"]) for r in rows], [GLUE_LABELS["qnli"][r["label"]] for r in rows])
                for split, rows in (("train", _read_tsv(d / "train.tsv")), ("validation", _read_tsv(d / "dev.tsv")))}
    if task == "mnli":
        d = base / "MNLI.zip" / "MNLI"
        splits = (("train", "train.tsv"), ("validation_matched", "dev_matched.tsv"),
                  ("validation_mismatched", "dev_mismatched.tsv"))
        out = {}
        for split, name in splits:
            rows = _read_tsv(d / name)
            out[split] = ([(r["sentence1"], r["sentence2"]) for r in rows],
                          [GLUE_LABELS["mnli"][r["gold_label"]] for r in rows])
        return out
    if task == "mrpc":
        raw = raw_dir(root, source.name)
        with open(raw / "mrpc_dev_ids.tsv", encoding="utf-8-sig", newline="") as f:
            dev_ids = {tuple(row[:2]) for row in csv.reader(f, delimiter="\t") if row}
        train_rows = _read_tsv(raw / "msr_paraphrase_train.txt")
        test_rows = _read_tsv(raw / "msr_paraphrase_test.txt")

        def pack(rows):
            return [(r["#1 String"], r["#2 String"]) for r in rows], [int(r["Quality"]) for r in rows]

        in_dev = [(r["#1 ID"], r["#2 ID"]) in dev_ids for r in train_rows]
        return {"train": pack([r for r, d in zip(train_rows, in_dev) if not d]),
                "validation": pack([r for r, d in zip(train_rows, in_dev) if d]),
                "test": pack(test_rows)}
    raise ValueError(f"unknown GLUE task {task!r}; valid: sst2, qnli, mnli, mrpc")


def prepare_glue(source: Source, root: Path, out: ArrayWriter) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(raw_dir(root, "bert_base_uncased") / "tokenizer.json"))
    max_length = source.extra["max_length"]
    tokenizer.enable_truncation(max_length=max_length)  # longest_first, as transformers' truncation=True
    tokenizer.no_padding()
    if tokenizer.get_vocab_size() > np.iinfo(np.uint16).max:
        raise ValueError("vocabulary too large for uint16 token ids")
    for split, (texts, labels) in glue_examples(source, root).items():
        encodings = tokenizer.encode_batch(texts)
        input_ids = np.zeros((len(texts), max_length), dtype=np.uint16)
        type_ids = np.zeros((len(texts), max_length), dtype=np.uint8)
        lengths = np.zeros(len(texts), dtype=np.int16)
        for i, enc in enumerate(encodings):
            n = len(enc.ids)
            input_ids[i, :n] = enc.ids
            type_ids[i, :n] = enc.type_ids
            lengths[i] = n
        out.save(f"input_ids_{split}", input_ids)
        out.save(f"token_type_ids_{split}", type_ids)
        out.save(f"length_{split}", lengths)
        out.save(f"y_{split}", np.asarray(labels, dtype=np.int64))


def openwebtext_documents(archive: Path) -> Iterable[str]:
    """Documents of the OpenWebText release: a tar.xz of .xz subsets, each a tar of .txt files.

    Read in archive order without unpacking anything to disk; each document is its text stripped, as HF
    datasets' openwebtext.py yields it.
    """
    with tarfile.open(archive, mode="r|*") as outer:
        for member in outer:
            if not member.isfile() or not member.name.endswith(".xz"):
                continue
            subset = outer.extractfile(member).read()
            with tarfile.open(fileobj=io.BytesIO(subset), mode="r:xz") as inner:
                for doc in inner:
                    if doc.isfile() and doc.name.endswith(".txt"):
                        yield inner.extractfile(doc).read().decode("utf-8").strip()


def prepare_openwebtext(source: Source, root: Path, out: ArrayWriter, *, val_fraction: float = 0.0005,
                        seed: int = 2357, batch_docs: int = 1024) -> None:
    from tokenizers import ByteLevelBPETokenizer

    tokenizer_dir = raw_dir(root, "gpt2_tokenizer")
    tokenizer = ByteLevelBPETokenizer(str(tokenizer_dir / "encoder.json"), str(tokenizer_dir / "vocab.bpe"),
                                      add_prefix_space=False, trim_offsets=False)
    eot = tokenizer.token_to_id("<|endoftext|>")
    if eot is None:
        raise ValueError("gpt2 vocabulary has no <|endoftext|> token")
    rng = np.random.default_rng(seed)
    archive = raw_dir(root, source.name) / source.files[0].name
    with out.stream("train", np.uint16) as train, out.stream("val", np.uint16) as val:
        batch: list[str] = []

        def flush():
            to_val = rng.random(len(batch)) < val_fraction
            for enc, is_val in zip(tokenizer.encode_batch(batch), to_val):
                (val if is_val else train).append(enc.ids + [eot])  # nanoGPT: EOT after every document
            batch.clear()

        for document in openwebtext_documents(archive):
            batch.append(document)
            if len(batch) == batch_docs:
                flush()
        if batch:
            flush()


# ----------------------------------------------------------------------------------------------- encoded images
def _encode_split(out: ArrayWriter, split: str, files: list[Path], labels) -> None:
    sizes = [f.stat().st_size for f in files]
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    blob = np.empty(int(offsets[-1]), dtype=np.uint8)
    for f, start, end in zip(files, offsets[:-1], offsets[1:]):
        blob[start:end] = np.frombuffer(f.read_bytes(), dtype=np.uint8)
    out.save(f"jpeg_{split}", blob)
    out.save(f"offsets_{split}", offsets)
    out.save(f"y_{split}", np.asarray(labels, dtype=np.int64))


def prepare_flowers102(source: Source, root: Path, out: ArrayWriter) -> None:
    from scipy.io import loadmat

    raw = raw_dir(root, source.name)
    images = extracted_dir(root, source.name) / "102flowers.tgz" / "jpg"
    labels = loadmat(raw / "imagelabels.mat", squeeze_me=True)["labels"].astype(np.int64) - 1
    set_ids = loadmat(raw / "setid.mat", squeeze_me=True)
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = np.atleast_1d(set_ids[key]).astype(np.int64)
        _encode_split(out, split, [images / f"image_{i:05d}.jpg" for i in ids], labels[ids - 1])
    out.save("classes", np.array([str(i) for i in range(1, int(labels.max()) + 2)]))


def prepare_stanford_cars(source: Source, root: Path, out: ArrayWriter) -> None:
    from scipy.io import loadmat

    ext = extracted_dir(root, source.name)
    devkit = ext / "car_devkit.tgz" / "devkit"
    annotations = {
        "train": (loadmat(devkit / "cars_train_annos.mat", squeeze_me=True)["annotations"],
                  ext / "cars_train.tgz" / "cars_train"),
        "test": (loadmat(raw_dir(root, source.name) / "cars_test_annos_withlabels.mat", squeeze_me=True)["annotations"],
                 ext / "cars_test.tgz" / "cars_test"),
    }
    for split, (annos, folder) in annotations.items():
        annos = np.atleast_1d(annos)
        _encode_split(out, split, [folder / str(a["fname"]) for a in annos], [int(a["class"]) - 1 for a in annos])
    names = loadmat(devkit / "cars_meta.mat", squeeze_me=True)["class_names"]
    out.save("classes", np.array([str(n) for n in np.atleast_1d(names)]))


def prepare_caltech101(source: Source, root: Path, out: ArrayWriter) -> None:
    ext = extracted_dir(root, source.name)
    inner = ext / source.files[0].name / source.extra["inner_archive"]
    seen = file_digests(inner)["md5"]
    if seen != source.extra["inner_md5"]:
        raise PreparedMismatchError(f"caltech101: {inner.name} md5 {seen} does not match torchvision's "
                                    f"{source.extra['inner_md5']}")
    categories_root = safe_extract(inner, ext / inner.name) / "101_ObjectCategories"
    classes = sorted(d.name for d in categories_root.iterdir() if d.is_dir() and d.name != "BACKGROUND_Google")
    files, labels = [], []
    for label, name in enumerate(classes):
        images = sorted(p for p in (categories_root / name).iterdir() if p.suffix.lower() == ".jpg")
        files += images
        labels += [label] * len(images)
    _encode_split(out, "all", files, labels)
    out.save("classes", np.array(classes))


def prepare_tiny_imagenet(source: Source, root: Path, out: ArrayWriter) -> None:
    from PIL import Image

    base = extracted_dir(root, source.name) / source.files[0].name / "tiny-imagenet-200"
    classes = sorted((base / "wnids.txt").read_text().split())
    label_of = {wnid: i for i, wnid in enumerate(classes)}

    def decode(paths: list[Path]) -> np.ndarray:
        images = np.empty((len(paths), 64, 64, 3), dtype=np.uint8)
        for i, path in enumerate(paths):
            with Image.open(path) as image:
                images[i] = np.asarray(image.convert("RGB"))  # a few train images are greyscale
        return images

    train = [(p, label_of[wnid]) for wnid in classes
             for p in sorted((base / "train" / wnid / "images").iterdir()) if p.suffix == ".JPEG"]
    val_rows = [line.split("\t") for line in (base / "val" / "val_annotations.txt").read_text().splitlines() if line]
    val = [(base / "val" / "images" / row[0], label_of[row[1]]) for row in sorted(val_rows)]
    for split, items in (("train", train), ("val", val)):
        out.save(f"x_{split}", decode([p for p, _ in items]))
        out.save(f"y_{split}", np.array([label for _, label in items], dtype=np.int64))
    out.save("classes", np.array(classes))
