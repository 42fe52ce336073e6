"""One frozen, typed Settings object built from an INI file plus command-line flags."""

from __future__ import annotations

import argparse
import configparser
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.ini"

DISTANCES = ("ours", "modmse", "mse", "cos")
DEVICES = ("auto", "cpu", "cuda")
DEPTHS = (2, 3, 4)
INITS = ("noise", "real", "mean", "herding", "kmeans")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
NETWORKS = ("seed", "convnet", "me-convnet")
ABSENT_VOXELS = ("skip", "background")
MATCHED_LAYERS = ("all", "head")
BASELINES = ("random-real", "class-mean", "herding", "kmeans")
# Evaluation architectures (models/MNIST.py ARCHITECTURES; a test keeps the two lists equal). The first listed
# is the headline figure; "all" lists every one, ConvNet first.
ARCHITECTURES = ("convnet", "mlp", "lenet", "alexnet", "vgg11", "resnet18")
# Transforms the match may draw (dd3d/pointsets.py MATCH_KINDS; a test keeps the two lists equal).
MATCH_KINDS = ("shift", "scale", "rotate", "cutout")
# How far they go (dd3d/pointsets.py MATCH_RANGES).
MATCH_RANGES = ("dsa", "dc")
BATCHED = ("auto", "true", "false")
PROJECTIONS = ("binary", "splat")
PRECISIONS = ("fp32", "bf16")
EVAL_AUGMENTS = ("dc", "dsa")  # dd3d/augment.py STRATEGIES
NORMS = ("instance", "none")
# What the synthetic clouds match: the gradients real digits induce (DC) or their mean embedding (DM).
OBJECTIVES = ("gradient", "distribution")
DM_LAYERS = ("last", "all")
DM_KERNELS = ("linear", "gaussian")
INNER_DATA = ("synthetic", "real")


# Network pool members other than DC's ConvNet: evaluation architectures that also match, on the dense splat
# image in either path (the larger ones, VGG-11 and ResNet-18, would cost more than the rest of the pool).
POOL_FAMILIES = ("mlp", "lenet", "alexnet")


@dataclass(frozen=True)
class PoolMember:
    """One network of DISTILLATION.network_pool: DC's ConvNet of this width, depth and norm (family convnet),
    or one of POOL_FAMILIES (models/MNIST.py, dense; width, depth and norm unused)."""

    width: int
    depth: int
    norm: str
    family: str = "convnet"

    def __str__(self) -> str:
        if self.family != "convnet":
            return self.family
        return f"{self.width}x{self.depth}" + ("" if self.norm == "instance" else f"-{self.norm}")


def parse_network_pool(value: str) -> tuple[PoolMember, ...]:
    """``WIDTHxDEPTH[-NORM] | FAMILY, ...`` (empty: no pool) -> members; SettingsError names the bad entry."""
    members = []
    for item in (v.strip().lower() for v in value.split(",")):
        if not item:
            continue
        if item in POOL_FAMILIES:
            members.append(PoolMember(0, 0, "", item))
            continue
        match = re.fullmatch(r"(\d{1,4})x(\d)(?:-(\w+))?", item, re.ASCII)
        width, depth, norm = (int(match[1]), int(match[2]), match[3] or "instance") if match else (0, 0, "")
        if not (8 <= width <= 512 and depth in DEPTHS and norm in NORMS):
            raise SettingsError(f"DISTILLATION.network_pool = {value!r}: bad entry {item!r} (WIDTHxDEPTH[-NORM] "
                                f"with width 8-512, depth {'/'.join(map(str, DEPTHS))}, norm {'/'.join(NORMS)}; "
                                f"or {'/'.join(POOL_FAMILIES)})")
        members.append(PoolMember(width, depth, norm))
    return tuple(members)


