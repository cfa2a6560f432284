"""Every config file composes, resolves and names real classes with arguments they accept; bad
overrides fail loudly. The cases are found on disk, so a new config file is tested without edits here."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

import fer.conf
from fer.data.transforms import AugmentConfig
from fer.factory import build_datamodule
from fer.models import MODELS
from fer.results import SEED_TABLE

CONF = Path(fer.conf.__file__).parent
PRIMARIES = sorted(p.stem for p in CONF.glob("*.yaml"))


def group_option(path: Path) -> tuple[str, str]:
    """conf/experiment/seed/vgg1.yaml -> ("experiment", "seed/vgg1"), as an override names it."""
    group, *option = path.relative_to(CONF).with_suffix("").parts
    return group, "/".join(option)


OPTIONS = sorted(group_option(p) for p in CONF.glob("*/**/*.yaml") if group_option(p)[0] != "hydra")


def compose_full(config_name: str, overrides: list[str] = ()) -> DictConfig:
    """Compose as ``@hydra.main`` does, including the ``hydra`` node (so ``${hydra:...}`` resolves)."""
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)


@lru_cache
def groups_of(config_name: str) -> frozenset[str]:
    return frozenset(compose_full(config_name).hydra.runtime.choices)


@pytest.fixture
def resolve(tmp_path: Path) -> Iterator:
    """Resolve a composed config the way a run sees it: Hydra's runtime set, output dir a real folder."""

    def run(cfg: DictConfig) -> dict[str, Any]:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.pop("hydra")
            if "paths" in cfg:
                cfg.paths.output_dir = str(tmp_path)
        return OmegaConf.to_container(cfg, resolve=True)

    yield run
    HydraConfig.instance().cfg = None


def targets(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``{_target_: ..., **kwargs}`` node of a resolved config."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield node
        for value in node.values():
            yield from targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from targets(value)


def check_accepts(constructor: Any, keys: set[str], where: str) -> None:
    parameters = inspect.signature(constructor).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = keys - set(parameters)
    assert not unknown, f"{where}: {sorted(unknown)} are not arguments of {constructor}"


def check_config(config: dict[str, Any], where: str) -> None:
    """``_target_``s import to callables that accept the configured keys; model and augmentation keys
    fit the network and :class:`AugmentConfig`."""
    for node in targets(config):
        target = get_object(node["_target_"])
        assert callable(target), f"{where}: {node['_target_']} is not a class or function"
        check_accepts(target, set(node) - {"_target_"}, where)
    model = config.get("model")
    if model:
        assert model["name"] in MODELS, f"{where}: model.name={model['name']} is not registered"
        check_accepts(MODELS[model["name"]], set(model) - {"name"}, where)
    aug = (config.get("data") or {}).get("aug")
    if aug is not None:
        check_accepts(AugmentConfig, set(aug), where)


def test_the_cases_were_found() -> None:
    assert {"train", "eval"} <= set(PRIMARIES)
    assert {("model", m) for m in ("vgg1", "vgg2", "vgg3", "vgg16", "vggnet")} <= set(OPTIONS)
    assert {("trainer", "cpu"), ("trainer", "gpu"), ("logger", "many"), ("callbacks", "default")} <= set(OPTIONS)


@pytest.mark.parametrize("config_name", PRIMARIES)
def test_primary_config_composes_and_resolves(config_name: str, resolve) -> None:
    config = resolve(compose_full(config_name))
    check_config(config, config_name)
    assert "???" not in str(config.get("paths", {}))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_in_every_config_that_has_the_group(group: str, option: str, resolve) -> None:
    """Arguments are checked where the option is meant to be used: under train when train has the
    group (data=folder under bench is no real combination), else under the first config that has it."""
    users = [name for name in PRIMARIES if group in groups_of(name)]
    assert users, f"no config uses the group {group}"
    checked_in = "train" if "train" in users else users[0]
    for config_name in users:
        cfg = compose_full(config_name, [f"{group}={option}"])
        assert cfg.hydra.runtime.choices[group] == option
        config = resolve(cfg)
        if config_name == checked_in:
            check_config(config, f"{config_name} {group}={option}")


def test_logger_many_gives_both_loggers(resolve) -> None:
    config = resolve(compose_full("train", ["logger=many"]))
    assert set(config["logger"]) == {"csv", "tensorboard"}


def test_hydra_runs_keep_jobs_apart() -> None:
    """Multirun jobs started in the same second must not share a folder; runs do not chdir."""
    hydra = compose_full("train").hydra
    assert OmegaConf.to_container(hydra.sweep, resolve=False)["subdir"] == "${hydra.job.num}"
    assert hydra.job.chdir is False


def test_augment_override_reaches_the_datamodule(make_cfg) -> None:
    cfg = make_cfg("data.augment=true", "data.aug.rotate=15")
    assert cfg.data.augment is True
    datamodule = build_datamodule(cfg)
    assert datamodule.augment == AugmentConfig(**{**cfg.data.aug, "rotate": 15})
    assert build_datamodule(make_cfg()).augment is None


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(MissingConfigException, match="Could not find 'model/resnet50'") as error:
        compose_full("train", ["model=resnet50"])
    message = str(error.value)
    assert "Available options in 'model'" in message
    assert all(name in message for name in ("vgg1", "vgg16", "vggnet"))


@pytest.mark.parametrize("override", ["data.batchsize=8", "trainer.max_epoch=3", "model.dropout_rte=0.1"])
def test_a_misspelt_key_is_refused(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigCompositionException, match=f"Could not override '{key}'") as error:
        compose_full("train", [override])
    assert f"Key '{key.rsplit('.', 1)[1]}' is not in struct" in str(error.value.__cause__)


def test_the_readme_seed_table_command_sweeps_every_seed_row() -> None:
    """The README's multirun over the seed's table expands to exactly its rows (a Hydra ``glob`` over
    ``seed/*`` would silently expand to no job at all: it only sees the group's top level)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python -m fer.train -m 'experiment=seed/"))
    override = command.split("'")[1]
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        jobs = BasicSweeper.split_arguments(parser.parse_overrides([override]), max_batch_size=None)
    rows = [job[0].split("=", 1)[1] for batch in jobs for job in batch]
    assert sorted(rows) == sorted(SEED_TABLE)
    for row in rows:
        compose_full("train", [f"experiment={row}"])
