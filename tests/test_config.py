import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from lightning import Trainer
from omegaconf import OmegaConf

from vqbench.build import build_datamodule, build_quantizer, build_tokenizer, build_training_module, check_config
from vqbench.errors import ConfigError
from vqbench.quantizer_settings import quantizer_class, reconcile_codebook_size
from vqbench.training.module import RECONSTRUCTION_LOSSES, AdversarialSettings

CONF = Path(__file__).resolve().parents[1] / "conf"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_base_config_has_ckpt_and_no_eval_key():
    cfg = compose_cfg()
    assert cfg.ckpt is None
    assert "eval" not in cfg
    assert compose_cfg(["+eval=true"]).eval is True
    assert {"size", "dim", "l2_norm"} <= set(cfg.codebook)


def test_defaults_are_the_spec_defaults():
    cfg = compose_cfg()
    assert (cfg.codebook.size, cfg.codebook.dim) == (512, 64)
    assert cfg.quantizer._target_.endswith("VectorQuantizer")
    tokenizer, weights = build_tokenizer(cfg)
    assert weights == {"codebook": 1.0, "commitment": 0.25, "entropy": 0.0}
    assert sum(p.numel() for p in tokenizer.parameters()) == 4_928_835


@pytest.mark.parametrize("group", ["quantizer", "model", "data", "loss", "trainer"])
def test_every_option_of_every_group_composes_and_builds(group):
    options = group_options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose_cfg([f"{group}={option}", "codebook.dim=8", "codebook.size=512"])
        OmegaConf.resolve(cfg)
        check_config(cfg)
        if group in ("quantizer", "model"):
            tokenizer, weights = build_tokenizer(cfg)
            assert tokenizer.quantizer.dim == 8
            assert weights == {k.removesuffix("_weight"): v for k, v in cfg.quantizer.items() if k.endswith("_weight")}
        if group == "data":
            datamodule = build_datamodule(cfg)
            assert (datamodule.batch_size, datamodule.resolution) == (cfg.data.batch_size, cfg.data.resolution)
            assert (datamodule.flip, datamodule.cache) == (cfg.data.flip, cfg.data.cache)
        if group == "loss":
            cfg.loss.perceptual.pretrained = False
            module = build_training_module(cfg)
            assert module.reconstruction_loss is RECONSTRUCTION_LOSSES[cfg.loss.reconstruction]
            assert (module.perceptual is not None) == (cfg.loss.perceptual.weight > 0)
            assert (module.discriminator is not None) == (cfg.loss.adversarial is not None)
            if cfg.loss.adversarial is not None:
                assert module.adversarial == AdversarialSettings(**cfg.loss.adversarial)
        if group == "trainer":
            # every key is a lightning.Trainer argument (docs/training.md: "any lightning.Trainer argument")
            assert set(cfg.trainer) <= set(inspect.signature(Trainer).parameters)


@pytest.mark.parametrize("dim", [4, 16, 64])
@pytest.mark.parametrize("quantizer", ["vq", "ema", "fsq"])
def test_sweep_grid_of_the_readme_builds(quantizer, dim):
    quantizer_module, _ = build_quantizer(compose_cfg([f"quantizer={quantizer}", f"codebook.dim={dim}"]).quantizer)
    assert quantizer_module.dim == dim
    assert quantizer_module.codebook_size == 512


def test_entropy_weight_switches_the_entropy_term_on():
    quantizer, weights = build_quantizer(compose_cfg(["quantizer.entropy_weight=0.1"]).quantizer)
    assert quantizer.compute_entropy and weights["entropy"] == 0.1


