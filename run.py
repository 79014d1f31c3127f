"""vqbench entry point: `python run.py [overrides]` trains, `python run.py +eval=true ckpt=PATH` evaluates.

See README.md for the interface and conf/ for every option.
"""

import hydra
from omegaconf import DictConfig

import vqbench.sweep_configs  # noqa: F401  (registers the `sweep` group: the files of sweeps/)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from vqbench.cli import run

    run(cfg)


if __name__ == "__main__":
    main()
