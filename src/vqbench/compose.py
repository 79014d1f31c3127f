"""The config that ``python run.py OVERRIDES`` would compose, for the commands that are not Hydra apps
(``python -m vqbench.convert``, ``python -m vqbench.tokenize``).

The config groups live in the repository's ``conf/`` folder, beside ``src/``: vqbench runs from a clone
(``pip install -e .``), as ``run.py`` does.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import vqbench.sweep_configs  # noqa: F401  (registers the `sweep` group: the files of sweeps/)
from vqbench.errors import ConfigError
from vqbench.quantizer_settings import reconcile_codebook_size

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with Hydra command-line ``overrides``; a bad override is a ConfigError naming it."""
    if not (CONF_DIR / "config.yaml").is_file():
        raise ConfigError(
            f"vqbench's conf/ folder is not at {CONF_DIR}; run from a clone of the repository installed with "
            "pip install -e ."
        )
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"{' '.join(overrides)}: {str(error).splitlines()[0]}") from None
    reconcile_codebook_size(cfg, overrides)  # as run.py does: FSQ levels define codebook.size
    return cfg
