"""Hydra composition of ``configs/`` with errors turned into one-line :class:`BenchError` messages."""

from __future__ import annotations

import contextlib
import difflib
import re
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from core.errors import BenchError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ROOT_CONFIG = "run"


def group_options(group: str) -> list[str]:
    """Option names of a config group (the YAML files in ``configs/<group>/``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def config_groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "local")


def _one_line(err: Exception) -> str:
    """A Hydra/OmegaConf error as one line, without the search-path dump."""
    text = str(err).split("Config search path:")[0]
    missing = re.search(r"Could not (?:find|load) '([^/']+)/([^']+)'", text)
    if missing:
        group, name = missing.groups()
        return f"unknown {group} option '{name}'; valid {group} options: {', '.join(group_options(group))}"
    cause = f" ({err.__cause__})" if err.__cause__ else ""
    return " ".join((text + cause).split())


@contextlib.contextmanager
def hydra_errors() -> Iterator[None]:
    """Translate Hydra composition and override-parsing errors into :class:`BenchError`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        raise BenchError(_one_line(err)) from None


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = ROOT_CONFIG) -> DictConfig:
    """Compose and resolve ``configs/<config_name>.yaml`` (default: the ``bench run`` root) with ``overrides``.

    Resolving here surfaces missing mandatory values (``???``) and bad interpolations as one-line errors.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    try:
        with hydra_errors(), initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides))
            OmegaConf.resolve(cfg)
    except BenchError as err:
        unknown = re.match(r"Could not override '([^']+)'", str(err))
        if not unknown:
            raise
        raise BenchError(_unknown_key_message(unknown.group(1), overrides, config_name)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise BenchError(f"no value for {', '.join(missing)}; set it on the command line, e.g. {missing[0]}=<value>")
    return cfg


def _unknown_key_message(key: str, overrides, config_name: str) -> str:
    """'unknown config key' with the closest existing key, from the config composed without that override."""
    from omegaconf import DictConfig as Dict
    from omegaconf import OmegaConf

    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        node = compose(rest, config_name)
        node = OmegaConf.select(node, parent) if parent else node
    except BenchError:
        node = None
    keys = [str(k) for k in node.keys()] if isinstance(node, Dict) else []
    close = difflib.get_close_matches(leaf, keys, n=1)
    where = f"under '{parent}'" if parent else "at the top level"
    hint = f"did you mean '{parent + '.' if parent else ''}{close[0]}'? " if close else ""
    return (f"unknown config key '{key}'; {hint}valid keys {where}: {', '.join(sorted(keys)) or '(none)'} "
            f"(prefix a new key with '+' to add it on purpose)")


def validate_overrides(overrides: list[str]) -> list[DictConfig]:
    """Check overrides, expanding ``-m`` sweeps: each swept value is composed once, the others at their first.

    Returns the composed configs, for further checks by the caller.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with hydra_errors():
        parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override in parsed:
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [None]
        choices.append([override.input_line if v is None else f"{key}={v}" for v in values])
    first = [c[0] for c in choices]
    combos = dict.fromkeys(tuple(first[:i] + [o] + first[i + 1:]) for i, opts in enumerate(choices) for o in opts)
    return [compose(combo) for combo in combos or [()]]


def check_creatable(path: str | Path, key: str) -> Path:
    """``path`` is, or can be made, a writable folder; one-line :class:`BenchError` naming ``key`` otherwise.

    Only a temporary folder inside the nearest existing ancestor is made (and removed) to find out.

    >>> check_creatable("/proc/nope/deeper", "out_dir")
    Traceback (most recent call last):
    ...
    core.errors.BenchError: cannot create out_dir=/proc/nope/deeper: /proc does not accept new folders; pass out_dir=<writable folder>
    """
    import tempfile

    path = Path(path)
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        problem = f"{probe} is a file"
    else:
        try:
            Path(tempfile.mkdtemp(dir=probe, prefix=".bench-probe-")).rmdir()
            return path
        except OSError:
            problem = f"{probe} does not accept new folders"
    raise BenchError(f"cannot create {key}={path}: {problem}; pass {key}=<writable folder>")


def hydra_output_dir(overrides: list[str], multirun: bool) -> str:
    """Where Hydra will write this ``bench run`` (``hydra.run.dir`` or ``hydra.sweep.dir``), resolved now."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    # the sweeper's parameters do not move the folder, and the compose API cannot merge a dict into
    # hydra.sweeper.params (None in its schema) the way the launcher does
    kept = [o for o in overrides if not o.lstrip("+~").startswith("hydra.sweeper.")]
    with hydra_errors(), initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(ROOT_CONFIG, overrides=kept, return_hydra_config=True)
        return str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
