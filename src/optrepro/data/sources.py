"""Where every dataset and pretrained weight file comes from: URLs with mirrors, checksums, licences.

Torch-free and import-light: the Snakefile reads this registry to name one job per source.

A checksum is only ever a value published by someone else, with `checksum_source` saying where it was
read. Where none could be found the file has `checksum=None`: the first download records the sha256 it saw
in data/<source>/checksums.json with a warning, and later downloads must match that record
(trust on first use). `verified` says whether a published checksum exists.

Files go to data/<source>/raw/<name>; archives marked `extract` are unpacked (safely) into
data/<source>/extracted/; `prepare` (a "module:function") decodes them once into data/<source>/prepared/.
A raw file that is already present and matches its checksum is never downloaded again, so a file that
cannot be downloaded any more (Stanford Cars) can be placed there by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optrepro.registry import Registry

CHECKSUM_ALGORITHMS = ("md5", "sha256")
KINDS = ("arrays", "weights", "user_dir")


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name under data/<source>/raw/
    urls: tuple[str, ...]  # tried in this order; the first is the publisher's where it still works
    checksum: str | None  # a published digest (hex), or None where none was found
    algorithm: str = "sha256"  # "md5" or "sha256"
    checksum_source: str = ""  # where the published value was read
    prefix: bool = False  # checksum is a published *prefix* of the sha256 (torch hub file-name convention)
    size: int | None = None  # published size in bytes, checked where known
    extract: bool = False  # unpack this archive into data/<source>/extracted/

    def __post_init__(self):
        if self.algorithm not in CHECKSUM_ALGORITHMS:
            raise ValueError(f"file {self.name!r}: unknown checksum algorithm {self.algorithm!r}; "
                             f"valid: {', '.join(CHECKSUM_ALGORITHMS)}")
        if self.checksum is not None and not self.checksum_source:
            raise ValueError(f"file {self.name!r}: a checksum needs the source it was taken from")
        if not self.urls:
            raise ValueError(f"file {self.name!r}: no URL")

    @property
    def verified(self) -> bool:
        """True when a published checksum exists for this file (False: trust on first use)."""
        return self.checksum is not None


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    licence: str
    files: tuple[RemoteFile, ...]
    prepare: str | None  # "module:function" called as f(source, root) -> dict of arrays written; None: no step
    keys: str = ""  # what load_arrays returns (documentation)
    papers: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # sources that must be fetched first (e.g. a tokenizer)
    kind: str = "arrays"  # "arrays" | "weights" (files used as they are) | "user_dir" (ImageNet)
    large: bool = False  # load_arrays returns read-only memory maps instead of in-memory arrays
    # Expected length of prepared arrays (key -> len): a wrong or changed download fails after prepare.
    expect_lengths: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # parameters of the prepare step
    notes: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"source {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")

    @property
    def verified(self) -> bool:
        """True when the source has files and every one has a published checksum."""
        return bool(self.files) and all(f.verified for f in self.files)


SOURCES: Registry[Source] = Registry("data source")


def register(source: Source) -> Source:
    for dep in source.requires:
        SOURCES.get(dep)  # dependencies are registered first; an unknown one fails here
    return SOURCES.add(source.name, source)


def get(name: str) -> Source:
    return SOURCES.get(name)


def names() -> list[str]:
    return SOURCES.names()


def downloadable() -> list[str]:
    """Sources that `optrepro data fetch` can download (everything except user-supplied ImageNet)."""
    return [n for n in SOURCES.names() if SOURCES.get(n).kind != "user_dir"]


# --------------------------------------------------------------------------------------------------
# Checksum sources, cited once.
TV = "torchvision torchvision/datasets/{}.py (github.com/pytorch/vision)"
TV_CARS = ("torchvision StanfordCars download() before the publisher's URLs broke (torchvision <= 0.15, "
           "torchvision/datasets/stanford_cars.py)")
HF_GLUE = "Hugging Face datasets, datasets/glue/dataset_infos.json download_checksums (github.com/huggingface/datasets)"
TIKTOKEN = "tiktoken tiktoken_ext/openai_public.py gpt2() vocab_bpe_hash / encoder_json_hash"

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IMAGE_KEYS = ("x_train uint8 [N,H,W,C], y_train int64 [N], x_test uint8 [M,H,W,C], y_test int64 [M]; "
              "images NHWC in the publisher's order, no validation split carved (the problem does that)")
ENCODED_KEYS = ("for split in {splits}: jpeg_<split> uint8 [total bytes] (the publisher's encoded JPEG files "
                "concatenated), offsets_<split> int64 [N+1] (image i is jpeg[offsets[i]:offsets[i+1]]), "
                "y_<split> int64 [N]; classes <U [K]. Images differ in size, so they stay encoded; "
                "optrepro.data.decode_image(arrays, split, i) gives a uint8 HWC RGB array")

register(Source(
    name="mnist",
    description="MNIST handwritten digits, 60k train / 10k test, 28x28 grey",
    licence="CC BY-SA 3.0 (Y. LeCun and C. Cortes, as stated on the MNIST page and by torchvision/TFDS)",
    files=tuple(RemoteFile(
        name=f,
        urls=(f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}", f"http://yann.lecun.com/exdb/mnist/{f}"),
        checksum=md5, algorithm="md5", checksum_source=TV.format("mnist"),
    ) for f, md5 in zip(MNIST_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                      "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
    prepare="optrepro.data.arrays:prepare_idx",
    keys=IMAGE_KEYS + " (C=1)",
    expect_lengths={"x_train": 60000, "y_train": 60000, "x_test": 10000, "y_test": 10000},
    papers=("crowded_valley",),
    notes="yann.lecun.com answers 403/503 often (DeepOBS's URL), so torchvision's S3 mirror is tried first.",
))

register(Source(
    name="fashion_mnist",
    description="Fashion-MNIST (Zalando), 60k train / 10k test, 28x28 grey",
    licence="MIT (github.com/zalandoresearch/fashion-mnist LICENSE)",
    files=tuple(RemoteFile(
        name=f,
        urls=(f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}",
              f"https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/{f}"),
        checksum=md5, algorithm="md5", checksum_source=TV.format("mnist") + " class FashionMNIST",
    ) for f, md5 in zip(MNIST_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
    prepare="optrepro.data.arrays:prepare_idx",
    keys=IMAGE_KEYS + " (C=1)",
    expect_lengths={"x_train": 60000, "y_train": 60000, "x_test": 10000, "y_test": 10000},
    papers=("crowded_valley", "caadam"),
))

register(Source(
    name="cifar10",
    description="CIFAR-10 (python pickle version), 50k train / 10k test, 32x32 RGB",
    licence="no licence stated by the authors (A. Krizhevsky, 2009); cite the tech report",
    files=(RemoteFile(
        name="cifar-10-python.tar.gz",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        checksum="c58f30108f718f92721af3b95e74349a", algorithm="md5", checksum_source=TV.format("cifar"),
        extract=True,
    ),),
    prepare="optrepro.data.arrays:prepare_cifar10",
    keys=IMAGE_KEYS + " (C=3)",
    expect_lengths={"x_train": 50000, "y_train": 50000, "x_test": 10000, "y_test": 10000},
    papers=("crowded_valley", "caadam", "alsals", "nos"),
    notes="DeepOBS read the binary version of the same images; the python version holds the same pixels "
          "and labels in the same order.",
))

register(Source(
    name="cifar100",
    description="CIFAR-100 (python pickle version), 50k train / 10k test, 32x32 RGB, 100 fine / 20 coarse labels",
    licence="no licence stated by the authors (A. Krizhevsky, 2009); cite the tech report",
    files=(RemoteFile(
        name="cifar-100-python.tar.gz",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        checksum="eb9058c3a382ffc7106e4002c42a8d85", algorithm="md5",
        checksum_source=TV.format("cifar") + " class CIFAR100", extract=True,
    ),),
    prepare="optrepro.data.arrays:prepare_cifar100",
    keys=IMAGE_KEYS + " (C=3; y = fine labels); y_coarse_train, y_coarse_test int64",
    expect_lengths={"x_train": 50000, "y_train": 50000, "x_test": 10000, "y_test": 10000},
    papers=("crowded_valley", "caadam", "alsals", "nos"),
))

register(Source(
    name="svhn",
    description="SVHN cropped digits, train_32x32 (73,257) and test_32x32 (26,032); 'extra' not used (as DeepOBS)",
    licence="non-commercial use only (SVHN page, ufldl.stanford.edu/housenumbers)",
    files=tuple(RemoteFile(
        name=f"{split}_32x32.mat",
        urls=(f"http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat",),
        checksum=md5, algorithm="md5", checksum_source=TV.format("svhn"),
    ) for split, md5 in (("train", "e26dedcc434d2e4c54c9b2d4a06d8373"), ("test", "eb5a983be6a315427106f1b164d9cef3"))),
    prepare="optrepro.data.arrays:prepare_svhn",
    keys=IMAGE_KEYS + " (C=3; label 10 of the .mat files is digit 0, stored as 0)",
    expect_lengths={"x_train": 73257, "y_train": 73257, "x_test": 26032, "y_test": 26032},
    papers=("crowded_valley",),
))

register(Source(
    name="california_housing",
    description="California Housing (1990 census, 20,640 block groups, 8 features): the Keras copy CaAdam used, "
                "and the StatLib archive scikit-learn uses",
    licence="public domain census data (StatLib; Pace and Barry 1997)",
    files=(
        RemoteFile(
            name="california_housing.npz",
            urls=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/california_housing.npz",),
            checksum="1a2e3a52e0398de6463aebe6f4a8da34fb21fbb6b934cf88c3425e766f2a1a6f",
            checksum_source="keras keras/src/datasets/california_housing.py load_data() file_hash",
        ),
        RemoteFile(
            name="cal_housing.tgz",
            urls=("https://ndownloader.figshare.com/files/5976036",
                  "https://www.dcc.fc.up.pt/~ltorgo/Regression/cal_housing.tgz"),
            checksum="aaa5c9a6afe2225cc2aed2723682ae403280c4a3695a2ddda4ffb5d8215ea681",
            checksum_source="scikit-learn sklearn/datasets/_california_housing.py ARCHIVE",
        ),
    ),
    prepare="optrepro.data.arrays:prepare_california_housing",
    keys="x_train float [16512,8], y_train [16512], x_test [4128,8], y_test [4128]: keras.datasets."
         "california_housing.load_data(version='large', test_split=0.2, seed=113) exactly, raw units; "
         "statlib_x float64 [20640,8], statlib_y [20640]: cal_housing.data in file order, the 8 raw columns "
         "(longitude, latitude, housingMedianAge, totalRooms, totalBedrooms, population, households, "
         "medianIncome) and medianHouseValue",
    expect_lengths={"x_train": 16512, "y_train": 16512, "x_test": 4128, "y_test": 4128, "statlib_x": 20640},
    papers=("caadam",),
))

register(Source(
    name="tolstoi",
    description="Tolstoy's War and Peace (English), char-level, prepared exactly as DeepOBS's "
                "deepobs_prepare_data.sh + _tolstoi_preprocess.py (vocab 83, 80/20 split)",
    licence="public domain text (Project Gutenberg eBook #2600); the copy is the one DeepOBS downloads",
    files=(RemoteFile(
        name="war-and-peace.txt",
        urls=("https://github.com/AllenDowney/fluent-python-notebooks/raw/master/attic/sequences/war-and-peace.txt",
              "https://raw.githubusercontent.com/AllenDowney/fluent-python-notebooks/master/attic/sequences/"
              "war-and-peace.txt"),
        checksum=None,
    ),),
    prepare="optrepro.data.arrays:prepare_tolstoi",
    keys="tokens_train uint8 [N_train], tokens_test uint8 [653237]: character ids; vocab_codepoints int32 [83]: "
         "the Unicode code point of each id (ids by descending frequency, ties by first occurrence)",
    expect_lengths={"tokens_test": 653237, "vocab_codepoints": 83},  # DeepOBS's split (deepobs_prepare_data.sh)
    # deepobs_prepare_data.sh: sed -i '1,29d'; sed -i '5,775d'; sed -i '63850,64207d' (applied in turn)
    extra={"delete_line_ranges": ((1, 29), (5, 775), (63850, 64207)), "test_size": 0.2},
    papers=("crowded_valley",),
    notes="No checksum is published; the prepared arrays are checked against DeepOBS's vocabulary size (83) and "
          "test length (653,237 characters) instead, so a changed file fails loudly. Project Gutenberg is not a "
          "mirror: DeepOBS's line ranges only fit this copy.",
))


def _glue(task: str, files: tuple[RemoteFile, ...], lengths: dict[str, int], description: str) -> Source:
    keys_splits = ", ".join(lengths)
    return Source(
        name=f"glue_{task}",
        description=description,
        licence="see the GLUE task's own terms (gluebenchmark.com); research use",
        files=files,
        prepare="optrepro.data.arrays:prepare_glue",
        keys=(f"for split in {keys_splits}: input_ids_<split> uint16 [N,256] (bert-base-uncased WordPiece, "
              "[CLS] a [SEP] b [SEP], truncated longest-first to 256, padded with 0=[PAD]), token_type_ids_<split> "
              "uint8 [N,256], length_<split> int16 [N] (tokens before padding), y_<split> int64 [N] "
              "(the GLUE/TFDS label ids)"),
        papers=("alsals",),
        requires=("bert_base_uncased",),
        # Split sizes from HF datasets' glue dataset_infos.json (the TFDS splits the authors used).
        expect_lengths={f"y_{split}": n for split, n in lengths.items()},
        extra={"task": task, "max_length": 256},
    )


# bert_base_uncased is registered before GLUE, which needs its tokenizer.
BERT_REVISION = "86b5e0934494bd15c9632b12f734a8a67f723594"
register(Source(
    name="bert_base_uncased",
    description=f"bert-base-uncased weights and tokenizer, Hugging Face hub revision {BERT_REVISION}",
    licence="Apache-2.0 (model card)",
    files=tuple(RemoteFile(
        name=f,
        urls=(f"https://huggingface.co/google-bert/bert-base-uncased/resolve/{BERT_REVISION}/{f}",
              f"https://huggingface.co/bert-base-uncased/resolve/{BERT_REVISION}/{f}"),
        checksum=None,
    ) for f in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "model.safetensors")),
    prepare=None,
    kind="weights",
    keys="no arrays: optrepro.data.weights_dir('bert_base_uncased') is a directory for "
         "transformers' from_pretrained(dir) (works with HF_HUB_OFFLINE=1)",
    papers=("alsals",),
    notes="The revision is pinned (a git commit of the hub repo, so its files cannot change); the hub publishes "
          "LFS sha256s but none could be read here, so the first download records them.",
))

register(_glue("sst2", (RemoteFile(
    name="SST-2.zip", urls=("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",),
    checksum="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa", checksum_source=HF_GLUE,
    size=7439277, extract=True),), {"train": 67349, "validation": 872}, "GLUE SST-2 (binary sentiment)"))
register(_glue("qnli", (RemoteFile(
    name="QNLIv2.zip", urls=("https://dl.fbaipublicfiles.com/glue/data/QNLIv2.zip",),
    checksum="e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5", checksum_source=HF_GLUE,
    size=10627589, extract=True),), {"train": 104743, "validation": 5463},
    "GLUE QNLI v2 (question/sentence entailment; label 0 = entailment, 1 = not_entailment)"))
register(_glue("mnli", (RemoteFile(
    name="MNLI.zip", urls=("https://dl.fbaipublicfiles.com/glue/data/MNLI.zip",),
    checksum="e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633", checksum_source=HF_GLUE,
    size=312783507, extract=True),),
    {"train": 392702, "validation_matched": 9815, "validation_mismatched": 9832},
    "GLUE MNLI (label 0 entailment, 1 neutral, 2 contradiction)"))
register(_glue("mrpc", (
    RemoteFile(name="msr_paraphrase_train.txt",
               urls=("https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",),
               checksum="60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
               checksum_source=HF_GLUE, size=1047044),
    RemoteFile(name="msr_paraphrase_test.txt",
               urls=("https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt",),
               checksum="a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784",
               checksum_source=HF_GLUE, size=441275),
    RemoteFile(name="mrpc_dev_ids.tsv", urls=("https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv",),
               checksum="971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7",
               checksum_source=HF_GLUE, size=6222),
), {"train": 3668, "validation": 408, "test": 1725}, "GLUE MRPC (validation = the 408 GLUE dev pairs carved from the MSR train file)"))

register(Source(
    name="gpt2_tokenizer",
    description="OpenAI's GPT-2 BPE files (encoder.json = vocab, vocab.bpe = merges), as tiktoken's 'gpt2'",
    licence="MIT (github.com/openai/gpt-2 LICENSE)",
    files=(
        RemoteFile(name="encoder.json",
                   urls=("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",),
                   checksum="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                   checksum_source=TIKTOKEN),
        RemoteFile(name="vocab.bpe",
                   urls=("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",),
                   checksum="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                   checksum_source=TIKTOKEN),
    ),
    prepare=None,
    kind="weights",
    keys="no arrays: weights_dir('gpt2_tokenizer') holds encoder.json and vocab.bpe",
    papers=("alsals",),
))

register(Source(
    name="openwebtext",
    description="OpenWebText (Gokaslan and Cohen 2019, the Zenodo release HF's Skylion007/openwebtext reads), "
                "GPT-2 BPE tokens with <|endoftext|> (50256) after every document, as nanoGPT prepares it",
    licence="CC0 for the collection (the Zenodo record); the web pages keep their authors' rights",
    files=(RemoteFile(
        name="openwebtext.tar.xz",
        urls=("https://zenodo.org/record/3834942/files/openwebtext.tar.xz",
              "https://zenodo.org/records/3834942/files/openwebtext.tar.xz"),
        checksum=None,
    ),),
    prepare="optrepro.data.arrays:prepare_openwebtext",
    keys="train uint16 [~9.0e9], val uint16 [~4.4e6]: token streams (read-only np.memmap; take random windows "
         "of block_size+1 as nanoGPT does)",
    papers=("alsals",),
    requires=("gpt2_tokenizer",),
    large=True,
    notes="nanoGPT's split is datasets.train_test_split(test_size=0.0005, seed=2357) over HF's document order; "
          "without the datasets library we send each document to val with probability 0.0005 from "
          "numpy default_rng(2357) in archive order (same fraction, different documents).",
))

register(Source(
    name="tiny_imagenet",
    description="Tiny ImageNet 200 (CS231n), 100k train / 10k val, 64x64 RGB, 200 classes",
    licence="ImageNet terms: non-commercial research and education only",
    files=(RemoteFile(
        name="tiny-imagenet-200.zip", urls=("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
        checksum="90528d7ca1a48142e341f4ef8d21d0de", algorithm="md5",
        checksum_source="lvyilin/pytorch-fgvc-dataset tiny_imagenet.py (third party; torchvision has no class)",
        extract=True,
    ),),
    prepare="optrepro.data.arrays:prepare_tiny_imagenet",
    keys="x_train uint8 [100000,64,64,3], y_train int64, x_val uint8 [10000,64,64,3], y_val int64, classes <U9 "
         "[200] (sorted wnids; label = index). The unlabeled test split is not kept.",
    expect_lengths={"x_train": 100000, "y_train": 100000, "x_val": 10000, "y_val": 10000, "classes": 200},
    papers=("nos", "fuzzy"),
))

register(Source(
    name="flowers102",
    description="Oxford 102 Flowers, official train/val/test split (1020/1020/6149)",
    licence="no licence stated (Nilsback and Zisserman 2008, VGG Oxford); research use",
    files=tuple(RemoteFile(
        name=f, urls=(f"https://www.robots.ox.ac.uk/~vgg/data/flowers/102/{f}",),
        checksum=md5, algorithm="md5", checksum_source=TV.format("flowers102"), extract=f.endswith(".tgz"),
    ) for f, md5 in (("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"),
                     ("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d"),
                     ("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c"))),
    prepare="optrepro.data.arrays:prepare_flowers102",
    keys=ENCODED_KEYS.format(splits="train, val, test") + " (labels 0..101 = the .mat labels minus 1)",
    expect_lengths={"y_train": 1020, "y_val": 1020, "y_test": 6149},
    papers=("nos",),
))

register(Source(
    name="stanford_cars",
    description="Stanford Cars (Cars196), 8,144 train / 8,041 test",
    licence="ImageNet-like terms: non-commercial research only (Krause et al. 2013)",
    files=(
        RemoteFile(name="car_devkit.tgz",
                   urls=("https://ai.stanford.edu/~jkrause/cars/car_devkit.tgz",
                         "https://github.com/pytorch/vision/files/11644847/car_devkit.tgz"),
                   checksum="c3b158d763b6e2245038c8ad08e45376", algorithm="md5", checksum_source=TV_CARS,
                   extract=True),
        RemoteFile(name="cars_train.tgz", urls=("https://ai.stanford.edu/~jkrause/car196/cars_train.tgz",),
                   checksum="065e5b463ae28d29e77c1b4b166cfe61", algorithm="md5", checksum_source=TV_CARS,
                   extract=True),
        RemoteFile(name="cars_test.tgz", urls=("https://ai.stanford.edu/~jkrause/car196/cars_test.tgz",),
                   checksum="4ce7ebf6a94d07f1952d94dd34c4d501", algorithm="md5", checksum_source=TV_CARS,
                   extract=True),
        RemoteFile(name="cars_test_annos_withlabels.mat",
                   urls=("https://ai.stanford.edu/~jkrause/car196/cars_test_annos_withlabels.mat",),
                   checksum="b0a2b23655a3edd16d84508592a98d10", algorithm="md5", checksum_source=TV_CARS),
    ),
    prepare="optrepro.data.arrays:prepare_stanford_cars",
    keys=ENCODED_KEYS.format(splits="train, test") + " (labels 0..195 = class minus 1)",
    expect_lengths={"y_train": 8144, "y_test": 8041, "classes": 196},
    papers=("nos",),
    notes="The publisher's URLs are broken (torchvision issue 7545). Put the four files in "
          "data/stanford_cars/raw/ by hand (e.g. from the Kaggle copy); their md5s are still checked.",
))

register(Source(
    name="caltech101",
    description="Caltech 101 (CaltechDATA record mzrjq-6wc02), 101 categories + BACKGROUND_Google (dropped)",
    licence="CC BY 4.0 (CaltechDATA record)",
    files=(RemoteFile(
        name="caltech-101.zip",
        urls=("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip?download=1",
              "https://data.caltech.edu/api/records/mzrjq-6wc02/files/caltech-101.zip/content"),
        checksum="331234750fc7f77520e50d9565e8b6907b03565e30320da1401130db08c61f91",
        checksum_source="a third-party fetch script in the code corpus (not CaltechDATA's own page); the inner "
                        "101_ObjectCategories.tar.gz is also checked against torchvision's md5 "
                        "b224c7392d521a49829488ab0f1120d9 (torchvision/datasets/caltech.py)",
        extract=True,
    ),),
    prepare="optrepro.data.arrays:prepare_caltech101",
    keys=ENCODED_KEYS.format(splits="all") + " (classes = sorted category folders without BACKGROUND_Google, "
         "as torchvision; there is no official split: the problem draws one from a fixed seed)",
    expect_lengths={"classes": 101},
    extra={"inner_archive": "caltech-101/101_ObjectCategories.tar.gz", "inner_md5": "b224c7392d521a49829488ab0f1120d9"},
    papers=("nos",),
))


register(Source(
    name="efficientnetv2_s_in1k",
    description="EfficientNetV2-S ImageNet-1k weights (timm tf_efficientnetv2_s.in1k, ported from the official "
                "TF checkpoint) for NOS fine-tuning",
    licence="Apache-2.0 (timm; the TF checkpoint's licence)",
    files=(RemoteFile(
        name="tf_efficientnetv2_s-eb54923e.pth",
        urls=("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-effv2-weights/"
              "tf_efficientnetv2_s-eb54923e.pth",),
        checksum="eb54923e", prefix=True,
        checksum_source="timm pretrained_cfg url of tf_efficientnetv2_s.in1k: the file name carries the first "
                        "8 hex digits of its sha256 (torch hub convention); the full sha256 is recorded on first use",
    ),),
    prepare=None,
    kind="weights",
    keys="no arrays: timm.create_model('tf_efficientnetv2_s.in1k', pretrained=True, "
         "pretrained_cfg_overlay={'file': weights_file('efficientnetv2_s_in1k')})",
    papers=("nos",),
    notes="A GitHub release asset is immutable, which pins it as a hub revision would. NOS used Keras "
          "EfficientNetV2-S 'imagenet' weights; ImageNet-1k is our reading (the in21k_ft_in1k source is the "
          "alternative).",
))

EFFV2_REVISION = "212ce86b3cc2aa27505700cd5d1a25dfd2a07dc8"
register(Source(
    name="efficientnetv2_s_in21k_ft_in1k",
    description=f"EfficientNetV2-S ImageNet-21k then 1k weights (timm tf_efficientnetv2_s.in21k_ft_in1k, hub "
                f"revision {EFFV2_REVISION}): the alternative reading of NOS's 'ImageNet weights'",
    licence="Apache-2.0 (timm model card)",
    files=(RemoteFile(
        name="model.safetensors",
        urls=(f"https://huggingface.co/timm/tf_efficientnetv2_s.in21k_ft_in1k/resolve/{EFFV2_REVISION}/"
              "model.safetensors",),
        checksum=None,
    ),),
    prepare=None,
    kind="weights",
    keys="no arrays: timm.create_model('tf_efficientnetv2_s.in21k_ft_in1k', pretrained=True, "
         "pretrained_cfg_overlay={'file': weights_file('efficientnetv2_s_in21k_ft_in1k')})",
    papers=("nos",),
))

register(Source(
    name="imagenet",
    description="ImageNet-1k (ILSVRC 2012) from a directory the user supplies (config key imagenet_dir): "
                "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, 1000 classes each",
    licence="ImageNet terms of access: non-commercial research and education; not downloadable",
    files=(),
    prepare=None,
    kind="user_dir",
    keys="train_paths <U [N], train_labels int64 [N], val_paths <U [M], val_labels int64 [M], classes <U9 [1000] "
         "(sorted wnids); images are decoded by the problem's loader (too large for arrays)",
    papers=("alsals", "fuzzy"),
))

IMAGENET_CONFIG_KEY = "imagenet_dir"

__all__ = ["RemoteFile", "Source", "SOURCES", "register", "get", "names", "downloadable",
           "IMAGENET_CONFIG_KEY"]

