"""``python run.py +eval=true ckpt=PATH``: the evaluation protocol (docs/protocol.md) on a checkpoint's test split.

``evaluate`` reads the checkpoint through vqbench.checkpoint (tensors only, allow-listed config), merges the command
line's evaluation overrides into its config, and writes metrics.json with the protocol that produced each number;
``evaluate_checkpoint`` is the protocol itself, shared with ``evaluate_after_training``. An evaluation never writes
into a training's folder (vqbench.folder_lock).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from vqbench.build import (
    build_datamodule,
    build_evaluation_metrics,
    build_token_count,
    build_tokenizer,
    check_config,
    effective_size_splits,
)
from vqbench.checkpoint import (
    EVAL_TRAINER_KEYS,
    check_targets,
    evaluation_config,
    evaluation_module,
    load_checkpoint,
    trusted_prefixes,
)
from vqbench.compression import compression_record
from vqbench.cost import CostMeter
from vqbench.errors import OutputError
from vqbench.job_status import check_writable, finished_results, output_dir, task_overrides, write_results
from vqbench.metrics.aggregate import MAX_DISTINCT_TOKENS
from vqbench.metrics.fid_reference import dataset_fingerprint, save_reference
from vqbench.metrics.settings import reconstructions_folder
from vqbench.quantizer_settings import reconcile_codebook_size
from vqbench.results import format_table, plain_floats, print_unavailable
from vqbench.training.callbacks import SaveReconstructions
from vqbench.training.performance import set_tf32
from vqbench.training.trainer_settings import lightning_trainer

SSIM_PROTOCOLS = {
    "uniform": "per image, 7x7 uniform window, K1 0.01, K2 0.03, sample covariance, then the mean "
    "(skimage.metrics.structural_similarity defaults)",
    "gaussian": "per image, 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population covariance, then the "
    "mean (Wang et al. 2004; piqa.SSIM)",
}


def evaluation_trainer_settings(eval_cfg: DictConfig) -> dict:
    """The lightning.Trainer arguments of an evaluation: the config's values of EVAL_TRAINER_KEYS."""
    settings = OmegaConf.to_container(eval_cfg.trainer, resolve=True)
    settings = {key: value for key, value in settings.items() if key in EVAL_TRAINER_KEYS}
    if eval_cfg.metrics.get("precision"):  # a recipe's evaluation precision (the ImageNet-128 tables: fp32)
        settings["precision"] = eval_cfg.metrics.precision
    return settings