def repo_path(text: str) -> Path:
    """A path setting: ``~`` expanded, relative paths taken from the repository root (not the working directory)."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


class SettingsError(ValueError):
    """Bad configuration: the message is one line naming the section, key and value."""


@dataclass(frozen=True)
class Settings:
    # [DEFAULT]
    logging_parent: Path
    experiment_name: str
    seed: int
    device: str
    log: bool
    # [MODEL]
    pytorch: bool
    network: str
    net_depth: int
    halo: int
    absent_voxels: str
    batch_size: int
    dist_opt: str
    dist_optimizer: str
    dist_lr: float
    dist_lr_schedule: str
    dist_momentum: float
    classifier_lr: float
    # [DISTILLATION]
    cad_per_class: int
    num_points: int
    total_iterations: int
    save_cad_every: int
    eval_iterations: tuple[int, ...]
    init: str
    init_spread: float
    matched_layers: str
    splat: bool
    augment_match: bool
    augment_kinds: str
    augment_ranges: str
    objective: str
    class_ce: float
    dm_layers: str
    dm_kernel: str
    pixel_match: float
    network_pool: str
    reinit_net: bool
    outer_loop: int
    inner_loop: int
    inner_data: str
    inner_augment: bool
    net_lr: float
    distillation_checkpoint_dir: Path | None
    # [MNIST]
    dataset_dir: Path
    threshold: int
    # [EVALUATION]
    eval_models: int
    eval_epochs: int
    eval_batch_size: int
    eval_momentum: float
    eval_weight_decay: float
    augment: bool
    eval_augment_strategy: str
    augment_test: bool
    test_size: int
    eval_architectures: tuple[str, ...]
    eval_architecture_lr: str
    eval_batched: str
    eval_projection: str
    eval_normalize: bool
    eval_precision: str
    eval_compile: bool

    def eval_lr(self, architecture: str) -> float:
        """Learning rate of an evaluation architecture: EVALUATION.architecture_lr, else MODEL.classifier_lr."""
        return _parse_architecture_lr(self.eval_architecture_lr).get(architecture, self.classifier_lr)

    @property
    def init_set(self) -> Path | None:
        """DISTILLATION.init as a saved set to start from (relative paths: to the repository root); None when it
        names one of INITS."""
        return None if self.init in INITS else repo_path(self.init)

    @property
    def mode(self) -> str:
        if self.network in ("convnet", "me-convnet"):
            return self.network
        return "pytorch" if self.pytorch else "minkowski"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings, tuples as lists)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else (
                list(value) if isinstance(value, tuple) else ("" if value is None else value))
        out["mode"] = self.mode
        return out


# INI schema: section -> key -> (Settings field, parser). "raw" keys are resolved after all
# overrides are applied, because their meaning depends on other keys.
_STR, _INT, _FLOAT, _BOOL, _PATH, _RAW = "str", "int", "float", "bool", "path", "raw"
_OPTIONAL_PATH = "optional path"  # empty = None
SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "DEFAULT": {
        "logging_parent": ("logging_parent", _PATH),
        "experiment_name": ("experiment_name", _STR),
        "seed": ("seed", _INT),
        "device": ("device", _STR),
        "log": ("log", _BOOL),
    },
    "MODEL": {
        "pytorch": ("pytorch", _BOOL),
        "network": ("network", _STR),
        "net_depth": ("net_depth", _RAW),
        "halo": ("halo", _INT),
        "absent_voxels": ("absent_voxels", _STR),
        "batch_size": ("batch_size", _INT),
        "dist_opt": ("dist_opt", _STR),
        "dist_optimizer": ("dist_optimizer", _STR),
        "dist_lr": ("dist_lr", _FLOAT),
        "dist_lr_schedule": ("dist_lr_schedule", _STR),
        "dist_momentum": ("dist_momentum", _FLOAT),
        "classifier_lr": ("classifier_lr", _FLOAT),
    },
    "DISTILLATION": {
        "cad_per_class": ("cad_per_class", _INT),
        "num_points": ("num_points", _INT),
        "total_iterations": ("total_iterations", _INT),
        "save_cad_every": ("save_cad_every", _INT),
        "eval_iterations": ("eval_iterations", _RAW),
        "init": ("init", _STR),
        "init_spread": ("init_spread", _FLOAT),
        "matched_layers": ("matched_layers", _STR),
        "splat": ("splat", _BOOL),
        "augment_match": ("augment_match", _BOOL),
        "augment_kinds": ("augment_kinds", _RAW),
        "augment_ranges": ("augment_ranges", _STR),
        "objective": ("objective", _STR),
        "class_ce": ("class_ce", _FLOAT),
        "dm_layers": ("dm_layers", _STR),
        "dm_kernel": ("dm_kernel", _STR),
        "pixel_match": ("pixel_match", _FLOAT),
        "network_pool": ("network_pool", _STR),
        "reinit_net": ("reinit_net", _BOOL),
        "outer_loop": ("outer_loop", _INT),
        "inner_loop": ("inner_loop", _INT),
        "inner_data": ("inner_data", _STR),
        "inner_augment": ("inner_augment", _BOOL),
        "net_lr": ("net_lr", _FLOAT),
        "distillation_checkpoint_dir": ("distillation_checkpoint_dir", _OPTIONAL_PATH),
    },
    "MNIST": {
        "dataset_dir": ("dataset_dir", _PATH),
        "threshold": ("threshold", _INT),
    },
    "EVALUATION": {
        "models": ("eval_models", _INT),
        "epochs": ("eval_epochs", _INT),
        "batch_size": ("eval_batch_size", _INT),
        "momentum": ("eval_momentum", _FLOAT),
        "weight_decay": ("eval_weight_decay", _FLOAT),
        "augment": ("augment", _BOOL),
        "augment_strategy": ("eval_augment_strategy", _STR),
        "augment_test": ("augment_test", _BOOL),
        "test_size": ("test_size", _INT),
        "architectures": ("eval_architectures", _RAW),
        "architecture_lr": ("eval_architecture_lr", _STR),
        "batched": ("eval_batched", _STR),
        "projection": ("eval_projection", _STR),
        "normalize": ("eval_normalize", _BOOL),
        "precision": ("eval_precision", _STR),
        "compile": ("eval_compile", _BOOL),
    },
}

# Keys of the seed project's INI (kghandour/dd3d configs/default.ini) that configure its ShapeNet / PointNet++
# parts or folder names this project fixes: accepted and ignored, so an INI written for the seed still loads.
SEED_ONLY_KEYS: dict[str, frozenset[str]] = {
    "DEFAULT": frozenset({"tensorboard_folder_name", "log_folder_name", "num_workers"}),
    "SHAPENET": frozenset({"dataset_dir", "num_points"}),
    "MODEL": frozenset({"checkpoint_dir", "load_ckpt_name", "epoch", "dist_beta_1", "dist_beta_2", "num_votes"}),
    "DISTILLATION": frozenset({"export_folder_name"}),
}

# Named flags -> (section, key). Everything else goes through --set SECTION.key=value.
_FLAG_KEYS = {
    "exp": ("DEFAULT", "experiment_name"),
    "log": ("DEFAULT", "log"),
    "seed": ("DEFAULT", "seed"),
    "device": ("DEFAULT", "device"),
    "pytorch": ("MODEL", "pytorch"),
    "network": ("MODEL", "network"),
    "distance": ("MODEL", "dist_opt"),
    "depth": ("MODEL", "net_depth"),
    "iterations": ("DISTILLATION", "total_iterations"),
    "clouds_per_class": ("DISTILLATION", "cad_per_class"),
    "eval_models": ("EVALUATION", "models"),
    "eval_epochs": ("EVALUATION", "epochs"),
    "architectures": ("EVALUATION", "architectures"),
}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises SettingsError (one line, exit 2 from the entry script) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise SettingsError(f"{' '.join(message.split())} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog="mnist_distill.py",
        description="Distill MNIST into a few sparse 3D point clouds per class by gradient matching.",
        allow_abbrev=False,
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="INI file laid over configs/default.ini (only the keys it changes are needed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=value",
                   help="override any INI key, e.g. --set EVALUATION.test_size=1000 (repeatable)")
    p.add_argument("--exp", metavar="NAME", help="experiment name, appended to the run folder")
    p.add_argument("--log", action=argparse.BooleanOptionalAction, default=None,
                   help="write TensorBoard events and a text log (--no-log: results and exports only)")
    p.add_argument("--pytorch", action=argparse.BooleanOptionalAction, default=None,
                   help="distill through the dense PyTorch network instead of MinkowskiEngine")
    p.add_argument("--network", choices=("auto", *NETWORKS),
                   help="network the gradients are matched in (MODEL.network): auto (DC's ConvNet of the path: "
                        "me-convnet, or convnet with --pytorch), seed (the seed's network of the path), convnet "
                        "(dense, with --pytorch) or me-convnet (MinkowskiEngine)")
    p.add_argument("--seed", type=int, help="random seed (python, numpy, torch)")
    p.add_argument("--device", choices=DEVICES, help="where the arithmetic runs (auto: cuda if available)")
    p.add_argument("--iterations", type=int, help="outer iterations (coordinate updates)")
    p.add_argument("--clouds-per-class", type=int, help="synthetic clouds per class")
    p.add_argument("--distance", choices=DISTANCES, help="gradient distance (distillation_loss.py)")
    p.add_argument("--depth", type=int, choices=DEPTHS, help="blocks of the distillation network")
    p.add_argument("--eval-models", type=int, help="fresh evaluation models per evaluation")
    p.add_argument("--eval-epochs", type=int, help="training epochs per evaluation model")
    p.add_argument("--architectures", metavar="LIST",
                   help=f"evaluation architectures, comma-separated ({','.join(ARCHITECTURES)}) or all; "
                        "the first is the headline figure")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", type=Path, metavar="PATH",
                       help="continue a run from its checkpoint (synthetic.pt or its run folder) in a new run "
                            "folder; the saved settings are the base, flags may change only what does not "
                            "alter the distillation (names, logging, evaluation, more iterations)")
    group.add_argument("--eval-only", type=Path, metavar="PATH",
                       help="evaluate a saved synthetic set (synthetic.pt or a run folder) without distilling")
    group.add_argument("--baseline", choices=BASELINES,
                       help="evaluate a set made of real digits instead of distilling: random-real (K random "
                            "digits per class), class-mean (the thresholded mean digit), herding (K digits per "
                            "class whose running mean tracks the class mean, on binarised pixels) or kmeans (the K "
                            "digits nearest the centres of a k-means of each class's pixels), same num_points")
    return p


@dataclass(frozen=True)
class Invocation:
    """What to do with the settings: a fresh run, a resumed one, or an evaluation of a saved set."""

    resume: Path | None = None
    eval_only: Path | None = None
    baseline: str | None = None


def _printable(text: str) -> str:
    """``text`` as is, or quoted and escaped when it holds a newline or another control character (one line)."""
    return text if text.isprintable() else repr(text)


def _read_ini(path: Path) -> dict[str, dict[str, str]]:
    # [DEFAULT] is read as an ordinary section: no inheritance, so each section's keys are its own.
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
    shown = _printable(str(path))
    try:
        # Decoded whole, so a bad byte is reported with its line (a text-mode read decodes chunk by chunk).
        parser.read_string(Path(path).read_bytes().decode("utf-8"), source=str(path))
    except OSError as e:
        raise SettingsError(f"cannot read config {shown}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise SettingsError(f"config {shown} is not UTF-8 text (byte {e.object[e.start]:#04x} on line {line})") \
            from None
    except ValueError as e:  # e.g. a NUL in the path, which argv cannot carry but a caller can
        raise SettingsError(f"cannot read config {str(path)!r}: {e}") from None
    except configparser.Error as e:
        raise SettingsError(f"malformed config {shown}: {str(e).splitlines()[0]}") from None
    raw: dict[str, dict[str, str]] = {"DEFAULT": {}}
    for section in parser.sections():
        if section not in SCHEMA and section not in SEED_ONLY_KEYS:
            raise SettingsError(f"unknown section [{section}] in {shown}")
        ignored = SEED_ONLY_KEYS.get(section, frozenset())
        raw[section] = {k: v for k, v in parser.items(section) if k not in ignored}
        if section not in SCHEMA:
            del raw[section]
            continue
        for key in raw[section]:
            if key not in SCHEMA[section]:
                raise SettingsError(f"unknown key {section}.{key} in {shown}")
    return raw


def _apply_override(raw: dict[str, dict[str, str]], item: str) -> None:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise SettingsError(f"--set expects SECTION.key=value, got {item!r}")
    name, value = item.split("=", 1)
    section, key = name.split(".", 1)
    section = section.upper() if section.upper() in SCHEMA else section
    if section not in SCHEMA:
        raise SettingsError(_printable(f"unknown section [{section}] in --set {item}"))
    if key not in SCHEMA[section]:
        raise SettingsError(_printable(f"unknown key {section}.{key} in --set {item}"))
    raw.setdefault(section, {})[key] = value.strip()


def _convert(section: str, key: str, value: str, kind: str) -> Any:
    shown = repr(value) if len(value) <= 80 else repr(value[:80]) + "..."  # the message stays one short line
    if "\x00" in value:  # an INI can hold one; os calls would fail on it much later
        raise SettingsError(f"{section}.{key} = {shown} contains a NUL character")
    try:
        if kind == _INT:
            return int(value)
        if kind == _FLOAT:
            number = float(value)
            if not math.isfinite(number):  # nan slips through every range check, inf through most
                raise ValueError
            return number
        if kind == _BOOL:
            lowered = value.strip().lower()
            if lowered not in configparser.ConfigParser.BOOLEAN_STATES:
                raise ValueError
            return configparser.ConfigParser.BOOLEAN_STATES[lowered]
        if kind == _OPTIONAL_PATH and not value.strip():
            return None
        if kind in (_PATH, _OPTIONAL_PATH):
            return repo_path(value.strip() if kind == _OPTIONAL_PATH else value)
        return value.strip()
    except (ValueError, RuntimeError):  # RuntimeError: expanduser() of ~ for an unknown user
        raise SettingsError(f"{section}.{key} = {shown} is not a valid {'finite float' if kind == _FLOAT else kind}") \
            from None


def _resolve_depth(value: str, pytorch: bool, network: str) -> int:
    if value.strip().lower() == "auto":
        return 3 if pytorch or network != "seed" else 2
    depth = _convert("MODEL", "net_depth", value, _INT)
    if depth not in DEPTHS:
        raise SettingsError(f"MODEL.net_depth = {value!r} is not supported (use auto or 2-4)")
    return depth


def _names(key: str, value: str, allowed: Sequence[str], noun: str, more: str = "") -> tuple[str, ...]:
    """A comma list of names from ``allowed`` (case and spaces ignored, duplicates dropped, order kept);
    SettingsError when it is empty or names something else (``more``: other spellings the key takes)."""
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not names:
        raise SettingsError(f"{key} = {value!r} is empty (list one or more of {'/'.join(allowed)}{more})")
    for name in names:
        if name not in allowed:
            raise SettingsError(f"{key} = {value!r} names an unknown {noun} {name!r} ({'/'.join(allowed)}{more})")
    return tuple(dict.fromkeys(names))


def _resolve_architectures(value: str) -> tuple[str, ...]:
    if [v.strip().lower() for v in value.split(",") if v.strip()] == ["all"]:
        return ARCHITECTURES
    return _names("EVALUATION.architectures", value, ARCHITECTURES, "architecture", ", or all")


def _resolve_augment_kinds(value: str) -> str:
    """``DISTILLATION.augment_kinds`` in one spelling (so that a resume compares kinds, not how they were typed)."""
    return ",".join(_names("DISTILLATION.augment_kinds", value, MATCH_KINDS, "transform"))


def _parse_architecture_lr(value: str) -> dict[str, float]:
    """``name:lr, ...`` (empty: none) -> {name: lr}; SettingsError names the bad entry."""
    out: dict[str, float] = {}
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        name, _, lr = item.partition(":")
        name = name.strip().lower()
        try:
            rate = float(lr)
        except ValueError:
            rate = float("nan")
        if name not in ARCHITECTURES or not 0 < rate < float("inf"):
            raise SettingsError(f"EVALUATION.architecture_lr = {value!r}: bad entry {item!r} (name:lr with name one "
                                f"of {'/'.join(ARCHITECTURES)} and a finite lr > 0)")
        out[name] = rate
    return out


def _resolve_eval_iterations(value: str, total: int) -> tuple[int, ...]:
    if value.strip().lower() == "auto":
        wanted = [0, 250, total // 4, total // 2, 3 * total // 4]
    else:
        wanted = [_convert("DISTILLATION", "eval_iterations", v, _INT)
                  for v in value.split(",") if v.strip()]
        if any(i < 0 for i in wanted):
            raise SettingsError(f"DISTILLATION.eval_iterations = {value!r} has a negative entry")
    return tuple(sorted({i for i in wanted if i < total} | {total}))


def _validate(s: Settings) -> None:
    def check(ok: bool, section: str, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise SettingsError(f"{section}.{key} = {value!r} is out of range ({rule})")

    check(s.device in DEVICES, "DEFAULT", "device", s.device, "auto, cpu or cuda")
    check(bool(s.experiment_name) and "/" not in s.experiment_name and s.experiment_name.isprintable(), "DEFAULT",
          "experiment_name", s.experiment_name, "non-empty, printable, no '/'")
    check(0 <= s.seed < 2**32, "DEFAULT", "seed", s.seed, "0 to 2**32 - 1, numpy's seed range")
    check(s.dist_opt in DISTANCES, "MODEL", "dist_opt", s.dist_opt, "/".join(DISTANCES))
    check(s.network in NETWORKS, "MODEL", "network", s.network, "/".join(NETWORKS))
    check(s.network != "convnet" or s.pytorch, "MODEL", "network", s.network,
          "convnet is the dense ConvNet: needs the PyTorch path (--pytorch); me-convnet is its MinkowskiEngine twin")
    check(s.network != "me-convnet" or not s.pytorch, "MODEL", "network", s.network,
          "me-convnet is the MinkowskiEngine ConvNet: not with --pytorch; convnet is its dense twin")
    check(s.network == "seed" or s.splat, "DISTILLATION", "splat", s.splat,
          f"network {s.network} reads splatted occupancy: needs DISTILLATION.splat=true")
    check(not s.augment_match or "cutout" not in s.augment_kinds.split(",") or s.splat, "DISTILLATION",
          "augment_kinds", s.augment_kinds, "cutout drops points from the splatted occupancy: needs "
          "DISTILLATION.splat=true")
    check(s.augment_ranges in MATCH_RANGES, "DISTILLATION", "augment_ranges", s.augment_ranges,
          "/".join(MATCH_RANGES))
    check(s.absent_voxels in ABSENT_VOXELS, "MODEL", "absent_voxels", s.absent_voxels, "/".join(ABSENT_VOXELS))
    check(s.halo >= 0, "MODEL", "halo", s.halo, ">= 0 cells (32 or more: the full 32 x 32 domain)")
    check(s.distillation_checkpoint_dir is None or not s.distillation_checkpoint_dir.is_file(), "DISTILLATION",
          "distillation_checkpoint_dir", str(s.distillation_checkpoint_dir), "a folder, not a file")
    check(s.dist_optimizer in OPTIMIZERS, "MODEL", "dist_optimizer", s.dist_optimizer, "/".join(OPTIMIZERS))
    check(s.batch_size >= 1, "MODEL", "batch_size", s.batch_size, ">= 1")
    check(s.dist_lr > 0, "MODEL", "dist_lr", s.dist_lr, "> 0")
    check(s.dist_lr_schedule in LR_SCHEDULES, "MODEL", "dist_lr_schedule", s.dist_lr_schedule, "/".join(LR_SCHEDULES))
    check(0 <= s.dist_momentum < 1, "MODEL", "dist_momentum", s.dist_momentum, "0 <= m < 1")
    check(s.classifier_lr > 0, "MODEL", "classifier_lr", s.classifier_lr, "> 0")
    check(s.cad_per_class >= 1, "DISTILLATION", "cad_per_class", s.cad_per_class, ">= 1")
    check(s.num_points >= 1, "DISTILLATION", "num_points", s.num_points, ">= 1")
    check(s.total_iterations >= 1, "DISTILLATION", "total_iterations", s.total_iterations, ">= 1")
    check(s.save_cad_every >= 0, "DISTILLATION", "save_cad_every", s.save_cad_every, ">= 0")
    check(s.outer_loop >= 1, "DISTILLATION", "outer_loop", s.outer_loop, ">= 1")
    check(s.inner_loop >= 0, "DISTILLATION", "inner_loop", s.inner_loop, ">= 0")
    check(s.inner_data in INNER_DATA, "DISTILLATION", "inner_data", s.inner_data, "/".join(INNER_DATA))
    check(s.net_lr > 0, "DISTILLATION", "net_lr", s.net_lr, "> 0")
    check(s.init in INITS or (s.init.strip() != "" and s.init_set.exists()), "DISTILLATION", "init", s.init,
          f"{'/'.join(INITS)} or an existing saved set: a .pt or a run folder")
    check(0 <= s.init_spread <= 0.5, "DISTILLATION", "init_spread", s.init_spread, "0 to 0.5 px")
    check(s.matched_layers in MATCHED_LAYERS, "DISTILLATION", "matched_layers", s.matched_layers,
          "/".join(MATCHED_LAYERS))
    check(0 <= s.threshold <= 255, "MNIST", "threshold", s.threshold, "0-255")
    check(s.eval_models >= 1, "EVALUATION", "models", s.eval_models, ">= 1")
    check(s.eval_epochs >= 1, "EVALUATION", "epochs", s.eval_epochs, ">= 1")
    check(s.eval_batch_size >= 1, "EVALUATION", "batch_size", s.eval_batch_size, ">= 1")
    check(0 <= s.eval_momentum < 1, "EVALUATION", "momentum", s.eval_momentum, "0 <= m < 1")
    check(s.eval_weight_decay >= 0, "EVALUATION", "weight_decay", s.eval_weight_decay, ">= 0")
    check(0 <= s.test_size <= 10000, "EVALUATION", "test_size", s.test_size, "0-10000")
    check(s.eval_batched in BATCHED, "EVALUATION", "batched", s.eval_batched, "/".join(BATCHED))
    check(s.eval_augment_strategy in EVAL_AUGMENTS, "EVALUATION", "augment_strategy", s.eval_augment_strategy,
          "/".join(EVAL_AUGMENTS))
    check(s.eval_precision in PRECISIONS, "EVALUATION", "precision", s.eval_precision, "/".join(PRECISIONS))
    check(s.eval_projection in PROJECTIONS, "EVALUATION", "projection", s.eval_projection, "/".join(PROJECTIONS))
    _parse_architecture_lr(s.eval_architecture_lr)
    check(s.objective in OBJECTIVES, "DISTILLATION", "objective", s.objective, "/".join(OBJECTIVES))
    check(s.objective == "gradient" or s.network in ("convnet", "me-convnet"), "DISTILLATION", "objective",
          s.objective, "distribution matching embeds with DC's ConvNet: needs MODEL.network convnet or me-convnet")
    check(s.class_ce >= 0, "DISTILLATION", "class_ce", s.class_ce, ">= 0")
    check(s.class_ce == 0 or s.objective == "distribution", "DISTILLATION", "class_ce", s.class_ce,
          "a classification term beside the embeddings: needs DISTILLATION.objective=distribution")
    check(s.dm_layers in DM_LAYERS, "DISTILLATION", "dm_layers", s.dm_layers, "/".join(DM_LAYERS))
    check(s.dm_layers == "last" or s.objective == "distribution", "DISTILLATION", "dm_layers", s.dm_layers,
          "every block's embedding: needs DISTILLATION.objective=distribution")
    check(s.dm_kernel in DM_KERNELS, "DISTILLATION", "dm_kernel", s.dm_kernel, "/".join(DM_KERNELS))
    check(s.dm_kernel == "linear" or s.objective == "distribution", "DISTILLATION", "dm_kernel", s.dm_kernel,
          "a kernel between embeddings: needs DISTILLATION.objective=distribution")
    check(s.dm_kernel == "linear" or s.dm_layers == "last", "DISTILLATION", "dm_kernel", s.dm_kernel,
          "the last embedding alone: needs DISTILLATION.dm_layers=last")
    check(s.pixel_match >= 0, "DISTILLATION", "pixel_match", s.pixel_match, ">= 0")
    check(s.pixel_match == 0 or s.objective == "distribution", "DISTILLATION", "pixel_match", s.pixel_match,
          "the mean splat image beside the embeddings: needs DISTILLATION.objective=distribution")
    if pool := parse_network_pool(s.network_pool):
        check(s.network in ("convnet", "me-convnet"), "DISTILLATION", "network_pool", s.network_pool,
              "a network pool: needs MODEL.network convnet or me-convnet")
        check(s.reinit_net, "DISTILLATION", "network_pool", s.network_pool,
              "a network drawn each iteration: needs DISTILLATION.reinit_net=true")
        convnets_only = all(m.family == "convnet" for m in pool)
        check(s.matched_layers == "all" or convnets_only, "DISTILLATION",
              "network_pool", s.network_pool, f"{'/'.join(POOL_FAMILIES)} need DISTILLATION.matched_layers=all")
        check(s.class_ce == 0 or convnets_only, "DISTILLATION", "network_pool",
              s.network_pool, "DISTILLATION.class_ce reads a ConvNet's classifier: a pool of ConvNets only")
        check(s.dm_layers == "last" or convnets_only, "DISTILLATION", "network_pool",
              s.network_pool, "DISTILLATION.dm_layers=all reads a ConvNet's blocks: a pool of ConvNets only")


def _raw_from_saved(saved: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Saved settings (``Settings.to_dict``) back to INI strings, so flags can be laid over them."""
    raw: dict[str, dict[str, str]] = {}
    for section, keys in SCHEMA.items():
        for key, (field_name, _) in keys.items():
            if field_name in saved:
                value = saved[field_name]
                text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
                raw.setdefault(section, {})[key] = text
    return raw


