from types import SimpleNamespace

import pytest
import torch

from vqbench.errors import NonFiniteLossError
from vqbench.training.callbacks import StopOnNonFiniteLoss


def _trainer(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, log_every_n_steps=10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_loss_stops_training_with_the_fix(bad):
    with pytest.raises(NonFiniteLossError, match="at step 20.*optimizer.lr"):
        StopOnNonFiniteLoss().on_train_batch_end(_trainer(20), None, {"loss": torch.tensor(bad)}, None, 0)


def test_finite_loss_and_off_steps_pass():
    callback = StopOnNonFiniteLoss()
    callback.on_train_batch_end(_trainer(20), None, {"loss": torch.tensor(0.5)}, None, 0)
    callback.on_train_batch_end(_trainer(21), None, {"loss": torch.tensor(float("nan"))}, None, 0)
