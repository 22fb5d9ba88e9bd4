"""The full-scale ImageNet pipeline: JPEG files decoded per batch (optrepro.problems.imagenet), checked on tiny
generated JPEGs: shapes, determinism with and without prefetch, torchvision's transforms, labels, corrupt files,
and the two full-scale problems built from an ImageNet-format directory through verify_imagenet."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from optrepro import data, problems
from optrepro.problems.imagenet import (ImageDecodeError, JpegFileSplit, JpegTransform, holdout_split,
                                        resized_shape)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(rng, width, height, mode="RGB") -> Image.Image:
    coarse = rng.uniform(0, 255, (height // 4 + 2, width // 4 + 2, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    return image.convert(mode) if mode != "RGB" else image


@pytest.fixture
def files(tmp_path):
    """Ten JPEGs of different sizes and modes (a greyscale one, a CMYK one) plus a PNG, labels 0..10."""
    rng = np.random.RandomState(0)
    sizes = [(40, 30), (30, 40), (64, 20), (20, 64), (33, 33), (50, 26), (26, 50), (45, 38), (38, 45), (28, 21)]
    paths = []
    for k, (w, h) in enumerate(sizes):
        mode = {3: "L", 6: "CMYK"}.get(k, "RGB")
        path = tmp_path / f"img{k}.JPEG"
        smooth_image(rng, w, h, mode).save(path, quality=95)
        paths.append(str(path))
    smooth_image(rng, 36, 27).save(tmp_path / "img10.png")
    paths.append(str(tmp_path / "img10.png"))
    return np.array(paths), np.arange(len(paths))


TRANSFORM = JpegTransform(size=16, resize=18)


def test_batches_are_uint8_nchw_with_their_labels(files):
    paths, labels = files
    split = JpegFileSplit(paths, labels, TRANSFORM, threads=2)
    assert len(split) == 11 and split.tensors[0].device.type == "cpu"
    for generator in (gen(0), None):
        x, y = split.batch(torch.tensor([3, 6, 10, 0]), generator)
        assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and x.is_contiguous()
        assert y.dtype == torch.int64 and y.tolist() == [3, 6, 10, 0]
    grey = split.batch(torch.tensor([3]))[0][0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # L -> RGB repeats the channel
    with pytest.raises(IndexError, match="out of range.*11 images"):
        split.batch(torch.tensor([11]))


def test_same_index_and_seed_give_identical_batches_with_and_without_prefetch(files):
    paths, labels = files
    prefetching = JpegFileSplit(paths, labels, TRANSFORM, threads=2, prefetch=2)
    order = prefetching.order(gen(5))
    first = prefetching.batch(order[0:4], gen(1))
    second = prefetching.batch(order[4:8], gen(2))  # predicted after the first: decoded in the background
    assert prefetching.hits == 1 and prefetching.misses == 1
    plain = JpegFileSplit(paths, labels, TRANSFORM, threads=1, prefetch=0)
    for split in (plain, prefetching):  # prefetching: the prediction was used up, so this decodes again
        for index, seed, expected in ((order[4:8], 2, second), (order[0:4], 1, first)):
            x, y = split.batch(index, gen(seed))
            assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])
    assert plain.hits == 0
    # the comparison is not vacuous: another seed gives other crops, the evaluation transform other pixels
    assert not torch.equal(prefetching.batch(order[4:8], gen(3))[0], second[0])
    assert not torch.equal(prefetching.batch(order[4:8])[0], second[0])


def test_evaluation_batches_have_no_randomness_and_match_torchvision(files):
    import torchvision.transforms.functional as TF

    paths, labels = files
    split = JpegFileSplit(paths, labels, TRANSFORM, threads=2, prefetch=2)
    torch.manual_seed(0)
    a = split.batch(torch.arange(0, 4))[0]
    b = split.batch(torch.arange(4, 8))[0]  # finished in the background after the first
    c = split.batch(torch.arange(8, 11))[0]  # the partial last range is predicted too
    assert split.hits == 2
    torch.manual_seed(1)  # global RNG state does not matter either
    again = JpegFileSplit(paths, labels, TRANSFORM, threads=1, prefetch=0)
    assert torch.equal(torch.cat([a, b, c]), again.batch(torch.arange(11))[0])
    # torchvision Resize(18) + CenterCrop(16), up to PIL's fixed-point rounding (+-1)
    for k, path in enumerate(paths):
        with Image.open(path) as image:
            reference = TF.center_crop(TF.resize(image.convert("RGB"), 18), 16)
        reference = torch.from_numpy(np.asarray(reference).transpose(2, 0, 1).copy())
        assert (torch.cat([a, b, c])[k].int() - reference.int()).abs().max() <= 1
    # at ImageNet's sizes the +-1 differences are rare, even on white noise
    noise = Image.fromarray(np.random.RandomState(0).randint(0, 256, (375, 500, 3), dtype=np.uint8))
    diff = np.abs(JpegTransform().apply(noise, None).transpose(1, 2, 0).astype(int)
                  - np.asarray(TF.center_crop(TF.resize(noise, 256), 224)).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_training_crops_follow_torchvision(files):
    import torchvision.transforms.functional as TF

    paths, _ = files
    with Image.open(paths[0]) as image:
        image = image.convert("RGB")
    u = TRANSFORM.draw(200, gen(0))
    boxes = [TRANSFORM.train_box(40, 30, row) for row in u]
    areas = np.array([(r - l) * (b - t) for l, t, r, b in boxes]) / (40 * 30)
    ratios = np.array([(r - l) / (b - t) for l, t, r, b in boxes])
    assert all(0 <= l < r <= 40 and 0 <= t < b <= 30 for l, t, r, b in boxes)
    assert areas.min() >= 0.06 and areas.max() <= 1.0 and areas.min() < 0.3 < 0.7 < areas.max()
    assert ratios.min() >= 0.7 and ratios.max() <= 1.4
    for row, (l, t, r, b) in zip(u[:20], boxes):  # crop, resize, flip exactly as torchvision on PIL
        reference = TF.resized_crop(image, t, l, b - t, r - l, [16, 16])
        if row[-1] < 0.5:
            reference = TF.hflip(reference)
        assert np.array_equal(TRANSFORM.apply(image, row), np.asarray(reference).transpose(2, 0, 1))
    flips = u[:, -1] < 0.5
    assert 0.35 < flips.mean() < 0.65
    # Resize(18) + RandomCrop(16): the crop lies inside the resized image; u = 0 and u -> 1 reach both ends
    resize_random = JpegTransform(size=16, resize=18, train_crop="resize_random")
    new_w, new_h = resized_shape(40, 30, 18)
    assert (new_w, new_h) == (24, 18)
    resized = TF.resize(image, 18)
    for u_row, (top, left) in ((np.array([0.0, 0.0, 0.9]), (0, 0)), (np.array([0.999, 0.999, 0.9]), (2, 8))):
        reference = np.asarray(TF.crop(resized, top, left, 16, 16)).transpose(2, 0, 1).astype(int)
        assert np.abs(resize_random.apply(image, u_row).astype(int) - reference).max() <= 1


def test_corrupt_or_truncated_jpeg_raises_naming_the_file(files, tmp_path):
    paths, labels = files
    garbage = tmp_path / "garbage.JPEG"
    garbage.write_bytes(b"not a jpeg at all" * 10)
    buffer = io.BytesIO()
    smooth_image(np.random.RandomState(1), 40, 40).save(buffer, format="JPEG")
    truncated = tmp_path / "truncated.JPEG"
    truncated.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    split = JpegFileSplit(np.append(paths, [str(garbage), str(truncated)]), np.append(labels, [0, 0]), TRANSFORM)
    for row, path in ((11, garbage), (12, truncated)):
        for generator in (gen(0), None):
            with pytest.raises(ImageDecodeError, match=f"cannot decode image {path}"):
                split.batch(torch.tensor([0, row]), generator)
    assert split.batch(torch.tensor([0, 1]))[0].shape == (2, 3, 16, 16)  # the split still works afterwards


def test_bad_transform_and_problem_arguments_fail_before_any_data():
    with pytest.raises(ValueError, match="unknown train_crop 'center'. Valid choices: random_resized, resize_random"):
        JpegTransform(train_crop="center")
    with pytest.raises(ValueError, match="unknown interpolation 'nearest'"):
        JpegTransform(interpolation="nearest")
    with pytest.raises(ValueError, match="unknown train_crop 'center'"):
        problems.get("fuzzy_imagenet_effb3", "smoke", train_crop="center")
    with pytest.raises(ValueError, match="'valid_images'.*-1 is out of range; valid: an integer >= 0"):
        problems.get("alsals_imagenet_resnet50", "full", valid_images=-1)  # the registry's declaration
    with pytest.raises(ValueError, match="valid_images must be between 1 and 9"):
        holdout_split(10, 10)


# --- the full-scale problems on an ImageNet-format directory ------------------------------------------------
def colour(label: int) -> tuple[int, int, int]:
    """A solid colour per class (1024 codes, 8 apart), so a batch's pixels say which class each image is."""
    return 8 * (label % 32) + 4, 8 * (label // 32) + 4, 128


def label_of(pixels: torch.Tensor) -> int:
    r, g, _ = pixels.float().mean(dim=(1, 2)).tolist()
    return int(round((g - 4) / 8)) * 32 + int(round((r - 4) / 8))


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """train/<wnid>/ and val/<wnid>/ for 1000 classes (verify_imagenet needs all of them): one solid-colour
    JPEG each, three more training images in the first 20 classes, verified into a data root."""
    base = tmp_path_factory.mktemp("imagenet")
    wnids = [f"n{i:08d}" for i in range(1000)]
    for split in ("train", "val"):
        for label, wnid in enumerate(wnids):
            folder = base / split / wnid
            folder.mkdir(parents=True)
            for k in range(4 if split == "train" and label < 20 else 1):
                Image.new("RGB", (24 + k, 20), colour(label)).save(folder / f"{wnid}_{k}.JPEG", quality=95)
    root = base / "data"
    assert data.verify_imagenet(base, root=root) == {"train": 1060, "val": 1000}
    return root


def test_full_scale_problems_read_the_verified_index(imagenet_root, monkeypatch):
    monkeypatch.setenv("OPTREPRO_DATA", str(imagenet_root))
    index = data.load_arrays("imagenet", imagenet_root)
    fuzzy = problems.get("fuzzy_imagenet_effb3", "full", image_size=32, valid_images=100)
    splits = fuzzy.splits()
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert (len(train), len(valid), len(test)) == (960, 100, 1000)
    assert set(train.paths) | set(valid.paths) == set(index["train_paths"])
    assert not set(train.paths) & set(valid.paths)
    assert list(test.paths) == list(index["val_paths"])
    assert fuzzy.pipeline() == JpegTransform(size=32, resize=34, train_crop="random_resized", interpolation="bicubic")
    # the held-out set is fixed: the same for another problem instance (another process would agree too)
    assert list(problems.get("fuzzy_imagenet_effb3", "full", image_size=32, valid_images=100)
                .load_splits()["valid"].paths) == list(valid.paths)
    # labels match the class folders, and the pixels of every image match its label through the shuffled
    # order and the prefetch
    for split in (train, test):
        wnid_of = [p.split("/")[-2] for p in split.paths]
        assert all(index["classes"][y] == w for y, w in zip(split.labels.tolist(), wnid_of))
    order = train.order(gen(0))
    for step in range(3):
        x, y = train.batch(order[step * 64:(step + 1) * 64], gen(step))
        assert x.shape == (64, 3, 32, 32) and [label_of(image) for image in x] == y.tolist()
    assert train.hits == 2
    x, y = test.batch(torch.arange(500, 564))
    assert [label_of(image) for image in x] == y.tolist() == list(range(500, 564))
    inputs = fuzzy.inputs(x)
    assert inputs.shape == (64, 3, 32, 32) and inputs.dtype == torch.float32  # normalised, not resized

    alsals = problems.get("alsals_imagenet_resnet50", "full", image_size=32)
    splits = alsals.splits()
    assert splits["valid"] is splits["test"] and len(splits["train"]) == 1060
    assert alsals.pipeline() == JpegTransform(size=32, resize=37, train_crop="resize_random")
    assert problems.info("alsals_imagenet_resnet50").args["train_crop"] == "resize_random"
    assert problems.get("alsals_imagenet_resnet50", "full").pipeline() == JpegTransform(224, 256, "resize_random")
    assert problems.get("fuzzy_imagenet_effb3", "full").pipeline() == JpegTransform(300, 320, "random_resized",
                                                                                    "bicubic")


def test_training_loop_runs_unchanged_on_jpeg_splits(imagenet_root, monkeypatch, tmp_path):
    from torch import nn

    from optrepro.plan import make_spec
    from optrepro.problems.images import FuzzyImageNetEfficientNetB3
    from optrepro.train import Trainer

    monkeypatch.setenv("OPTREPRO_DATA", str(imagenet_root))
    # a tiny stand-in for EfficientNet-B3: the point is the data path through train.py, not the model
    monkeypatch.setattr(FuzzyImageNetEfficientNetB3, "build_model", lambda self: nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000)))
    spec = make_spec(paper="fuzzy", problem="fuzzy_imagenet_effb3", scale="full", optimizer="sgd",
                     hparams={"lr": 0.1}, epochs=1, batch_size=64, grad_accum=2,
                     problem_args={"image_size": 24, "valid_images": 60})
    results = [Trainer(spec, tmp_path / name, progress=False).run()["deterministic"] for name in ("a", "b")]
    assert results[0] == results[1]
    assert results[0]["status"] == "ok" and results[0]["steps"] == 1000 // 64
    final = results[0]["final"]
    assert set(final) == {"train", "valid", "test"} and 0 < final["test"]["loss"] < 20