def parse_command_line(argv: Sequence[str] | None = None,
                       saved_settings: Callable[[Path], dict[str, Any]] | None = None) -> tuple[Settings, Invocation]:
    """Parse argv (argparse exits 2 on a bad flag) into validated Settings and what to do with them.

    With ``--resume``, ``saved_settings(path)`` supplies the checkpoint's settings, which replace the INI as
    the base. Raises SettingsError for a bad config file, key, type or value.
    """
    args = build_parser().parse_args(argv)
    invocation = Invocation(resume=args.resume, eval_only=args.eval_only, baseline=args.baseline)
    # The user's file is laid over the shipped defaults, so it only needs the keys it changes.
    raw = _read_ini(DEFAULT_CONFIG)
    if args.config.resolve() != DEFAULT_CONFIG:
        for section, values in _read_ini(args.config).items():
            raw.setdefault(section, {}).update(values)
    if args.resume is not None and saved_settings is not None:
        for section, values in _raw_from_saved(saved_settings(args.resume)).items():
            raw.setdefault(section, {}).update(values)
    for item in args.overrides:
        _apply_override(raw, item)
    for flag, (section, key) in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            raw.setdefault(section, {})[key] = str(value)

    values: dict[str, Any] = {}
    for section, keys in SCHEMA.items():
        for key, (field_name, kind) in keys.items():
            text = raw.get(section, {}).get(key)
            if text is None:
                raise SettingsError(f"missing key {section}.{key} in {args.config}")
            values[field_name] = text if kind == _RAW else _convert(section, key, text, kind)

    if values["network"].lower() == "auto":  # DC's ConvNet in the path's own implementation
        values["network"] = "convnet" if values["pytorch"] else "me-convnet"
    values["net_depth"] = _resolve_depth(values["net_depth"], values["pytorch"], values["network"])
    if values["total_iterations"] < 1:
        raise SettingsError(f"DISTILLATION.total_iterations = {values['total_iterations']} is out of range (>= 1)")
    values["eval_iterations"] = _resolve_eval_iterations(values["eval_iterations"], values["total_iterations"])
    values["eval_architectures"] = _resolve_architectures(values["eval_architectures"])
    values["augment_kinds"] = _resolve_augment_kinds(values["augment_kinds"])
    # One spelling per pool, so that a resume compares pools, not how they were typed.
    values["network_pool"] = ",".join(map(str, parse_network_pool(values["network_pool"])))
    settings = Settings(**values)
    _validate(settings)
    return settings, invocation


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings of a fresh run from argv (see ``parse_command_line``)."""
    return parse_command_line(argv)[0]


# Settings a resumed run may change: they do not alter the synthetic set's trajectory (dataset_dir: the same
# MNIST wherever the clone keeps it).
RESUMABLE_CHANGES = frozenset({
    "logging_parent", "experiment_name", "log", "device", "total_iterations", "save_cad_every", "eval_iterations",
    "dataset_dir", "distillation_checkpoint_dir",
    "classifier_lr", "eval_models", "eval_epochs", "eval_batch_size", "eval_momentum", "eval_weight_decay",
    "augment", "eval_augment_strategy", "augment_test", "test_size", "eval_architectures", "eval_architecture_lr",
    "eval_batched", "eval_projection", "eval_normalize", "eval_precision", "eval_compile",
})


# Keys newer than some checkpoints: a checkpoint without one ran with this value (the earlier behaviour).
KEYS_ADDED_LATER = {"network": "seed", "matched_layers": "all", "halo": 1, "augment_match": False,
                    "absent_voxels": "skip", "eval_projection": "binary", "network_pool": "", "eval_normalize": False,
                    "objective": "gradient", "eval_precision": "fp32",
                    "eval_compile": False, "inner_data": "synthetic", "inner_augment": False,
                    "augment_kinds": "shift,scale,rotate", "eval_augment_strategy": "dc",
                    "init_spread": 0.0, "class_ce": 0.0,
                    "dm_layers": "last", "dist_lr_schedule": "constant", "dm_kernel": "linear",
                    "pixel_match": 0.0, "augment_ranges": "dsa"}


def check_resumable(saved: dict[str, Any], settings: Settings) -> None:
    """Raise SettingsError naming the first setting that differs in a way that would change the result."""
    current = settings.to_dict()
    for name, value in current.items():
        if name in RESUMABLE_CHANGES or name == "mode" or (
                name in ("halo", "absent_voxels") and current["network"] != "me-convnet"):
            continue
        was = saved.get(name, KEYS_ADDED_LATER.get(name))
        if was != value:
            raise SettingsError(f"cannot resume: {name} was {was!r} in the checkpoint, now {value!r}")