@pytest.mark.parametrize("name", ["lfq", "bsq", "ibq"])
def test_optional_losses_are_computed_when_any_of_their_weights_is_not_zero(name):
    """The class's optional_losses name the switch and its terms; the switch follows their weights."""
    switch, terms = next(iter(quantizer_class(compose_cfg([f"quantizer={name}"]).quantizer).optional_losses.items()))
    off = [f"quantizer={name}", "codebook.size=256", *(f"quantizer.{term}_weight=0" for term in terms)]
    assert getattr(build_quantizer(compose_cfg(off).quantizer)[0], switch) is False
    one_on = [*off, f"quantizer.{terms[-1]}_weight=0.5"]
    assert getattr(build_quantizer(compose_cfg(one_on).quantizer)[0], switch) is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["~quantizer.entropy_weight"],
            r"quantizer.entropy_weight is missing: VectorQuantizer returns the losses codebook, commitment, entropy",
        ),
        (
            ["+quantizer.perceptual_weight=1"],
            r"quantizer.perceptual_weight weighs no loss: VectorQuantizer returns the losses codebook, commitment, "
            "entropy",
        ),
        (
            ["quantizer=fsq", "+quantizer.commitment_weight=1"],
            r"quantizer.commitment_weight weighs no loss: FSQ returns no",
        ),
        (
            ["quantizer._target_=vqbench.quantizers.Nope"],
            r"quantizer._target_=vqbench.quantizers.Nope cannot be imported",
        ),
        (
            ["quantizer._target_=torch.nn.Linear"],
            r"quantizer._target_=torch.nn.Linear is not a vqbench.quantizers.Quantizer",
        ),
    ],
)
def test_loss_weights_must_match_the_losses_the_class_declares(overrides, message):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)
    with pytest.raises(ConfigError, match=message):
        build_quantizer(cfg.quantizer)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("codebook.dim=0", "codebook.dim must be a positive integer, got 0"),
        ("codebook.size=-3", "codebook.size must be a positive integer"),
        ("data.batch_size=0", "data.batch_size"),
        ("quantizer.commitment_weight=abc", "quantizer.commitment_weight must be a number"),
        ("loss.reconstruction=huber", "loss.reconstruction must be one of mse, l1"),
        (
            "optimizer.schedule=cosine",
            "optimizer.schedule must be one of constant, linear, annealing_linear, exponential",
        ),
        ("optimizer.gamma=-0.5", "optimizer.gamma .* must be a number >= 0"),
        ("metrics.effective_size_splits=[train,holdout]", "metrics.effective_size_splits must be a list of train"),
    ],
)
def test_bad_values_are_reported_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_cfg([override]))


def test_bad_constructor_argument_becomes_a_config_error():
    cfg = compose_cfg(["codebook.l2_norm=true", "quantizer.l2_norm_mode=cosine"])
    with pytest.raises(ConfigError, match="l2_norm_mode"):
        build_tokenizer(cfg)


def test_fsq_levels_define_the_codebook_size():
    """quantizer.levels are the source of truth of an FSQ codebook: codebook.size becomes their product, also when
    the levels come from the FSQ paper's table for a codebook.size (1024 -> [8,5,5,5], 1000 codes)."""
    overrides = ["quantizer=fsq", "quantizer.levels=[8,5,5,5]"]
    cfg = compose_cfg(overrides)  # codebook.size stays the base config's 512
    reconcile_codebook_size(cfg, overrides)
    assert cfg.codebook.size == 1000 and list(cfg.quantizer.levels) == [8, 5, 5, 5]
    assert build_quantizer(cfg.quantizer)[0].codebook_size == 1000
    cfg = compose_cfg(["quantizer=sfsq", "codebook.size=1024"])
    reconcile_codebook_size(cfg, ["quantizer=sfsq", "codebook.size=1024"])
    assert cfg.codebook.size == 1000 and list(cfg.quantizer.levels) == [8, 5, 5, 5]
    vq = compose_cfg(["codebook.size=1000"])
    reconcile_codebook_size(vq)
    assert vq.codebook.size == 1000 and "levels" not in vq.quantizer


def test_fsq_levels_and_codebook_size_that_disagree_are_refused():
    overrides = ["quantizer=fsq", "quantizer.levels=[8,5,5,5]", "codebook.size=1024"]
    with pytest.raises(ConfigError, match=r"quantizer.levels=\[8,5,5,5\] give 1000 codes but codebook.size=1024"):
        reconcile_codebook_size(compose_cfg(overrides), overrides)
    with pytest.raises(ConfigError, match="no recommended levels for codebook.size=1000"):
        reconcile_codebook_size(compose_cfg(["quantizer=fsq", "codebook.size=1000"]))
    # built without the reconciliation, the quantizer itself refuses the contradiction
    with pytest.raises(ConfigError, match="give 1000 codes but codebook.size=512"):
        build_quantizer(compose_cfg(["quantizer=fsq", "quantizer.levels=[8,5,5,5]"]).quantizer)


def test_codebook_init_kmeans_is_refused_for_quantizers_without_a_learned_codebook():
    with pytest.raises(ConfigError, match="codebook.init=kmeans needs a quantizer with a learned codebook"):
        check_config(compose_cfg(["quantizer=fsq", "codebook.init=kmeans"]))
    with pytest.raises(ConfigError, match="codebook.init must be one of"):
        build_tokenizer(compose_cfg(["codebook.init=random"]))
    with pytest.raises(
        ConfigError, match="codebook.init=random is not .* VectorQuantizer takes codebook.init=uniform or"
    ):
        check_config(compose_cfg(["codebook.init=random"]))
    quantizer, _ = build_quantizer(compose_cfg(["quantizer=ema", "codebook.init=kmeans"]).quantizer)
    assert quantizer.kmeans.iterations == 10 and quantizer.kmeans.batches == 1
