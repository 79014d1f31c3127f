"""docs/gpus-and-clusters.md: a sweep through submitit (the SLURM launcher's code path, run locally with
``hydra/launcher=submitit_local``) trains the same jobs to the same metrics as Hydra's default launcher."""

import json

import pytest

from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.slow

SWEEP = ["-m", "quantizer=vq,fsq", *TINY, "data.num_workers=0"]


def _metrics(sweep) -> dict[str, dict[str, float]]:
    """quantizer choice -> the job's final metrics, from every job's metrics.json."""
    jobs = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        record = json.loads(path.read_text())
        jobs[record["choices"]["quantizer"]] = record["metrics"]
    return jobs


def test_a_sweep_through_submitit_local_equals_the_default_launcher(tmp_path):
    run_cli(*SWEEP, f"hydra.sweep.dir={tmp_path / 'basic'}", cwd=tmp_path)
    run_cli(*SWEEP, "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path / 'submitit'}", cwd=tmp_path)
    basic, submitit = _metrics(tmp_path / "basic"), _metrics(tmp_path / "submitit")
    assert sorted(basic) == sorted(submitit) == ["fsq", "vq"]
    for quantizer, metrics in basic.items():
        assert metrics.keys() == submitit[quantizer].keys()
        # The same seeded 3-step training in another process: the same kernels on the same inputs. Only the number of
        # intra-op threads may differ between the two launchers' processes, which reorders float32 sums: a relative
        # error of a few float32 epsilons (1.2e-7) per reduction, amplified over 3 optimizer steps; 1e-4 relative
        # bounds that with a wide margin while any difference in what is trained moves these metrics by far more.
        for key, value in metrics.items():
            assert submitit[quantizer][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (quantizer, key)
