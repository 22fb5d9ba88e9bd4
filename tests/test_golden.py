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
    # optimizer: (run id, final test loss, final train accuracy) for digits_mlp, dropout 0.1, 2 epochs, seed 0.
    # SPEC_VERSION 2 (one noise stream per run instead of a reseed per forward) changed the dropout masks: before,
    # adam gave 2.0366275024414064 / 0.7184628237259816 and sgd 2.2937945302327476 / 0.12447786131996658.
    # Run ids leave out the spec's `paper` since papers share runs (ids were 126b32bd1c80a934dd18 and
    # 9abac8a3f81a078e1649 when the paper was part of the id); the numbers did not change.
    "adam": ("d405be64f689aad70205", 2.0386560567220053, 0.7059314954051796),
    "sgd": ("95ae0ce4314299cd77a8", 2.293762893676758, 0.12364243943191311),
}
# the same runs without dropout draw no noise: SPEC_VERSION 2 changed their ids but not their numbers
NOISELESS = {"adam": 2.030235341389974, "sgd": 2.293774846394857}  # computed before the change


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


@pytest.mark.parametrize("optimizer", sorted(NOISELESS))
def test_runs_without_noise_kept_their_numbers_across_spec_version_2(tmp_path, optimizer):
    spec = make_spec(paper="core", problem="digits_mlp", scale="smoke", optimizer=optimizer, seed=0, epochs=2)
    run_one(spec, tmp_path)
    final = load_result(tmp_path / "runs" / run_id(spec))["deterministic"]["final"]
    assert final["test"]["loss"] == pytest.approx(NOISELESS[optimizer], rel=1e-4)
