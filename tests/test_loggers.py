"""The ``logger`` config group, and each run's hyperparameters and final metrics in its logger (HParams)."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.test_config import compose_cfg, group_options
from vqbench.build import build_logger
from vqbench.errors import ConfigError
from vqbench.training.hparams import hyperparameters, log_final


def hparams_of(log_dir) -> tuple[dict, set[str]]:
    """The hyperparameters of a TensorBoard run's HParams session and the metric tags of its HParams experiment."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return values, {info.name.tag for info in experiment.experiment.metric_infos}


def test_logger_group_options_and_default():
    assert set(group_options("logger")) == {"tensorboard", "csv", "wandb", "mlflow"}
    assert compose_cfg([]).logger._target_.endswith("TensorBoardLogger")


def test_hyperparameters_are_the_choices_and_the_experiment_nodes_flattened():
    config = {"codebook": {"size": 512, "dim": 64}, "quantizer": {"_target_": "x.VQ", "levels": [8, 5]}, "ckpt": None}
    params = hyperparameters(config, {"quantizer": "vq", "data": "sample"})
    assert params == {"choice/data": "sample", "choice/quantizer": "vq", "codebook/size": 512, "codebook/dim": 64,
                      "quantizer/levels": "[8, 5]"}  # fmt: skip


def test_the_hparams_event_names_the_hyperparameters_and_the_final_metrics(tmp_path):
    cfg = compose_cfg([])
    logger = build_logger(cfg, tmp_path)
    params = hyperparameters({"codebook": {"size": 512, "l2_norm": False}}, {"quantizer": "ema"})
    log_final(logger, params, {"val/psnr": 21.5, "test/rfid": 3.25}, step=200)
    values, metric_tags = hparams_of(tmp_path / "tensorboard")
    assert values == {"choice/quantizer": "ema", "codebook/size": 512.0, "codebook/l2_norm": False}
    assert metric_tags == {"final/val/psnr", "final/test/rfid"}
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("final/val/psnr")] == [(200, 21.5)]  # at the last step


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_is_a_config_error_naming_the_extra(tmp_path, name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    with pytest.raises(
        ConfigError, match=rf"needs the {name} package, which is not installed; pip install -e '\.\[{name}\]'"
    ):
        build_logger(compose_cfg([f"logger={name}"]), tmp_path)


@pytest.mark.slow
def test_a_training_logs_its_hyperparameters_and_final_metrics(trained_run):
    """A single run: its command-line overrides in the HParams tab (a sweep's jobs get their swept keys:
    tests/test_results.py), the final metrics at the last step, and the resolved config in hparams.yaml."""
    record = json.loads((trained_run / "metrics.json").read_text())
    values, metric_tags = hparams_of(trained_run / "tensorboard")
    assert values["model.latent_channels"] == 16 and values["trainer.max_steps"] == 3
    assert not any(key.startswith("hydra") for key in values)
    assert metric_tags == {f"final/{name}" for name in record["metrics"]}
    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    final = events.Scalars("final/val/psnr")[-1]
    assert final.step == record["step"] and final.value == pytest.approx(record["metrics"]["val/psnr"], rel=1e-6)
    assert yaml.safe_load((trained_run / "tensorboard" / "hparams.yaml").read_text()) == record["config"]


def test_csv_logger_writes_the_curves_the_hyperparameters_and_the_final_metrics(tmp_path):
    logger = build_logger(compose_cfg(["logger=csv"]), tmp_path)
    logger.log_metrics({"train/loss/total": 0.5}, step=1)
    logger.log_metrics({"val/psnr": 20.25}, step=2)
    config = {"codebook": {"dim": 64}, "optimizer": {"lr": 0.001}}
    log_final(logger, {"codebook.dim": 64}, {"val/psnr": 20.25}, step=2, config=config, choices={"quantizer": "vq"})
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert rows[0]["train/loss/total"] == "0.5" and rows[1]["val/psnr"] == "20.25"
    assert float(rows[-1]["final/val/psnr"]) == 20.25
    params = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    # every hyperparameter of the config and the choices, plus the compared keys
    assert params == {"choice/quantizer": "vq", "codebook/dim": 64, "optimizer/lr": 0.001, "codebook.dim": 64}
