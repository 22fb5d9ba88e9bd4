"""The pinned environment: the verified torch/torchvision pair loads, and environment.yml matches the lock."""
import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_pins() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", text, re.M)}


def test_torch_pair_loads_timm_and_torchvision_ops():
    import timm
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_installed_versions_are_the_locked_ones():
    pins = lock_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.2"
    for name in ("torch", "torchvision", "timm", "transformers", "snakemake", "numpy", "pandas"):
        installed = metadata.version(name).split("+")[0]
        assert installed == pins[name], f"{name}: installed {installed}, locked {pins[name]}"


def test_lock_is_from_pypi_with_hashes_only():
    text = (ROOT / "requirements.lock").read_text()
    assert "file://" not in text and "+cpu" not in text and "/opt/" not in text
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text.split("\n", 2)[2])
    pinned = [b for b in blocks if re.match(r"[A-Za-z0-9_.\-]+==", b)]
    assert len(pinned) > 50
    assert all("--hash=sha256:" in b for b in pinned)


def test_every_declared_dependency_is_locked():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()
        assert name in pins, f"{name} is declared in pyproject.toml but not in requirements.lock"


def test_environment_yml_installs_the_lock_with_the_locked_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert pythons == ["python=3.11"]
    assert "--python-version 3.11" in (ROOT / "Makefile").read_text()  # the lock is resolved for that Python
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["--require-hashes", "-r requirements.lock"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
