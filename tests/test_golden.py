"""Golden outputs: a change that moves the numbers of an existing spec must bump an impl_version.

If one of these fails after an intended change to an optimizer, a problem or the loop, bump the matching
`impl_version` (new run ids) and update the values here; if it fails unexpectedly, the change altered results
silently. Tolerance 1e-4 relative: tight enough to catch any algorithmic change, loose enough for CPU
instruction-set differences in float summation order.
"""
import pytest

from optrepro.plan import make_spec, run_id
from optrepro.runner import run_one
from optrepro.train import load_result

GOLDEN = {
    # optimizer: (run id, final test loss, final train accuracy) for digits_mlp, dropout 0.1, 2 epochs, seed 0
    "adam": ("03ed1e15e1109a4b5437", 2.0366275024414064, 0.7184628237259816),
    "sgd": ("fdbd3c4b26aab8ac7739", 2.2937945302327476, 0.12447786131996658),
}


@pytest.mark.parametrize("optimizer", sorted(GOLDEN))
def test_digits_golden_outputs(tmp_path, optimizer):
    expected_id, loss, accuracy = GOLDEN[optimizer]
    spec = make_spec(paper="core", problem="digits_mlp", scale="smoke", optimizer=optimizer, seed=0, epochs=2,
                     problem_args={"dropout": 0.1})
    assert run_id(spec) == expected_id, "the spec's content changed: a new run id for the same run"
    run_one(spec, tmp_path)
    final = load_result(tmp_path / "runs" / expected_id)["deterministic"]["final"]
    assert final["test"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert final["train"]["accuracy"] == pytest.approx(accuracy, rel=1e-4)