def evaluate_checkpoint(
    eval_cfg: DictConfig, payload: dict, ckpt: str, out: Path
) -> tuple[dict[str, float], dict, dict[str, str]]:
    """The evaluation protocol (docs/protocol.md) on the test split: the metrics, the protocol that produced them,
    and the metrics that could not be computed (missing pretrained weights) with the reason."""
    set_tf32(False)  # the protocol's numbers come from IEEE fp32, also right after a TF32 training in this process
    module = evaluation_module(eval_cfg, payload, ckpt, use_ema=bool(eval_cfg.metrics.get("use_ema", False)))
    datamodule = build_datamodule(eval_cfg)
    size_splits = effective_size_splits(eval_cfg)
    datamodule.check(tuple(dict.fromkeys(["test", *size_splits])))
    first_image = next(image for image in datamodule.dataset("test") if image is not None)
    test_images = len(datamodule.dataset("test"))
    data_config = OmegaConf.to_container(eval_cfg.data, resolve=True)
    fingerprint = dataset_fingerprint(data_config, "test", test_images, first_image)
    extra, unavailable = build_evaluation_metrics(eval_cfg, tuple(first_image.shape[-2:]), fingerprint)
    module.add_test_metrics(extra)
    callbacks = []
    if eval_cfg.metrics.get("save_reconstructions", False):
        folder = reconstructions_folder(eval_cfg.metrics, out)
        try:  # before the test pass, not at its first batch
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"cannot create the reconstructions folder {folder} ({error.strerror or error}); give a writable "
                "folder with metrics.reconstructions_dir=..."
            ) from None
        callbacks.append(SaveReconstructions(folder))
    trainer_settings = dict(
        evaluation_trainer_settings(eval_cfg),
        # Every process gets distinct images (StridedShardSampler); Lightning's sampler would pad with repeats.
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer = lightning_trainer(**trainer_settings, callbacks=callbacks)
    metrics = plain_floats(trainer.test(module, datamodule=datamodule, verbose=False)[0])
    rfid_record = _rfid_record(extra.get("rfid"), trainer.is_global_zero)
    window = eval_cfg.metrics.get("usage_window")
    tokens = f"a FIFO queue of the last {window} tokens" if window else "every token of the split"
    flip = False
    if size_splits != ["test"]:
        metrics.pop("test/effective_codebook_size", None)
        counter = build_token_count(eval_cfg, module.tokenizer, datamodule)
        metrics |= plain_floats(lightning_trainer(**trainer_settings).test(counter, verbose=False)[0])
        flip = counter.flip
    counted = " + ".join(size_splits)
    if "test/effective_codebook_size" not in metrics:
        unavailable["effective_codebook_size"] = (
            f"more than {MAX_DISTINCT_TOKENS:,} distinct token vectors over the {counted} split(s): nearly every "
            "vector has a token of its own (the dense lattice), too many to hold in memory; LL-VQ-VAE does not "
            "count the dense lattice either"
        )
    protocol = {
        "split": "test",
        "images": test_images,
        "processes": trainer.world_size,
        "weights": "weight EMA" if eval_cfg.metrics.get("use_ema", False) else "trained weights",
        "precision": str(trainer.precision),
        "data_range": "reconstructions mapped from the model's pixel space to [0, 1] (x * pixel_std + pixel_mean) "
        "and clamped",
        "psnr": "per image on [0, 1], then the mean (skimage.metrics.peak_signal_noise_ratio)",
        "ssim": SSIM_PROTOCOLS[eval_cfg.metrics.get("ssim_window", "uniform")],
        "l1": "mean absolute error per image on [0, 1], then the mean",
        "lpips": "lpips package, AlexNet, inputs in [-1, 1], per image then the mean",
        "rfid": rfid_record,
        "codebook_usage": f"used codes / K over {tokens}",
        "perplexity": f"exp(entropy of the code histogram summed over {tokens})",
        "used_codes": "codes chosen at least once over every token of the split (unused_codes: K minus it)",
        "effective_codebook_size": f"distinct token vectors over every token of the {counted} split(s)"
        + (", each image flipped at random first (data.flip), as LL-VQ-VAE's loaders do" if flip else ""),
    }
    if window:
        protocol["codebook_usage_all_tokens"] = "used codes / K over every token of the split"
        protocol["perplexity_all_tokens"] = "exp(entropy of the code histogram summed over every token of the split)"
    if any("/level_" in key for key in metrics):
        protocol["levels"] = "codebook_usage/level_r, perplexity/level_r: the same over stage r's indices alone"
    if rfid_record is None:
        del protocol["rfid"]
    else:
        protocol["rfid_protocol"] = rfid_record["id"]
    if eval_cfg.metrics.get("loss_terms", False):
        protocol["loss/reconstruction"] = (
            f"the training's {eval_cfg.loss.reconstruction} loss per image in the model's pixel space "
            "(data.pixel_mean / pixel_std, unclamped), then the mean"
        )
        protocol["loss/perceptual"] = (
            "the training's LPIPS(VGG16) per image, inputs mapped to loss.perceptual.input_range, then the mean"
        )
    if size_splits != ["test"]:
        protocol["quantized_vectors"] = f"token vectors counted over the {counted} split(s)"
    return metrics, protocol, unavailable


def _rfid_record(metric, writer: bool) -> dict | None:
    """The rFID protocol as metrics.json records it, and where its reference statistics came from; stores newly
    computed reference statistics in the cache (one writer)."""
    if metric is None:
        return None
    record = metric.protocol.as_record()
    cache = metric.reference_cache
    if metric.reference is not None:
        record["reference_statistics"] = f"read from the cache {cache} (checksum verified)"
    elif cache is not None and metric.reference_statistics is not None:
        if writer:
            save_reference(cache, *metric.reference_statistics)
        record["reference_statistics"] = f"computed in this evaluation and cached in {cache}"
    else:
        record["reference_statistics"] = "computed in this evaluation (not cached)"
    return record


def evaluate(cfg: DictConfig) -> dict[str, float]:
    payload = load_checkpoint(cfg.ckpt, trusted_modules=trusted_prefixes(cfg))
    trained = OmegaConf.create(payload["vqbench_config"])
    overrides = task_overrides()
    eval_cfg = evaluation_config(trained, cfg, overrides)
    check_targets(OmegaConf.to_container(eval_cfg, resolve=False), trusted_prefixes(cfg))
    check_config(eval_cfg)
    reconcile_codebook_size(eval_cfg)  # checkpoints written before the levels defined codebook.size
    out = output_dir()
    finished = finished_results(cfg, out)
    if finished is not None:
        print(f"skipped (already evaluated): {out}")
        return finished["metrics"]
    check_writable(out)
    print(f"evaluating {cfg.ckpt}; results go to {out} (hydra.run.dir)")
    L.seed_everything(eval_cfg.seed, workers=True, verbose=False)
    meter = CostMeter(_evaluation_device(eval_cfg)).start()
    metrics, protocol, unavailable = evaluate_checkpoint(eval_cfg, payload, cfg.ckpt, out)
    cost = {"test": meter.finish(int(protocol["images"]))}
    if rank_zero_only.rank == 0:  # under multi-process evaluation, one writer
        tokenizer = _shape_only_tokenizer(eval_cfg)
        write_results(
            out,
            {
                "kind": "eval",
                "metrics": metrics,
                "checkpoint": str(Path(cfg.ckpt).resolve()),
                "step": payload.get("global_step"),
                "protocol": protocol,
                "unavailable": unavailable,
                "overrides": overrides,
                "config": OmegaConf.to_container(eval_cfg, resolve=True),
                **compression_record(tokenizer, eval_cfg, metrics, "test", unavailable),
                "cost": cost,
            },
        )
    print(format_table(metrics, f"evaluation of {cfg.ckpt} on {protocol['images']} test images"))
    print_unavailable(unavailable)
    print(f"results: {out}")
    return metrics


def _shape_only_tokenizer(cfg: DictConfig):
    """The config's tokenizer on the meta device (shapes and the code space, no memory): for its compression figures."""
    with torch.device("meta"):
        return build_tokenizer(cfg)[0]


def _evaluation_device(eval_cfg: DictConfig) -> torch.device:
    accelerator = str(eval_cfg.trainer.get("accelerator", "auto"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
