"""Run named grids of mnist_distill.py configurations, then regenerate the README's two results tables.

    .venv/bin/python experiments/run_grid.py --all                  # every run of the README's table
    .venv/bin/python experiments/run_grid.py GRID [GRID ...] [--only NAME ...] [--iterations N]
                     [--eval-epochs E] [--eval-models M] [--eval-iterations LIST] [--dry-run] [--table-only]

GRID alone replays that grid's calls in PLAN with their budgets (as ``--all`` does, for those grids and names);
a budget flag replaces PLAN's budget for every named run.

Each run writes its usual folder under experiments/runs/<grid>/. A run whose results.json exists (status
completed or evaluated) with the same command line is skipped, so an interrupted grid is resumed by
running the same command again. A run not yet done continues (``--resume``) from the furthest checkpoint of
its name whose settings differ only in what a resume may change (a shorter budget, an interrupted run);
resuming is exact, so its results.json records the fresh command, plus ``resumed_from``. The table between
the README's results markers is rebuilt from every results.json found under experiments/runs/, with the
command line that produced it; the one between its architectures markers from the same runs
(experiments/architecture_table.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's modules import from the root

from configs.settings import SettingsError, check_resumable, load_settings  # noqa: E402
from dd3d.outputs import CHECKPOINT_NAME, CheckpointError, digit_grid, load_checkpoint, save_digit_grid  # noqa: E402
from dd3d.pointsets import project_points  # noqa: E402
from experiments.architecture_table import architecture_table, run_name  # noqa: E402
from mnist_distill import EXIT_INTERRUPTED  # noqa: E402

RUNS = ROOT / "experiments" / "runs"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# The across-architectures table (experiments/architecture_table.py), rebuilt with the results table.
ARCH_START, ARCH_END = "<!-- architectures:start -->", "<!-- architectures:end -->"

# The seed's method (configs/seed.ini: also its protocol, augmented test digits). The grids made before the
# default configuration changed ran on the seed's settings with DC's clean test digits: SEED_CLEAN_TEST.
SEED = ["--config", "configs/seed.ini"]
SEED_CLEAN_TEST = [*SEED, "--set", "EVALUATION.augment_test=false"]
DC = ["--set", "DISTILLATION.reinit_net=true", "--distance", "ours"]
SPLAT = ["--set", "DISTILLATION.splat=true"]
REAL_INIT = ["--set", "DISTILLATION.init=real"]
MEAN_INIT = ["--set", "DISTILLATION.init=mean"]
HERDING_INIT = ["--set", "DISTILLATION.init=herding"]
HEAD_ONLY = ["--set", "DISTILLATION.matched_layers=head"]
ADAM = ["--set", "MODEL.dist_optimizer=adam", "--set", "MODEL.dist_lr=0.05"]
# DC's ConvNet as the matching network, on the splatted grid; 64 real digits per class and match.
CONVNET = [*SEED_CLEAN_TEST, "--pytorch", "--set", "MODEL.network=convnet", *DC, *SPLAT, *ADAM,
           "--set", "MODEL.batch_size=64"]
MECONVNET = [*SEED_CLEAN_TEST, "--no-pytorch", "--network", "me-convnet", *DC, *SPLAT, *ADAM,
             "--set", "MODEL.batch_size=64", "--set", "DISTILLATION.init=mean"]


# DM's objective with DM's 256 real digits per class and match.
DISTRIBUTION = ["--set", "DISTILLATION.objective=distribution", "--set", "MODEL.batch_size=256"]
# DM with DC's inner loop: each iteration matches in a fresh network, then after 25 and 50 SGD steps of it on the
# current set (3 coordinate updates).
DM_INNER = [*DISTRIBUTION, "--set", "DISTILLATION.outer_loop=3", "--set", "DISTILLATION.inner_loop=25"]
# The coordinates' step annealed from MODEL.dist_lr to 0 by half a cosine over the run's updates.
COSINE_STEP = ["--set", "MODEL.dist_lr_schedule=cosine"]
# M3D's Gaussian-kernel MMD between the embeddings instead of DM's distance of means (DISTILLATION.dm_kernel).
GAUSSIAN_KERNEL = ["--set", "DISTILLATION.dm_kernel=gaussian"]
# Each iteration's network drawn from DC's ConvNet and two of the evaluation's other architectures (dense, on the splat
# image; DM embeds with their last hidden layer), so the set's embeddings match the real digits' in more than one
# family of features.
EVAL_POOL = ["--set", "DISTILLATION.network_pool=128x3,lenet,mlp"]
# Herding's criterion beside DM's (DISTILLATION.pixel_match): each class's mean splat image kept on its real batch's.
PIXEL_MATCH = ["--set", "DISTILLATION.pixel_match=1"]
# Each iteration's network drawn from DC's ConvNet at half, once and twice its width and at depths 2, 3 and 4 (the
# issue's pool of widths and depths, in DM's inner loop): features the evaluation's own ConvNet does not have.
SHAPE_POOL = ["--set", "DISTILLATION.network_pool=128x3,64x3,256x3,128x2,128x4"]


# The evaluation in bfloat16 autocast through torch.compile: the same protocol, a different arithmetic (bf16 matched
# fp32 within the models' spread: `precision/1cpc-bf16`; compiling changes only float rounding). Fast only on a CPU
# with native bfloat16 (AVX-512 / AMX, the machines the rows using it ran on); emulated, and ~17x slower than fp32,
# on an AVX2-only one.
FAST_EVALUATION = ["--set", "EVALUATION.precision=bf16", "--set", "EVALUATION.compile=true"]


# fp32 through torch.compile: the evaluation for a CPU without native bfloat16 (inductor's fused norm / ReLU / pooling
# passes; a ConvNet training step on 100 digits took 0.57 s compiled against 0.78 s eager on the AVX2-only EPYC).
COMPILED_FP32_EVALUATION = ["--set", "EVALUATION.precision=fp32", "--set", "EVALUATION.compile=true"]


DSA_EVALUATION = ["--set", "EVALUATION.augment_strategy=dsa"]


def herding_10(*variant: str, architectures: str = "convnet,mlp,lenet") -> list[str]:
    """A distillation of ten clouds per class from herding's digits, with ``variant``'s flags, on the cheap nets."""
    return [*HERDING_INIT, "--clouds-per-class", "10", *variant, "--architectures", architectures]


def dm_inner_50(*variant: str, evaluation: tuple[str, ...] = tuple(FAST_EVALUATION),
                checkpoint_every: int = 10) -> list[str]:
    """DM's inner loop at fifty clouds per class from herding's digits, with ``variant``'s flags: a checkpoint every
    ``checkpoint_every`` iterations (10 on the CPU: ~80-140 s each on the AMX machines, ~110 s on the AVX2-only EPYC)
    and the evaluation's flags (default bf16 + compile)."""
    return [*HERDING_INIT, "--clouds-per-class", "50", *DM_INNER, *variant,
            "--set", f"DISTILLATION.save_cad_every={checkpoint_every}", *evaluation]


def dm_inner_mmd_gpu_50(iterations: int, checkpoint_every: int, architectures: str) -> list[str]:
    """``dm_inner_50`` with M3D's kernel and the cosine step on a lent GPU's dense path, for ``iterations``
    iterations, judged on ``architectures``."""
    return dm_inner_50(*GAUSSIAN_KERNEL, *COSINE_STEP, "--pytorch", "--device", "cuda", "--iterations", str(iterations),
                       evaluation=("--architectures", architectures), checkpoint_every=checkpoint_every)


# The fifty-per-class sets judged on the larger nets: the fifty-per-class assets and the baselines of that size.
FIFTY_SETS = {"herding-50": ["--baseline", "herding", "--clouds-per-class", "50"],
              "dm-50": ["--eval-only", "assets/mnist_50cpc_dm.pt"],
              "dm-inner-50": ["--eval-only", "assets/mnist_50cpc_dm_inner.pt"],
              "dm-inner-cosine-50": ["--eval-only", "assets/mnist_50cpc_dm_inner_cosine.pt"],
              "dm-inner-mmd-50": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd.pt"],
              "random-real-50": ["--baseline", "random-real", "--clouds-per-class", "50"],
              "dm-inner-mmd-200-50": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_200.pt"],
              "dm-inner-mmd-600-50": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_600.pt"],
              "class-mean-50": ["--baseline", "class-mean", "--clouds-per-class", "50"]}


GRIDS: dict[str, dict[str, list[str]]] = {
    # Table 1 of the seed: network x depth, modmse, fixed random network, 1 cloud per class.
    "seed-table1": {
        f"{path}-d{depth}": [*SEED, flag, "--depth", str(depth), "--distance", "modmse"]
        for path, flag in (("me", "--no-pytorch"), ("pytorch", "--pytorch")) for depth in (2, 3, 4)
    },
    # Table 2 of the seed: layer-wise cosine ("ours") against modmse.
    "seed-table2": {
        f"{path}-{dist}": [*SEED, flag, "--distance", dist]
        for path, flag in (("me", "--no-pytorch"), ("pytorch", "--pytorch")) for dist in ("ours", "modmse")
    },
    # Why the seed's tables are not reproduced? Its ME layers gave the points no second-order signal, so only
    # the classifier's gradient was matched in effect: the same runs, matching that gradient alone.
    "seed-head": {
        "me-d2": [*SEED, "--no-pytorch", "--depth", "2", "--distance", "modmse", *HEAD_ONLY],
        "pytorch-d3": [*SEED, "--pytorch", "--depth", "3", "--distance", "modmse", *HEAD_ONLY],
    },
    # Real digits as the "distilled" set, evaluated by exactly the same protocol.
    "baselines": {
        "random-real": [*SEED_CLEAN_TEST, "--baseline", "random-real"],
        "class-mean": [*SEED_CLEAN_TEST, "--baseline", "class-mean"],
        "random-real-10": [*SEED_CLEAN_TEST, "--baseline", "random-real", "--clouds-per-class", "10"],
        "class-mean-10": [*SEED_CLEAN_TEST, "--baseline", "class-mean", "--clouds-per-class", "10"],
    },
    # Beyond the seed: DC's fresh network per iteration, splatting, real initialisation.
    "beyond": {
        "me-dc-splat-realinit-adam": [*SEED_CLEAN_TEST, "--no-pytorch", *DC, *SPLAT, *REAL_INIT, *ADAM],
        "me-dc-splat-meaninit-adam": [*SEED_CLEAN_TEST, "--no-pytorch", *DC, *SPLAT, "--set", "DISTILLATION.init=mean",
                                      *ADAM],
        "pytorch-dc-splat-realinit-adam": [*SEED_CLEAN_TEST, "--pytorch", *DC, *SPLAT, *REAL_INIT, *ADAM],
        "me-dc-splat-realinit": [*SEED_CLEAN_TEST, "--no-pytorch", *DC, *SPLAT, *REAL_INIT],
        "me-dc-splat": [*SEED_CLEAN_TEST, "--no-pytorch", *DC, *SPLAT],
        "me-dc": [*SEED_CLEAN_TEST, "--no-pytorch", *DC],
    },
    # Beyond the seed: gradients matched in the evaluation architecture (DC's ConvNet) on the splat.
    "convnet": {
        "meaninit": [*CONVNET, "--set", "DISTILLATION.init=mean"],
        "realinit": [*CONVNET, *REAL_INIT],
        "realinit-10": [*CONVNET, *REAL_INIT, "--clouds-per-class", "10"],
    },
    # This project's faithful mode beside the seed's own code (experiments/seed_faithfulness.py), same iterations.
    "seed-faithful": {"me": [*SEED, "--no-pytorch"]},
    # The MinkowskiEngine ConvNet (DC's ConvNet on sparse voxels of the splat): how much halo, and augmentation
    # inside the match (DSA), at the convnet grid's settings.
    "me-convnet": {
        f"{'bg-' if bg else ''}h{halo}{'-aug' if aug else ''}": [
            *MECONVNET, "--set", f"MODEL.halo={halo}", "--set", f"MODEL.absent_voxels={'background' if bg else 'skip'}",
            *(["--set", "DISTILLATION.augment_match=true", "--architectures", "convnet,mlp,lenet"] if aug else [])]
        for bg in (False, True) for halo in (0, 1, 2) for aug in (False, True)
    } | {
        # Ten clouds per class from the herding baseline's digits (the strongest baseline at ten).
        "bg-h1-aug-herding-10": [*MECONVNET, "--set", "MODEL.halo=1", "--set", "MODEL.absent_voxels=background",
                                 "--set", "DISTILLATION.augment_match=true", "--architectures", "convnet,mlp,lenet",
                                 "--set", "DISTILLATION.init=herding", "--clouds-per-class", "10",
                                 "--set", "EVALUATION.projection=splat"],
        # Ten clouds per class, started from real digits as DC does (the dense grid's best start at ten).
        "bg-h1-aug-realinit-10": [*MECONVNET, "--set", "MODEL.halo=1", "--set", "MODEL.absent_voxels=background",
                                  "--set", "DISTILLATION.augment_match=true", "--architectures", "convnet,mlp,lenet",
                                  *REAL_INIT, "--clouds-per-class", "10"],
    },
    # The default command with its matching network drawn each iteration from a pool of ConvNets (widths, depths,
    # with and without instance norm), for sets that train other architectures: same budget as `default`.
    # `families`: the pool holds the ME ConvNet and the evaluation's LeNet, AlexNet and MLP (dense, on the splat).
    # Both from the class-mean digits, the default's start when they ran (now herding: `herding-init`).
    "pool": {"1cpc": ["--architectures", "convnet,mlp,lenet",
                      "--set", "DISTILLATION.network_pool=128x3,64x3,128x2,128x3-none,64x2-none", *MEAN_INIT],
             "families": ["--architectures", "convnet,mlp,lenet,alexnet",
                          "--set", "DISTILLATION.network_pool=128x3,lenet,alexnet,mlp", *MEAN_INIT]},
    # EVALUATION.normalize (DC's pixel standardisation of the evaluation's images): the default's set and the
    # herding baseline, at one cloud per class; compare the `default` and `cross-arch/herding` rows.
    "normalize": {
        "default-set": ["--eval-only", "assets/mnist_1cpc_default.pt", "--architectures", "convnet,mlp,lenet",
                        "--set", "EVALUATION.normalize=true"],
        "herding": ["--baseline", "herding", "--architectures", "convnet,mlp,lenet",
                    "--set", "EVALUATION.normalize=true"],
    },
    # DC's AlexNet (1 x 28 x 28) on the default's set and on the herding baseline, one cloud per class.
    "alexnet": {
        "default-set": ["--eval-only", "assets/mnist_1cpc_default.pt", "--architectures", "alexnet"],
        "herding": ["--baseline", "herding", "--architectures", "alexnet"],
        "class-mean": ["--baseline", "class-mean", "--architectures", "alexnet"],
        "random-real": ["--baseline", "random-real", "--architectures", "alexnet"],
        # The best one-per-class set (`distribution/1-dm-inner-spread`, ASSETS: `mnist_1cpc_dm_inner_spread`).
        "dm-inner-spread-set": ["--eval-only", "assets/mnist_1cpc_dm_inner_spread.pt", "--architectures", "alexnet"],
        # Its second distillation seed (`distribution/1-dm-inner-spread-seed1`, ASSETS).
        "dm-inner-spread-seed1-set": ["--eval-only", "assets/mnist_1cpc_dm_inner_spread_seed1.pt", "--architectures",
                                      "alexnet"],
    },
    # DC's VGG-11 and ResNet-18 (instance norm, 1 x 28 x 28) on the default command's set and on its start,
    # herding, on the other two baselines, and on distribution matching's sets (`distribution/1-dm`, `1-dm-inner`,
    # `1-dm-inner-spread`); ~5 and ~10 min per model here, so 2 models (PLAN).
    **{arch: {"default-set": ["--eval-only", "assets/mnist_1cpc_herding_init.pt", "--architectures", arch],
              "herding": ["--baseline", "herding", "--architectures", arch],
              "class-mean": ["--baseline", "class-mean", "--architectures", arch],
              "random-real": ["--baseline", "random-real", "--architectures", arch],
              "dm-set": ["--eval-only", "assets/mnist_1cpc_dm.pt", "--architectures", arch],
              "dm-inner-set": ["--eval-only", "assets/mnist_1cpc_dm_inner.pt", "--architectures", arch],
              "dm-inner-spread-set": ["--eval-only", "assets/mnist_1cpc_dm_inner_spread.pt", "--architectures", arch],
              "dm-inner-spread-seed1-set": ["--eval-only", "assets/mnist_1cpc_dm_inner_spread_seed1.pt",
                                            "--architectures", arch]}
       for arch in ("vgg11", "resnet18")},
    # The default command (configs/default.ini: from the herding baseline's digits; the flag keeps the row's
    # meaning should the default change), on every architecture that fits this CPU (compare `default/1cpc`, the
    # same from the class means, and `cross-arch/herding`, `alexnet`).
    "herding-init": {"1cpc": [*HERDING_INIT, "--architectures", "convnet,mlp,lenet,alexnet"]},
    # Fifty clouds per class: the default command from the herding digits and the baselines of that size. Their
    # evaluation (500 images) costs ~40 min per ConvNet x 1000 epochs on one thread here: a reduced budget (PLAN).
    "fifty": {
        name: [*flags, "--clouds-per-class", "50", "--architectures", "convnet,mlp,lenet"]
        for name, flags in (("herding-init", HERDING_INIT),
                            ("herding", ["--baseline", "herding"]), ("random-real", ["--baseline", "random-real"]),
                            ("class-mean", ["--baseline", "class-mean"]))
    },
    # Fifty per class by 1000-epoch ConvNets (2 models: PLAN), which the fp32 evaluation made too slow here:
    # in bfloat16 and compiled (EVALUATION.precision, .compile; README, Speed), the DM set against its start.
    "fifty-full": {
        "50-dm": ["--eval-only", "assets/mnist_50cpc_dm.pt", *FAST_EVALUATION],
        "herding": ["--baseline", "herding", "--clouds-per-class", "50", *FAST_EVALUATION],
        # The MLP and LeNet by the full protocol (5 models x 1000 epochs, fp32; the `fifty` grid's 300 epochs left
        # a LeNet on its plateau), the set against its start.
        "50-dm-mlp-lenet": ["--eval-only", "assets/mnist_50cpc_dm.pt", "--architectures", "mlp,lenet"],
        "herding-mlp-lenet": ["--baseline", "herding", "--clouds-per-class", "50", "--architectures", "mlp,lenet"],
        # The k-means baseline at fifty (fp32 + compile): its MLP and LeNet by the full protocol, its ConvNet by one
        # 1000-epoch model (49 min here), against herding-50 as a start for fifty per class.
        "kmeans-mlp-lenet": ["--baseline", "kmeans", "--clouds-per-class", "50", "--architectures", "mlp,lenet",
                             *COMPILED_FP32_EVALUATION],
        "kmeans-convnet": ["--baseline", "kmeans", "--clouds-per-class", "50", "--architectures", "convnet",
                           *COMPILED_FP32_EVALUATION],
        # The other two baselines at fifty by the same protocol (the `fifty` grid judged them by 300 epochs only):
        # MLP and LeNet 5 x 1000 in fp32 + compile, the ConvNet 2 x 1000 in bf16 + compile as herding-50's.
        **{f"{baseline}-{suffix}": ["--baseline", baseline, "--clouds-per-class", "50", *flags]
           for baseline in ("random-real", "class-mean")
           for suffix, flags in (("mlp-lenet", ["--architectures", "mlp,lenet", *COMPILED_FP32_EVALUATION]),
                                 ("convnet", ["--architectures", "convnet", *FAST_EVALUATION]))},
        # The 200-iteration fifty set distilled on the H200 (`h200/50-dm-inner-mmd-200`, stopped there by the lease's
        # end during its final evaluation; its checkpoint at 200 is `assets/mnist_50cpc_dm_inner_mmd_200.pt`), evaluated
        # here: the ConvNet by 2 bf16 + compile models (PLAN), the MLP and LeNet by 5 fp32 + compile.
        "50-dm-inner-mmd-200-convnet": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_200.pt", "--architectures",
                                        "convnet", *FAST_EVALUATION],
        "50-dm-inner-mmd-200-mlp-lenet": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_200.pt", "--architectures",
                                          "mlp,lenet", *COMPILED_FP32_EVALUATION],
        # The H200's 600-iteration fifty set (`h200/50-dm-inner-mmd-600`, ConvNet evaluated there), its MLP and LeNet.
        "50-dm-inner-mmd-600-mlp-lenet": [*FIFTY_SETS["dm-inner-mmd-600-50"], "--architectures", "mlp,lenet",
                                          *COMPILED_FP32_EVALUATION],
        # The same for DM's inner loop at fifty (`distribution/50-dm-inner`, ASSETS: `mnist_50cpc_dm_inner`).
        "50-dm-inner-mlp-lenet": ["--eval-only", "assets/mnist_50cpc_dm_inner.pt", "--architectures", "mlp,lenet"],
        # And with the cosine step (`distribution/50-dm-inner-cosine`, ASSETS: `mnist_50cpc_dm_inner_cosine`).
        "50-dm-inner-cosine-mlp-lenet": ["--eval-only", "assets/mnist_50cpc_dm_inner_cosine.pt",
                                         "--architectures", "mlp,lenet"],
        # And with M3D's Gaussian kernel (`distribution/50-dm-inner-mmd`, ASSETS: `mnist_50cpc_dm_inner_mmd`).
        "50-dm-inner-mmd-mlp-lenet": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd.pt",
                                      "--architectures", "mlp,lenet"],
        # The kernel with the cosine step's ConvNet (`distribution/50-dm-inner-mmd-cosine` was judged on the pair).
        "50-dm-inner-mmd-cosine-convnet": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_cosine.pt",
                                           "--architectures", "convnet", *COMPILED_FP32_EVALUATION],
        # A second model by another evaluation seed, on the other core (one model each: 49 min here).
        "50-dm-inner-mmd-cosine-convnet-seed1": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_cosine.pt",
                                                 "--architectures", "convnet", *COMPILED_FP32_EVALUATION,
                                                 "--set", "DEFAULT.seed=1"],
    },
    # Adam's step on the coordinates (MODEL.dist_lr) at ten clouds per class, from herding's digits: Adam
    # moves every point about dist_lr pixels per step whatever its gradient's share of the signal, which is
    # smaller per cloud the more clouds a class has. `10-lr0.05` is the default's step (the
    # `mnist_10cpc_herding_init` asset, evaluated at this grid's budget); `10-lr0.01` evaluates its start too.
    "step-size": {
        "10-lr0.01": herding_10("--set", "MODEL.dist_lr=0.01"),
        "10-lr0.05": ["--eval-only", "assets/mnist_10cpc_herding_init.pt", "--architectures", "convnet,mlp,lenet"],
        # Is the gray of the splat what costs the MLP? The same set's binary projection, on the two cheap nets, by
        # the full protocol (compare `me-convnet/bg-h1-aug-herding-10`, its splat image, and `cross-arch/herding-10`).
        "10-lr0.05-binary": ["--eval-only", "assets/mnist_10cpc_herding_init.pt", "--architectures", "mlp,lenet",
                             "--set", "EVALUATION.projection=binary"],
    },
    # DC's real batch (256 digits per class and match instead of 64) at ten clouds per class, from herding's digits:
    # a less noisy target gradient (compare `step-size/10-lr0.05`, the same at 64).
    "real-batch": {
        "10-b256": herding_10("--set", "MODEL.batch_size=256"),
    },
    # DC's inner loop at ten clouds per class (DC's 10 outer x 50 inner steps): each iteration matches in one
    # fresh network as it is trained on the synthetic set, so later matches see a trained network's gradients.
    # ~3 min per iteration here: 20 iterations, as many coordinate updates as `step-size/10-lr0.05`'s 200.
    "inner-loop": {
        "10-dc": herding_10("--set", "DISTILLATION.outer_loop=10", "--set", "DISTILLATION.inner_loop=50"),
    },
    # Distribution matching (DM: the real batch's mean embedding in a fresh ConvNet, no second order) instead of
    # gradients, from herding's digits, with DM's 256 real digits per class and match.
    "distribution": {
        "10-dm": herding_10(*DISTRIBUTION),
        # The MLP lost most under every objective at ten: half the draws embed with a fresh MLP instead of the ConvNet
        # (its hidden features of the splat image: the class means under random pixel features).
        "10-dm-mlp": herding_10(*DISTRIBUTION, "--set", "DISTILLATION.network_pool=128x3,mlp"),
        # The 10-dm set (ASSETS: `mnist_10cpc_dm`) by the full protocol, beside `me-convnet/bg-h1-aug-herding-10`.
        "10-dm-full": ["--eval-only", "assets/mnist_10cpc_dm.pt", "--architectures", "convnet,mlp,lenet"],
        # One cloud per class: the default command with DM's objective (compare `herding-init/1cpc`).
        "1-dm": [*DISTRIBUTION, "--architectures", "convnet,mlp,lenet,alexnet"],
        # Fifty per class from herding's fifty digits, at the `fifty` grid's budget (compare `fifty/herding`).
        "50-dm": [*HERDING_INIT, "--clouds-per-class", "50", *DISTRIBUTION, "--architectures", "convnet,mlp,lenet"],
        # Matching in networks trained on the synthetic set (DM_INNER: DC's inner loop, as CAFE embeds).
        "10-dm-inner": herding_10(*DM_INNER),
        # Longer-trained networks to match in: four matches per iteration, after 0, 50, 100 and 150 SGD steps.
        "10-dm-inner4x50": herding_10(*DISTRIBUTION, "--set", "DISTILLATION.outer_loop=4", "--set",
                                      "DISTILLATION.inner_loop=50"),
        # Less-trained networks: three matches after 0, 10 and 20 SGD steps (4x50 was worse than 3x25).
        "10-dm-inner3x10": herding_10(*DISTRIBUTION, "--set", "DISTILLATION.outer_loop=3", "--set",
                                      "DISTILLATION.inner_loop=10"),
        # The inner loop on real digits instead (IDM's networks that know real digits; 10 per class and step).
        "10-dm-inner-real": herding_10(*DM_INNER, "--set", "DISTILLATION.inner_data=real"),
        # The inner loop's steps on augmented synthetic images (DSA's inner loop: each image its own draw of the
        # match's shift / scale / rotate), so matches see networks trained as the evaluated ones are.
        "10-dm-inner-aug": herding_10(*DM_INNER, "--set", "DISTILLATION.inner_augment=true"),
        # The same 3 x 25 loop in the dense ConvNet on the PyTorch path (the evaluation's own network on the whole
        # 32 x 32 grid) instead of its MinkowskiEngine twin, whose halo-1 voxels approximate it; full protocol.
        "10-dm-inner-dense": herding_10(*DM_INNER, "--pytorch"),
        # The same loop with the coordinates' step annealed to 0 by a half cosine (MODEL.dist_lr_schedule): the last
        # updates, each on one fresh network's noisy estimate, leave the set less jittered; full protocol.
        "10-dm-inner-cosine": herding_10(*DM_INNER, *COSINE_STEP),
        # The constant-step set (ASSETS: `mnist_10cpc_dm_inner`, 100 iterations) continued from its points for 40
        # iterations of the same loop with the step annealed from 0.05 to 0 (a fresh Adam): the cosine run from
        # herding moved the points less and lost half a point on the ConvNet; this anneals only after convergence.
        "10-dm-inner-anneal": [*DM_INNER, "--set", "DISTILLATION.init=assets/mnist_10cpc_dm_inner.pt",
                               "--clouds-per-class", "10", *COSINE_STEP,
                               "--architectures", "convnet,mlp,lenet"],
        # The constant-step run again with another seed (fresh networks, real batches and augmentation draws; the same
        # herding start): how much of 96.97 % is the distillation's own spread; full protocol.
        "10-dm-inner-seed1": herding_10(*DM_INNER, "--set", "DEFAULT.seed=1"),
        # A third seed, evaluated in bf16 + compile (compare `10-dm-inner-fast`, seed 0's set by the same evaluation):
        # the spread of the method's figure over distillation seeds, on which the 97 % claim rests.
        "10-dm-inner-seed2": herding_10(*DM_INNER, "--set", "DEFAULT.seed=2", *FAST_EVALUATION),
        # A fourth seed, the same evaluation: the method's mean and spread over distillation seeds.
        "10-dm-inner-seed3": herding_10(*DM_INNER, "--set", "DEFAULT.seed=3", *FAST_EVALUATION),
        # CAFE's layer-wise alignment (DISTILLATION.dm_layers=all): every block's mean features matched, not only the
        # last's; the first block's are local-pattern statistics of the image, which the MLP and LeNet (below herding's
        # digits with the last block alone) read. bf16 + compile evaluation: compare `10-dm-inner-fast`.
        "10-dm-inner-layers": herding_10(*DM_INNER, "--set", "DISTILLATION.dm_layers=all", *FAST_EVALUATION),
        # Half the matches in a ConvNet without normalisation (DISTILLATION.network_pool): the MLP, LeNet and AlexNet
        # have no instance norm and read absolute intensities, where the set is below herding's digits; features of an
        # un-normalised network also weigh a stroke's mass, which instance norm divides out. bf16 + compile evaluation.
        "10-dm-inner-norms": herding_10(*DM_INNER, "--set", "DISTILLATION.network_pool=128x3,128x3-none",
                                        *FAST_EVALUATION),
        # Twice the constant step (0.1 pixel): the cosine and annealed runs, which moved the points less, lost on the
        # ConvNet and gained on the MLP; does moving them more gain on the ConvNet? Full protocol.
        "10-dm-inner-lr01": herding_10(*DM_INNER, "--set", "MODEL.dist_lr=0.1"),
        # Twice the real digits per class and match (512): the seed-1 run lost 0.37 points, so the estimate each
        # update follows is noisy; a larger real batch halves the variance of the mean embedding it matches.
        "10-dm-inner-b512": herding_10(*DM_INNER, "--set", "MODEL.batch_size=512"),
        # Half the real digits per class and match (128): 512 lost 0.34 points against 256, so does a noisier
        # estimate per update (and a real side half as dear) gain? bf16 + compile evaluation: compare 10-dm-inner-fast.
        "10-dm-inner-b128": herding_10(*DM_INNER, "--set", "MODEL.batch_size=128", *FAST_EVALUATION),
        # DSA's cutout as a fourth kind the match draws from (DSA's MNIST set: crop, cutout, scale, rotate, and colour,
        # which points have not): a 14 x 14 square of points leaves both sides, so the clouds must match real digits
        # from what is left of them too.
        "10-dm-inner-cutout": herding_10(*DM_INNER, "--set", "DISTILLATION.augment_kinds=shift,scale,rotate,cutout"),
        # IDM's class-aware term (DISTILLATION.class_ce): beside the mean embedding, each class's clouds should be
        # classified as their class by the network matched in, weighted by its accuracy on the class's real batch
        # (measured at the start: DM distance ~4-6 per class, the term ~0.4-0.8 at weight 1 in trained networks).
        # Two weights side by side, one per core; evaluated in bf16 + compile to leave time for both.
        **{f"10-dm-inner-ce{tag}": herding_10(*DM_INNER, "--set", f"DISTILLATION.class_ce={weight}", *FAST_EVALUATION)
           for tag, weight in (("05", 0.5), ("2", 2))},
        # The unweighted set (`assets/mnist_10cpc_dm_inner.pt`, 96.97 % in fp32) by the same bf16 + compile
        # evaluation as the two above (the same models' seeds): the like-for-like comparison.
        "10-dm-inner-fast": ["--eval-only", "assets/mnist_10cpc_dm_inner.pt", "--architectures", "convnet",
                             *FAST_EVALUATION],
        # One cloud per class with the same inner loop (compare `1-dm`).
        "1-dm-inner": [*DM_INNER, "--architectures", "convnet,mlp,lenet,alexnet"],
        # The same run with the padding copies spread out at the start (DISTILLATION.init_spread): herding's digits
        # have 42-190 pixels, so 60-208 of each cloud's 250 points began as copies of its first point and moved as
        # one (the 10-dm-inner set's clouds hold 58-173 distinct points). ConvNet here, MLP / LeNet below.
        "10-dm-inner-spread": [*HERDING_INIT, "--clouds-per-class", "10", *DM_INNER,
                               "--set", "DISTILLATION.init_spread=0.25", "--architectures", "convnet"],
        # Its set at 100 iterations (`assets/mnist_10cpc_dm_inner_spread.pt`), evaluated in bf16 + compile while the
        # run's own fp32 evaluation waits (3x cheaper here; bf16 matched fp32 within the models' spread: `precision`),
        # and on the MLP / LeNet.
        "10-dm-inner-spread-fast": ["--eval-only", "assets/mnist_10cpc_dm_inner_spread.pt", "--architectures",
                                    "convnet", *FAST_EVALUATION],
        "10-dm-inner-spread-mlp-lenet": ["--eval-only", "assets/mnist_10cpc_dm_inner_spread.pt", "--architectures",
                                         "mlp,lenet"],
        # Its ConvNet figure in fp32 (the protocol of the other rows; `-fast` is bf16 + compile).
        "10-dm-inner-spread-full": ["--eval-only", "assets/mnist_10cpc_dm_inner_spread.pt", "--architectures",
                                    "convnet"],
        "1-dm-inner-spread": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", "--architectures",
                              "convnet,mlp,lenet"],
        # The same with CAFE's layer-wise alignment (compare `10-dm-inner-layers`).
        "1-dm-inner-spread-layers": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", "--set",
                                     "DISTILLATION.dm_layers=all", "--architectures", "convnet,mlp,lenet"],
        # The same run with another seed: does the 90 % at one hold over distillation seeds?
        "1-dm-inner-spread-seed1": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", "--set", "DEFAULT.seed=1",
                                    "--architectures", "convnet,mlp,lenet"],
        "1-dm-inner-spread-seed2": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", "--set", "DEFAULT.seed=2",
                                    "--architectures", "convnet,mlp,lenet"],
        # The same with M3D's Gaussian kernel (compare `10-dm-inner-mmd`): with one cloud per class the kernel's
        # synthetic-synthetic term is a constant, so the cloud is drawn towards the real digits near it, weighted by
        # the kernel, instead of towards their mean.
        "1-dm-inner-spread-mmd": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", *GAUSSIAN_KERNEL,
                                  "--architectures", "convnet,mlp,lenet"],
        # The same with half the matches in an un-normalised ConvNet (compare `10-dm-inner-norms`).
        "1-dm-inner-spread-norms": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", "--set",
                                    "DISTILLATION.network_pool=128x3,128x3-none", "--architectures",
                                    "convnet,mlp,lenet"],
        # The mean of the seed-0, -2 and -3 sets' coordinates (experiments/average_sets.py; one start, so their points
        # correspond): where the runs agree. bf16 + compile, compare `10-dm-inner-fast` and the seeds' rows.
        "10-dm-inner-soup3": ["--eval-only", "assets/mnist_10cpc_dm_inner_soup3.pt", "--architectures", "convnet",
                              *FAST_EVALUATION],
        # The same at one cloud per class: the mean of the `1-dm-inner-spread` seed-0 and seed-1 sets (fp32, 5 x 1000).
        "1-dm-inner-spread-soup2": ["--eval-only", "assets/mnist_1cpc_dm_inner_spread_soup2.pt", "--architectures",
                                    "convnet,mlp,lenet"],
        # Its set (ASSETS: `mnist_10cpc_dm_inner`) by the full protocol, as two runs to use both cores.
        "10-dm-inner-full": ["--eval-only", "assets/mnist_10cpc_dm_inner.pt", "--architectures", "convnet"],
        "10-dm-inner-full-mlp-lenet": ["--eval-only", "assets/mnist_10cpc_dm_inner.pt", "--architectures", "mlp,lenet"],
        # Five more ConvNets (evaluation seed 1) for the same set, so the ten-per-class headline (0.03 points under
        # the target by the five above) rests on ten models.
        "10-dm-inner-full-seed1": ["--eval-only", "assets/mnist_10cpc_dm_inner.pt", "--architectures", "convnet",
                                   "--set", "DEFAULT.seed=1"],
        # The same set's binary projection (a pixel is 1 where a point falls, as every real digit here): is the MLP's
        # shortfall against herding-10 (86.6 against 87.4 %) the splat's gray edges, which no test digit has?
        "10-dm-inner-binary-mlp-lenet": ["--eval-only", "assets/mnist_10cpc_dm_inner.pt", "--architectures",
                                         "mlp,lenet", "--set", "EVALUATION.projection=binary"],
        # The inner loop at fifty per class, from herding's fifty (the largest gain at ten; plain DM at fifty was level
        # with its start): each inner step trains on all 500 images, so an iteration costs ~8x plain DM's; checkpoints
        # every 10 iterations. Judged as `fifty-full` judges the DM set and herding: 2 x 1000 in bf16 + compile.
        "50-dm-inner": dm_inner_50(),
        # The same with the cosine step, which at ten lifted the MLP and AlexNet to herding's level
        # (`10-dm-inner-cosine`), where the constant-step fifty set stays below herding-50; judged on the cheap nets
        # too.
        "50-dm-inner-cosine": [*dm_inner_50(*COSINE_STEP),
                               "--architectures", "convnet,mlp,lenet"],
        # The constant-step fifty set (ASSETS: `mnist_50cpc_dm_inner`, 30 iterations = 90 updates, each point moved at
        # most 4.5 px against 15 px at ten) continued 30 more iterations from its points (a fresh Adam): had it
        # stopped short of where the method goes at fifty? Seed 1: fresh networks and batches, not seed 0's again.
        "50-dm-inner-more": [*DM_INNER, "--set", "DISTILLATION.init=assets/mnist_50cpc_dm_inner.pt",
                             "--clouds-per-class", "50", "--set", "DEFAULT.seed=1", "--set",
                             "DISTILLATION.save_cad_every=10", *FAST_EVALUATION],
        # The cosine step from twice the constant one (0.1 px): as many pixels moved in all as the constant 0.05 step
        # (which gained on the ConvNet), the annealed end of the cosine run (which kept the MLP at herding's level).
        "10-dm-inner-cosine01": herding_10(*DM_INNER, *COSINE_STEP, "--set", "MODEL.dist_lr=0.1",
                                           *FAST_EVALUATION),
        # The cosine set's run (`10-dm-inner-cosine`, the one ten-per-class set not below herding-10 on any of the six,
        # +0.02 on the MLP) with another seed: does that hold over distillation seeds? bf16 + compile evaluation.
        "10-dm-inner-cosine-seed1": herding_10(*DM_INNER, *COSINE_STEP, "--set", "DEFAULT.seed=1",
                                               *FAST_EVALUATION),
        # M3D's Gaussian-kernel MMD instead of DM's distance of means (DISTILLATION.dm_kernel): every moment of a
        # class's embeddings matched, and its clouds pushed apart over its digits, where DM lets them sit anywhere
        # that keeps their mean; the MLP, below herding-10 under every DM variant, reads more than the ConvNet's mean
        # features. bf16 + compile evaluation: compare `10-dm-inner-fast`, seed 0's DM set.
        "10-dm-inner-mmd": herding_10(*DM_INNER, *GAUSSIAN_KERNEL, *FAST_EVALUATION),
        # Its second distillation seed: do the MLP and LeNet gains over herding-10 hold? (DM's seeds spread 0.9 points.)
        "10-dm-inner-mmd-seed1": herding_10(*DM_INNER, *GAUSSIAN_KERNEL, "--set", "DEFAULT.seed=1", *FAST_EVALUATION),
        # The same at fifty, where every DM set is below herding-50 on the MLP, LeNet and AlexNet.
        "50-dm-inner-mmd": [*dm_inner_50(*GAUSSIAN_KERNEL),
                            "--architectures", "convnet,mlp,lenet"],
        # DM's inner loop through a pool of the ConvNet, LeNet and the MLP (EVAL_POOL): every DM set at fifty is below
        # herding-50 on the MLP and LeNet, having matched only ConvNet features. At ten first (bf16 + compile
        # evaluation: compare `10-dm-inner-fast`), then at fifty with 60 iterations, about the cost of the ConvNet
        # alone's 30 (two in three iterations are the cheap dense nets).
        "10-dm-inner-pool": herding_10(*DM_INNER, *EVAL_POOL, *FAST_EVALUATION),
        "50-dm-inner-pool": [*dm_inner_50(*EVAL_POOL), "--architectures", "convnet,mlp,lenet"],
        # The pool did not lift the MLP at ten. Herding's digits, which the MLP trains best on, are chosen to keep
        # their class's mean image; DM's ConvNet embeddings alone let the set drift off it. PIXEL_MATCH keeps it
        # (weight 1: at the herding start its coordinate gradient is 0.2-0.5x the ConvNet term's).
        "10-dm-inner-pixel": herding_10(*DM_INNER, *PIXEL_MATCH, *FAST_EVALUATION),
        "50-dm-inner-pixel": [*dm_inner_50(*PIXEL_MATCH), "--architectures", "convnet,mlp,lenet"],
        # Neither other families (EVAL_POOL) nor a pixel term lifted the set; ConvNets of other widths and depths
        # (SHAPE_POOL) stay in the family the set trains best, with features the evaluation's ConvNet lacks.
        # fp32 evaluation (compare `10-dm-inner-full`): bf16 is ~17x slower on a CPU without native bf16 (AVX2 only).
        # Named explicitly: a resumed run keeps its checkpoint's evaluation settings unless told otherwise.
        "10-dm-inner-shapes": herding_10(*DM_INNER, *SHAPE_POOL, "--set", "EVALUATION.precision=fp32", "--set",
                                         "EVALUATION.compile=false"),
        # M3D's kernel (above herding-10 on the MLP with seed 0, under it with seed 1) with the cosine step (level with
        # herding-10 on the MLP over two seeds, by moving the points less): does the kernel's spread over a class's
        # digits, from a set that stays nearer its start, put the MLP above herding-10 by more than the models' spread?
        "10-dm-inner-mmd-cosine": herding_10(*DM_INNER, *GAUSSIAN_KERNEL, *COSINE_STEP, *COMPILED_FP32_EVALUATION),
        # Its second seed (the seed under which the kernel alone fell 0.6 under herding-10 on the MLP), judged first on
        # the nets without the ConvNet's norms, where the question is (minutes, against the ConvNet's ~40 here).
        "10-dm-inner-mmd-cosine-seed1": herding_10(*DM_INNER, *GAUSSIAN_KERNEL, *COSINE_STEP, "--set", "DEFAULT.seed=1",
                                                   architectures="mlp,lenet"),
        # The combination at fifty, where every set is below herding-50 on the MLP (92.65) and LeNet (95.40): at ten it
        # put the MLP above herding-10 over both seeds. fp32 evaluation (AVX2-only CPU), judged first on the MLP and
        # LeNet (minutes; a fifty-per-class ConvNet x 1000 epochs costs ~40 min per model in fp32 here).
        "50-dm-inner-mmd-cosine": [*dm_inner_50(*GAUSSIAN_KERNEL, *COSINE_STEP, evaluation=()),
                                   "--architectures", "mlp,lenet"],
        # The same for twice the iterations (a fresh run: its cosine spans all 60). At fifty a set's 30 iterations move
        # the points a third as far as ten's 100, and every fifty set stays level with herding-50 on the MLP and LeNet:
        # does a set moved further leave herding behind on them, as at ten?
        "50-dm-inner-mmd-cosine-60": [*dm_inner_50(*GAUSSIAN_KERNEL, *COSINE_STEP, evaluation=()),
                                      "--architectures", "mlp,lenet"],
        # Its ConvNet figure by the full protocol (after it: its set is the asset).
        "10-dm-inner-mmd-cosine-seed1-full": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd_cosine_seed1.pt",
                                              "--architectures", "convnet", *COMPILED_FP32_EVALUATION],
        # Augmentation inside the match off (DSA's idea, on in every DM row): does DM's inner loop at ten need it? The
        # same seed and settings as `10-dm-inner` (ConvNet 96.97 % by the full protocol, `10-dm-inner-full`) otherwise.
        "10-dm-inner-noaug": herding_10(*DM_INNER, "--set", "DISTILLATION.augment_match=false",
                                        *COMPILED_FP32_EVALUATION),
        # The match's transforms as far as the evaluation's (DC's rotate 45 degrees, scale 0.8-1.2) instead of DSA's
        # (15 degrees, 1/1.2-1.2): the evaluation models train on digits turned three times further than any the set
        # was matched on. Same seed and settings as `10-dm-inner` otherwise.
        "10-dm-inner-dcaug": herding_10(*DM_INNER, "--set", "DISTILLATION.augment_ranges=dc",
                                        *COMPILED_FP32_EVALUATION),
        # k-means' ten digits per class as the start instead of herding's (`cross-arch/kmeans-10`): herding picks
        # digits whose mean is the class's, k-means one digit per style of it, a start spread over the class's modes
        # for a match of its embeddings' distribution. Same seed and settings as `10-dm-inner` otherwise.
        "10-dm-inner-kmeans": ["--set", "DISTILLATION.init=kmeans", "--clouds-per-class", "10", *DM_INNER,
                               "--architectures", "convnet,mlp,lenet", *COMPILED_FP32_EVALUATION],
        # Half the coordinates' step (0.025 pixels per Adam update): twice the step (0.1, `10-dm-inner-lr01`) lost 1.3
        # points against 0.05 with the same seed; does a smaller one gain? Seeds 0 and 1 (0.05: 96.97 / 96.60 %).
        "10-dm-inner-lr0025": herding_10(*DM_INNER, "--set", "MODEL.dist_lr=0.025", *COMPILED_FP32_EVALUATION),
        "10-dm-inner-lr0025-seed1": herding_10(*DM_INNER, "--set", "MODEL.dist_lr=0.025", "--set", "DEFAULT.seed=1",
                                               *COMPILED_FP32_EVALUATION),
        # The same pool at one cloud per class, in the spread mode (compare `1-dm-inner-spread`, seeds 0-2).
        "1-dm-inner-spread-shapes": [*DM_INNER, "--set", "DISTILLATION.init_spread=0.25", *SHAPE_POOL,
                                     "--architectures", "convnet,mlp,lenet"],
    },
    # Runs on a lent GPU (an H200, `--device cuda`; the dense path: MinkowskiEngine is not built there), where an outer
    # iteration at fifty per class cost 2.1 s with four jobs sharing it, against 73-136 s on this CPU: DM's inner loop
    # with M3D's kernel and the cosine step for hundreds of iterations instead of the CPU's 30 (fifty) and 100 (ten),
    # and the larger nets' evaluations by the full protocol (5 models x 1000 epochs, fp32) where the CPU afforded one
    # bf16 model.
    "h200": {
        "50-dm-inner-mmd-200": dm_inner_mmd_gpu_50(200, 50, "convnet,mlp,lenet"),
        # Three times the iterations (the same cosine step stretched over 600): does the fifty set keep gaining past
        # 200? Its ConvNet is evaluated by that run, its AlexNet by `alexnet-dm-inner-mmd-600-50` below, its MLP,
        # LeNet, VGG-11 and ResNet-18 on the CPU (PLAN). Alone on the GPU an iteration cost 0.68 s.
        "50-dm-inner-mmd-600": dm_inner_mmd_gpu_50(600, 100, "convnet"),
        "10-dm-inner-mmd-250": herding_10(*DM_INNER, *GAUSSIAN_KERNEL, *COSINE_STEP, "--pytorch", "--device", "cuda",
                                          "--iterations", "250", "--set", "DISTILLATION.save_cad_every=50"),
        # The fifty-per-class sets on the larger nets by the full protocol; the last two: the 600-iteration set on
        # AlexNet, where the 200-iteration set was level with random digits, beside random digits.
        **{f"{arch}-{name}": [*FIFTY_SETS[name], "--architectures", arch, "--device", "cuda"]
           for arch, name in (("alexnet", "herding-50"), ("alexnet", "dm-inner-mmd-50"), ("resnet18", "herding-50"),
                              ("resnet18", "dm-inner-mmd-50"), ("alexnet", "dm-inner-mmd-600-50"),
                              ("alexnet", "random-real-50"))},
    },
    # EVALUATION.precision = bf16: the default's set by the full protocol in bfloat16 autocast, against the same
    # models' fp32 figures (`herding-init/1cpc`: same seeds, same data order).
    "precision": {
        "1cpc-bf16": ["--eval-only", "assets/mnist_1cpc_herding_init.pt", "--architectures",
                      "convnet,mlp,lenet,alexnet", "--set", "EVALUATION.precision=bf16"],
    },
    # The default command as it was until its start became the herding digits (so now with the class means
    # explicitly); its final set is also trained on the MLP and LeNet (about 35 s more on this CPU). The default
    # command of today is `herding-init/1cpc`.
    "default": {"1cpc": ["--architectures", "convnet,mlp,lenet", *MEAN_INIT]},
    # One cloud per class across architectures (the cheap ones on this CPU): the distilled sets and the
    # baselines of the same size, by the default protocol (5 models x 1000 epochs, clean test digits).
    # The first rows trained on the binary projection (the only one then); `-splat` rows on the splat image. The
    # default configuration's set is evaluated on the three by its own run (the `default` grid).
    "cross-arch": {
        name: [*flags, "--architectures", "convnet,mlp,lenet", "--set", f"EVALUATION.projection={projection}"]
        for name, flags, projection in (
            ("me-convnet", ["--eval-only", "assets/mnist_1cpc_me_convnet.pt"], "binary"),
            ("convnet", ["--eval-only", "assets/mnist_1cpc_convnet.pt"], "binary"),
            ("class-mean", ["--baseline", "class-mean"], "binary"),
            ("random-real", ["--baseline", "random-real"], "binary"),
            ("herding", ["--baseline", "herding"], "binary"),
            ("convnet-splat", ["--eval-only", "assets/mnist_1cpc_convnet.pt"], "splat"),
            # Ten clouds per class: the ME set (started from random-real-10) and the baselines of its size.
            ("me-convnet-10-splat", ["--eval-only", "assets/mnist_10cpc_me_convnet.pt"], "splat"),
            ("herding-10", ["--baseline", "herding", "--clouds-per-class", "10"], "splat"),
            ("random-real-10", ["--baseline", "random-real", "--clouds-per-class", "10"], "splat"),
            ("class-mean-10", ["--baseline", "class-mean", "--clouds-per-class", "10"], "splat"),
        )
    } | {
        # The k-means baseline of that size (the start of `distribution/10-dm-inner-kmeans`), fp32 + compile.
        "kmeans-10": ["--baseline", "kmeans", "--clouds-per-class", "10", "--architectures", "convnet,mlp,lenet",
                      "--set", "EVALUATION.projection=splat", *COMPILED_FP32_EVALUATION],
        # Its MLP and LeNet alone (its ConvNet figure, 82.0 % at 3 x 300, is in `baselines`; 40 min more here).
        "class-mean-10-mlp-lenet": ["--baseline", "class-mean", "--clouds-per-class", "10", "--architectures",
                                    "mlp,lenet", "--set", "EVALUATION.projection=splat"],
    },
    # Ten clouds per class on the larger architectures: the best ten-per-class set (`distribution/10-dm-inner`) and
    # its start, herding's ten digits, in bf16 + compile (~3x cheaper here), 2 models each (PLAN).
    "ten-arch": {
        f"{arch}-{name}": [*flags, "--architectures", arch, *FAST_EVALUATION]
        for arch in ("alexnet", "vgg11", "resnet18")
        for name, flags in (("herding-10", ["--baseline", "herding", "--clouds-per-class", "10"]),
                            ("dm-inner-10", ["--eval-only", "assets/mnist_10cpc_dm_inner.pt"]),
                            # DM-inner with the cosine step (`distribution/10-dm-inner-cosine`), level with herding
                            # on the MLP.
                            ("dm-inner-cosine-10", ["--eval-only", "assets/mnist_10cpc_dm_inner_cosine.pt"]),
                            # DM-inner with M3D's Gaussian kernel (`distribution/10-dm-inner-mmd`), above herding
                            # on the MLP with seed 0 (not with seed 1).
                            ("dm-inner-mmd-10", ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd.pt"]),
                            # The other real-digit baseline of that size (class-mean-10, 14 points under it on the
                            # ConvNet, is not run here).
                            ("random-real-10", ["--baseline", "random-real", "--clouds-per-class", "10"]))
    } | {
        # The weakest baseline of that size on the larger nets, so every ten-per-class baseline is measured there.
        **{f"{arch}-class-mean-10": ["--baseline", "class-mean", "--clouds-per-class", "10", "--architectures", arch,
                                     *FAST_EVALUATION] for arch in ("alexnet", "vgg11", "resnet18")},
        # Plain DM's ten-per-class set on AlexNet, where the DM-inner set fell below its start.
        "alexnet-dm-10": ["--eval-only", "assets/mnist_10cpc_dm.pt", "--architectures", "alexnet", *FAST_EVALUATION],
    } | {
        # The Gaussian-kernel set on VGG-11 and ResNet-18 in fp32 (these replace the bf16 entries above): they ran on
        # an AVX2-only CPU, where bf16 is emulated and ~17x slower (fp32 there: 33 min per VGG-11 model beside another
        # job; ~86 min per ResNet-18 one, probed). bf16 matched fp32 within the models' spread
        # (`precision/1cpc-bf16`), so the bf16 herding-10 rows stay the comparison.
        f"{arch}-dm-inner-mmd-10": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd.pt", "--architectures", arch]
        for arch in ("vgg11", "resnet18")
    } | {
        # The kernel with the cosine step (`distribution/10-dm-inner-mmd-cosine`, the best ten-per-class MLP and LeNet
        # figures), fp32 as the entries above.
        f"{arch}-dm-inner-mmd-cosine-10": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd_cosine.pt",
                                           "--architectures", arch] for arch in ("alexnet", "vgg11", "resnet18")
    } | {
        # Its second distillation seed, so the all-six claim at ten does not rest on one set.
        f"{arch}-dm-inner-mmd-cosine-seed1-10": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd_cosine_seed1.pt",
                                                 "--architectures", arch] for arch in ("alexnet", "vgg11", "resnet18")
    } | {
        # Herding's ten digits on AlexNet by the full protocol (5 models, fp32): the bf16 pair above is the baseline
        # every ten-per-class set is judged against there, and AlexNet's models swing by points.
        "alexnet-herding-10-fp32": ["--baseline", "herding", "--clouds-per-class", "10", "--architectures", "alexnet"],
        # The kernel sets (with the cosine step, both seeds; alone) by the same protocol, so the AlexNet comparison
        # is five fp32 models against five.
        **{f"alexnet-{name}-10-fp32": ["--eval-only", f"assets/mnist_10cpc_{name.replace('-', '_')}.pt",
                                       "--architectures", "alexnet"]
           for name in ("dm-inner-mmd-cosine", "dm-inner-mmd-cosine-seed1", "dm-inner-mmd", "dm-inner-mmd-250")},
        # Seed 0's kernel-with-cosine set on ResNet-18 with a second model, so its figure has a spread.
        "resnet18-dm-inner-mmd-cosine-10-2models": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd_cosine.pt",
                                                    "--architectures", "resnet18"],
        # The H200's 250-iteration kernel-with-cosine set (`h200/10-dm-inner-mmd-250`: the best ten-per-class MLP and
        # LeNet figures) on the larger nets, bf16 + compile (this CPU has AMX).
        **{f"{arch}-dm-inner-mmd-250-10": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd_250.pt", "--architectures",
                                           arch, *FAST_EVALUATION] for arch in ("alexnet", "vgg11", "resnet18")},
        # Its ResNet-18 with a second model (evaluation seed 1), so that figure has a spread.
        "resnet18-dm-inner-mmd-250-10-seed1": ["--eval-only", "assets/mnist_10cpc_dm_inner_mmd_250.pt",
                                               "--architectures", "resnet18", *FAST_EVALUATION,
                                               "--set", "DEFAULT.seed=1"],
    },
    # Fifty clouds per class on the larger architectures: the fifty-per-class assets (`distribution/50-dm`,
    # `50-dm-inner`, `50-dm-inner-cosine`) and their start, herding's fifty digits, as `ten-arch` (bf16 + compile;
    # 2 models or 1 each, as PLAN says).
    "fifty-arch": {
        f"{arch}-{name}": [*flags, "--architectures", arch, *FAST_EVALUATION]
        for arch in ("alexnet", "vgg11", "resnet18") for name, flags in FIFTY_SETS.items()
    } | {
        # More models (evaluation seeds 1, 2) where the first left a set level with, under or barely above herding-50 /
        # random-real-50; for a baseline drawn at random (random-real) another seed draws other digits too.
        f"{arch}-{name}-seed{seed}": [*FIFTY_SETS[name], "--architectures", arch, *FAST_EVALUATION,
                                      "--set", f"DEFAULT.seed={seed}"]
        for arch, name, seed in (("vgg11", "dm-inner-mmd-50", 1), ("vgg11", "herding-50", 1),
                                 ("vgg11", "random-real-50", 1), ("alexnet", "dm-inner-mmd-200-50", 1),
                                 ("vgg11", "dm-inner-mmd-200-50", 1), ("resnet18", "dm-inner-mmd-200-50", 1),
                                 ("resnet18", "herding-50", 1), ("resnet18", "random-real-50", 1),
                                 ("alexnet", "random-real-50", 1), ("alexnet", "dm-inner-mmd-200-50", 2),
                                 ("resnet18", "dm-inner-mmd-600-50", 1), ("vgg11", "dm-inner-mmd-600-50", 1))
    } | {
        # The kernel with the cosine step at fifty (`distribution/50-dm-inner-mmd-cosine`), in fp32 as `ten-arch`'s
        # AVX2 entries.
        f"{arch}-dm-inner-mmd-cosine-50": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_cosine.pt",
                                           "--architectures", arch] for arch in ("alexnet", "vgg11")
    } | {
        # Its VGG-11 in bf16 + compile, as the other fifty-per-class sets' (fp32 costs ~3 h per model here).
        "vgg11-dm-inner-mmd-cosine-50-bf16": ["--eval-only", "assets/mnist_50cpc_dm_inner_mmd_cosine.pt",
                                              "--architectures", "vgg11", *FAST_EVALUATION],
    },
    # The evaluation models trained with DSA's augmentation (EVALUATION.augment_strategy=dsa; DSA's and DM's published
    # figures use it) instead of DC's: the best ten-per-class set and its start, herding's ten digits.
    "dsa-eval": {
        name: [*flags, "--architectures", archs, *DSA_EVALUATION]
        for name, flags, archs in (
            ("10-dm-inner", ["--eval-only", "assets/mnist_10cpc_dm_inner.pt"], "convnet"),
            ("10-dm-inner-mlp-lenet", ["--eval-only", "assets/mnist_10cpc_dm_inner.pt"], "mlp,lenet"),
            ("herding-10", ["--baseline", "herding", "--clouds-per-class", "10"], "convnet"),
            ("herding-10-mlp-lenet", ["--baseline", "herding", "--clouds-per-class", "10"], "mlp,lenet"))
    },
    # The assets (best sets) under the default protocol: 5 fresh models x 1000 epochs.
    "final": {
        "1cpc-convnet": [*SEED_CLEAN_TEST, "--eval-only", "assets/mnist_1cpc_convnet.pt"],
        "10cpc-convnet": [*SEED_CLEAN_TEST, "--eval-only", "assets/mnist_10cpc_convnet.pt"],
    },
}


# The best synthetic sets, shown in the README: asset name -> (grid, run, iteration). Each is written from its
# run's checkpoint (points, labels, settings, evaluations; no optimiser state) with its projected digit grid.
# The iteration pins the set that the `final` grid evaluated: a longer run of the same name gets its own row
# in the table instead of silently replacing an asset whose `final` figure would then be stale.
ASSETS = {"mnist_1cpc_convnet": ("convnet", "meaninit", 300), "mnist_10cpc_convnet": ("convnet", "realinit-10", 400),
          "mnist_1cpc_me_convnet": ("me-convnet", "bg-h1", 300), "mnist_1cpc_default": ("default", "1cpc", 400),
          "mnist_10cpc_me_convnet": ("me-convnet", "bg-h1-aug-realinit-10", 400),
          "mnist_10cpc_herding_init": ("me-convnet", "bg-h1-aug-herding-10", 200),
          "mnist_1cpc_herding_init": ("herding-init", "1cpc", 400),
          "mnist_10cpc_dm": ("distribution", "10-dm", 400), "mnist_1cpc_dm": ("distribution", "1-dm", 400),
          "mnist_50cpc_dm": ("distribution", "50-dm", 300),
          "mnist_10cpc_dm_inner": ("distribution", "10-dm-inner", 100),
          "mnist_1cpc_dm_inner": ("distribution", "1-dm-inner", 100),
          "mnist_50cpc_dm_inner": ("distribution", "50-dm-inner", 30),
          "mnist_50cpc_dm_inner_cosine": ("distribution", "50-dm-inner-cosine", 30),
          "mnist_10cpc_dm_inner_cosine": ("distribution", "10-dm-inner-cosine", 100),
          "mnist_10cpc_dm_inner_mmd": ("distribution", "10-dm-inner-mmd", 100),
          "mnist_10cpc_dm_inner_mmd_cosine": ("distribution", "10-dm-inner-mmd-cosine", 100),
          "mnist_10cpc_dm_inner_mmd_cosine_seed1": ("distribution", "10-dm-inner-mmd-cosine-seed1", 100),
          "mnist_50cpc_dm_inner_mmd": ("distribution", "50-dm-inner-mmd", 30),
          "mnist_50cpc_dm_inner_mmd_cosine": ("distribution", "50-dm-inner-mmd-cosine", 30),
          "mnist_10cpc_dm_inner_mmd_250": ("h200", "10-dm-inner-mmd-250", 250),
          "mnist_50cpc_dm_inner_mmd_600": ("h200", "50-dm-inner-mmd-600", 600),
          "mnist_1cpc_dm_inner_spread": ("distribution", "1-dm-inner-spread", 100),
          "mnist_1cpc_dm_inner_spread_seed1": ("distribution", "1-dm-inner-spread-seed1", 100)}


@dataclass(frozen=True)
class Budget:
    """Reduced budget of a grid call; None keeps the INI's default."""

    iterations: int | None = None
    eval_epochs: int | None = None
    eval_models: int | None = None
    eval_iterations: str = "0"  # with reduced iterations: evaluate at these (and always at the end)

    def flags(self) -> list[str]:
        out = []
        for flag, value in (("--iterations", self.iterations), ("--eval-epochs", self.eval_epochs),
                            ("--eval-models", self.eval_models)):
            if value is not None:
                out += [flag, str(value)]
        if self.iterations is not None:
            out += ["--set", f"DISTILLATION.eval_iterations={self.eval_iterations}"]
        return out


SHORT = Budget(100, 300, 3)
MEDIUM = Budget(300, 300, 3)
# The calls that made the README's table: (grid, names or None for all, budget). `--all` replays them; runs
# already finished with the same command are skipped.
PLAN: list[tuple[str, list[str] | None, Budget]] = [
    ("baselines", None, MEDIUM),
    ("seed-table1", None, SHORT),
    ("seed-table1", ["me-d2"], Budget(1000, 300, 3)),
    # The headline configurations at the seed's full budget: each continues its shorter run above.
    ("seed-table1", ["me-d2", "pytorch-d3"], Budget(2500, 300, 3)),
    # Table 2's modmse rows are Table 1's me-d2 and pytorch-d3 runs (the same settings).
    ("seed-table2", ["me-ours", "pytorch-ours"], SHORT),
    ("seed-head", None, SHORT),
    ("beyond", ["me-dc-splat-realinit-adam", "me-dc-splat-meaninit-adam"], MEDIUM),
    ("convnet", ["meaninit", "realinit"], Budget(300, 300, 3, "0,100,200")),
    # Its start is the random-real-10 baseline (same digits, same evaluation seed): evaluated at the end only.
    ("convnet", ["realinit-10"], Budget(200, 300, 3, "200")),
    # The same run continued to 400 iterations: the 10-cloud asset (ASSETS) that `final` evaluates.
    ("convnet", ["realinit-10"], Budget(400, 300, 3, "400")),
    ("final", None, Budget()),
    ("me-convnet", ["h1", "h2", "bg-h1", "bg-h1-aug"], Budget(300, 300, 3, "300")),
    # bg-h1-aug continued (its 300-iteration evaluation is in the run it continues).
    ("me-convnet", ["bg-h1-aug"], Budget(1000, 300, 3, "600")),
    ("me-convnet", ["bg-h1-aug-realinit-10"], Budget(400, 300, 3, "400")),
    ("me-convnet", ["bg-h1-aug-herding-10"], Budget(200, 1000, 5, "200")),
    ("default", None, Budget()),
    ("pool", None, Budget()),
    ("normalize", None, Budget()),
    ("alexnet", ["default-set", "herding", "class-mean", "random-real"], Budget()),
    ("herding-init", None, Budget()),
    ("vgg11", ["default-set", "herding", "dm-set"], Budget(eval_models=2)),
    ("resnet18", ["default-set", "herding", "dm-set"], Budget(eval_models=2)),
    ("fifty", None, Budget(300, 300, 2, "300")),
    ("step-size", ["10-lr0.01"], Budget(200, 300, 2, "0,200")),
    ("step-size", ["10-lr0.05"], Budget(eval_epochs=300, eval_models=2)),
    ("step-size", ["10-lr0.05-binary"], Budget()),
    ("inner-loop", None, Budget(20, 300, 2, "20")),
    ("real-batch", None, Budget(200, 300, 2, "200")),
    ("distribution", ["10-dm"], Budget(400, 300, 2, "200")),
    ("distribution", ["1-dm"], Budget()),
    ("distribution", ["10-dm-mlp"], Budget(400, 300, 2, "200")),
    ("distribution", ["10-dm-full"], Budget()),
    ("distribution", ["50-dm"], Budget(300, 300, 2, "300")),
    ("distribution", ["10-dm-inner"], Budget(100, 300, 2, "100")),
    # The same run continued to 200 iterations (resumes its checkpoint at 100).
    ("distribution", ["10-dm-inner"], Budget(200, 300, 2, "200")),
    ("distribution", ["10-dm-inner-full", "10-dm-inner-full-mlp-lenet"], Budget()),
    ("distribution", ["1-dm-inner"], Budget(100, eval_iterations="100")),
    ("vgg11", ["dm-inner-set"], Budget(eval_models=2)),  # after 1-dm-inner: its set is the asset
    ("resnet18", ["dm-inner-set"], Budget(eval_models=2)),
    ("distribution", ["10-dm-inner4x50"], Budget(60, 300, 2, "60")),
    ("distribution", ["10-dm-inner-real"], Budget(100, 300, 2, "100")),
    ("distribution", ["10-dm-inner3x10"], Budget(100, 300, 2, "100")),
    ("distribution", ["10-dm-inner-aug"], Budget(100, 300, 2, "100")),
    ("distribution", ["50-dm-inner"], Budget(30, 1000, 2, "30")),  # 136 s per iteration beside another job
    ("distribution", ["10-dm-inner-dense", "10-dm-inner-cosine"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-anneal"], Budget(40, eval_iterations="40")),
    ("distribution", ["10-dm-inner-spread", "1-dm-inner-spread"], Budget(100, eval_iterations="100")),
    # After 10-dm-inner-spread's 100 iterations: its set is assets/mnist_10cpc_dm_inner_spread.pt.
    ("distribution", ["10-dm-inner-spread-fast", "10-dm-inner-spread-mlp-lenet", "10-dm-inner-spread-full"], Budget()),
    ("distribution", ["10-dm-inner-seed1", "10-dm-inner-lr01", "10-dm-inner-b512",
                      "10-dm-inner-cutout"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-ce05", "10-dm-inner-ce2"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-fast"], Budget()),
    # After 10-dm-inner-seed2, -seed3 and 1-dm-inner-spread-seed1: the assets are the seeds' means (average_sets.py).
    ("distribution", ["10-dm-inner-soup3", "1-dm-inner-spread-soup2"], Budget()),
    # After 1-dm-inner-spread: its set is the asset mnist_1cpc_dm_inner_spread, on the other three architectures.
    ("alexnet", ["dm-inner-spread-set"], Budget()),
    ("vgg11", ["dm-inner-spread-set"], Budget(eval_models=2)),
    ("resnet18", ["dm-inner-spread-set"], Budget(eval_models=2)),
    # The other two baselines of one cloud per class on the two architectures (the `alexnet` grid has all three).
    ("vgg11", ["class-mean", "random-real"], Budget(eval_models=2)),
    ("resnet18", ["class-mean", "random-real"], Budget(eval_models=2)),
    ("distribution", ["10-dm-inner-b128"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-layers", "1-dm-inner-spread-layers"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-seed2"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-norms", "1-dm-inner-spread-norms"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-seed3", "1-dm-inner-spread-seed1"], Budget(100, eval_iterations="100")),
    ("distribution", ["1-dm-inner-spread-seed2"], Budget(100, eval_iterations="100")),
    # After 1-dm-inner-spread-seed1: its set is the asset mnist_1cpc_dm_inner_spread_seed1.
    ("alexnet", ["dm-inner-spread-seed1-set"], Budget()),
    ("vgg11", ["dm-inner-spread-seed1-set"], Budget(eval_models=2)),
    ("resnet18", ["dm-inner-spread-seed1-set"], Budget(eval_models=2)),
    ("ten-arch", [n for n in GRIDS["ten-arch"]
                  if not n.endswith(("-dm-inner-cosine-10", "-dm-inner-mmd-10", "-mmd-cosine-10", "-seed1-10",
                                     "-fp32", "-2models", "-250-10", "-10-seed1"))],
     Budget(eval_models=2)),
    # After distribution/10-dm-inner-cosine: its set is the asset.
    ("ten-arch", [n for n in GRIDS["ten-arch"] if n.endswith("-dm-inner-cosine-10")], Budget(eval_models=2)),
    ("fifty-full", ["50-dm", "herding"], Budget(eval_models=2)),  # after 50-dm: its set is the asset mnist_50cpc_dm
    ("fifty-full", ["50-dm-mlp-lenet", "herding-mlp-lenet"], Budget()),
    ("fifty-full", ["50-dm-inner-mlp-lenet"], Budget()),  # after distribution/50-dm-inner: its set is the asset
    ("fifty-arch", ["alexnet-herding-50", "alexnet-dm-50"], Budget(eval_models=2)),
    ("fifty-arch", ["alexnet-dm-inner-50"], Budget(eval_models=2)),  # the best fifty-per-class set (ASSETS)
    # VGG-11 at fifty: ~1 h per model beside another job, so one model (the best fifty-per-class set).
    ("fifty-arch", ["vgg11-dm-inner-50"], Budget(eval_models=1)),
    # ResNet-18 at fifty: ~2 h 10 min per model beside another job, so one model each for the best set and its start.
    ("fifty-arch", ["resnet18-herding-50", "resnet18-dm-inner-50"], Budget(eval_models=1)),
    ("fifty-arch", ["vgg11-herding-50"], Budget(eval_models=1)),
    # DM's inner loop at fifty with the cosine step, 81 s per iteration alone on a core, 136 s beside another job.
    ("distribution", ["50-dm-inner-cosine"], Budget(30, 1000, 2, "30")),
    ("fifty-full", ["50-dm-inner-cosine-mlp-lenet"], Budget()),  # after it: its set is the asset
    ("fifty-arch", ["alexnet-dm-inner-cosine-50", "vgg11-dm-inner-cosine-50"], Budget(eval_models=1)),
    ("distribution", ["10-dm-inner-cosine01"], Budget(100, eval_iterations="100")),
    ("distribution", ["50-dm-inner-more"], Budget(30, 1000, 2, "30")),  # after 50-dm-inner: its set is the start
    ("distribution", ["10-dm-inner-cosine-seed1"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-mmd"], Budget(100, eval_iterations="100")),
    ("ten-arch", ["alexnet-dm-inner-mmd-10"], Budget(eval_models=2)),  # after 10-dm-inner-mmd: its set is the asset
    ("distribution", ["10-dm-inner-mmd-seed1"], Budget(100, eval_iterations="100")),
    ("distribution", ["50-dm-inner-mmd"], Budget(30, eval_models=2, eval_iterations="30")),  # 1000 epochs: the INI's
    ("fifty-full", ["50-dm-inner-mmd-mlp-lenet"], Budget()),  # after it: its set is the asset
    ("distribution", ["1-dm-inner-spread-mmd"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-pool"], Budget(100, eval_iterations="100")),
    ("distribution", ["50-dm-inner-pool"], Budget(60, eval_models=2, eval_iterations="60")),
    ("distribution", ["10-dm-inner-pixel"], Budget(100, eval_iterations="100")),
    ("distribution", ["50-dm-inner-pixel"], Budget(30, eval_models=2, eval_iterations="30")),
    ("distribution", ["10-dm-inner-shapes", "1-dm-inner-spread-shapes"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-binary-mlp-lenet"], Budget()),
    ("distribution", ["10-dm-inner-mmd-cosine", "10-dm-inner-mmd-cosine-seed1"], Budget(100, eval_iterations="100")),
    # After them: their sets are the assets.
    ("distribution", ["10-dm-inner-mmd-cosine-seed1-full"], Budget()),
    ("distribution", ["50-dm-inner-mmd-cosine"], Budget(30, eval_iterations="30")),
    ("ten-arch", ["alexnet-dm-inner-mmd-cosine-10", "vgg11-dm-inner-mmd-cosine-10"], Budget(eval_models=2)),
    ("ten-arch", ["vgg11-dm-inner-mmd-10"], Budget(eval_models=2)),
    # One model each: 111 min per ResNet-18 in fp32 here beside another job (measured).
    ("ten-arch", ["resnet18-dm-inner-mmd-cosine-10"], Budget(eval_models=1)),
    # fp32 at fifty per class (two steps of 256 a epoch), measured here: AlexNet 12.5 s per epoch on one core
    # (~3.5 h per model), 7.1 s on two threads (119 min); VGG-11 11 s per epoch on one core (~3 h).
    ("fifty-arch", ["vgg11-dm-inner-mmd-cosine-50", "alexnet-dm-inner-mmd-cosine-50"], Budget(eval_models=1)),
    ("fifty-full", ["50-dm-inner-mmd-cosine-convnet", "50-dm-inner-mmd-cosine-convnet-seed1"], Budget(eval_models=1)),
    ("distribution", ["10-dm-inner-noaug", "10-dm-inner-dcaug"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-kmeans"], Budget(100, eval_iterations="100")),
    ("distribution", ["10-dm-inner-lr0025", "10-dm-inner-lr0025-seed1"], Budget(100, eval_iterations="100")),
    # Continued to 200 iterations (resumed from 100): the same total step as 0.05 x 100, in steps half as long.
    ("distribution", ["10-dm-inner-lr0025", "10-dm-inner-lr0025-seed1"], Budget(200, eval_iterations="200")),
    ("ten-arch", ["alexnet-dm-inner-mmd-cosine-seed1-10", "vgg11-dm-inner-mmd-cosine-seed1-10"], Budget(eval_models=2)),
    ("ten-arch", ["resnet18-dm-inner-mmd-cosine-seed1-10"], Budget(eval_models=1)),
    ("distribution", ["50-dm-inner-mmd-cosine-60"], Budget(60, eval_iterations="60")),
    ("ten-arch", ["alexnet-herding-10-fp32"], Budget()),
    ("ten-arch", ["alexnet-dm-inner-mmd-cosine-10-fp32", "alexnet-dm-inner-mmd-cosine-seed1-10-fp32"], Budget()),
    ("ten-arch", ["alexnet-dm-inner-mmd-10-fp32"], Budget()),
    ("ten-arch", ["resnet18-dm-inner-mmd-cosine-10-2models"], Budget(eval_models=2)),
    # The kernel-alone set's ResNet-18, the one architecture not measured for it (one model, fp32, two threads).
    ("ten-arch", ["resnet18-dm-inner-mmd-10"], Budget(eval_models=1)),
    ("fifty-full", ["kmeans-mlp-lenet"], Budget()),
    ("fifty-full", ["kmeans-convnet"], Budget(eval_models=1)),
    # Random-real and class-mean at fifty by the full protocol, for the fifty-per-class rows of the table.
    ("fifty-full", ["random-real-mlp-lenet", "class-mean-mlp-lenet"], Budget()),
    ("fifty-full", ["random-real-convnet", "class-mean-convnet"], Budget(eval_models=2)),
    # The best fifty-per-class ConvNet set (the kernel alone, ASSETS: `mnist_50cpc_dm_inner_mmd`) on the larger nets,
    # one model each, then its ResNet-18 (~130 min per model here), so that it has all six architectures.
    ("fifty-arch", ["alexnet-dm-inner-mmd-50", "vgg11-dm-inner-mmd-50"], Budget(eval_models=1)),
    ("fifty-arch", ["resnet18-dm-inner-mmd-50"], Budget(eval_models=1)),
    # Random-real's fifty digits on AlexNet and VGG-11, the baseline beside herding's in the fifty-per-class rows.
    ("fifty-arch", ["alexnet-random-real-50", "vgg11-random-real-50"], Budget(eval_models=1)),
    # Random-real's fifty on ResNet-18 (herding-50's column has it), and the kernel-with-cosine set's VGG-11 in bf16.
    ("fifty-arch", ["resnet18-random-real-50", "vgg11-dm-inner-mmd-cosine-50-bf16"], Budget(eval_models=1)),
    ("fifty-arch", ["vgg11-dm-inner-mmd-50-seed1", "vgg11-herding-50-seed1"], Budget(eval_models=1)),
    # On a CUDA machine (`--device cuda`: elsewhere these calls fail at once and the replay goes on): its sets are the
    # assets the next calls evaluate here.
    ("h200", None, Budget()),
    ("ten-arch", ["alexnet-dm-inner-mmd-250-10", "vgg11-dm-inner-mmd-250-10"], Budget(eval_models=2)),
    ("ten-arch", ["resnet18-dm-inner-mmd-250-10"], Budget(eval_models=1)),
    # The H200's 200-iteration fifty set, its ConvNet on this CPU (2 bf16 models, ~14 min each).
    ("fifty-full", ["50-dm-inner-mmd-200-convnet"], Budget(eval_models=2)),
    ("fifty-full", ["50-dm-inner-mmd-200-mlp-lenet"], Budget()),
    ("fifty-arch", ["alexnet-dm-inner-mmd-200-50", "vgg11-dm-inner-mmd-200-50", "resnet18-dm-inner-mmd-200-50"],
     Budget(eval_models=1)),
    ("fifty-arch", ["alexnet-dm-inner-mmd-200-50-seed1", "vgg11-dm-inner-mmd-200-50-seed1"], Budget(eval_models=1)),
    ("fifty-arch", ["resnet18-dm-inner-mmd-200-50-seed1", "vgg11-random-real-50-seed1"], Budget(eval_models=1)),
    # Second ResNet-18 models of the two fifty-per-class baselines, so that the 200-iteration set's two models there
    # are set against two of each (~80 min per model here).
    ("fifty-arch", ["resnet18-herding-50-seed1", "resnet18-random-real-50-seed1"], Budget(eval_models=1)),
    # AlexNet, where the set's two models were above both baselines by less than one spread: random-real-50's second
    # draw and the set's third model (~45 min each here).
    ("fifty-arch", ["alexnet-random-real-50-seed1", "alexnet-dm-inner-mmd-200-50-seed2"], Budget(eval_models=1)),
    # The H200's 600-iteration fifty set (distilled and judged on the ConvNet and AlexNet there, `h200` above): its
    # MLP and LeNet by the full protocol, its VGG-11 and ResNet-18 by one bf16 model each (VGG-11: 69 min here;
    # ResNet-18: ~140 min beside its second model, below).
    ("fifty-full", ["50-dm-inner-mmd-600-mlp-lenet"], Budget()),
    ("fifty-arch", ["vgg11-dm-inner-mmd-600-50", "resnet18-dm-inner-mmd-600-50"], Budget(eval_models=1)),
    # The 600-iteration set's second ResNet-18 model, beside its first (one core each), so that it is set against
    # herding-50's and random-real-50's two models there.
    ("fifty-arch", ["resnet18-dm-inner-mmd-600-50-seed1"], Budget(eval_models=1)),
    # The class-mean baseline at fifty on the three larger nets, the only baseline of that size not yet measured there,
    # so that "above every baseline of its size on all six" rests on measurements (one bf16 model each; VGG-11 then
    # AlexNet on one core, 61 + 78 min; ResNet-18 on the other, 139 min).
    ("fifty-arch", ["vgg11-class-mean-50", "alexnet-class-mean-50"], Budget(eval_models=1)),
    ("fifty-arch", ["resnet18-class-mean-50"], Budget(eval_models=1)),
    # The 600-iteration set's second VGG-11 model (one core, 53 min), beside five more fp32 ConvNets for the
    # ten-per-class headline set (the other core, 31 min).
    ("fifty-arch", ["vgg11-dm-inner-mmd-600-50-seed1"], Budget(eval_models=1)),
    ("distribution", ["10-dm-inner-full-seed1"], Budget()),
    # Then, on that core, the 250-iteration ten-per-class set on AlexNet by five fp32 models, as herding-10's there
    # (113 min).
    ("ten-arch", ["alexnet-dm-inner-mmd-250-10-fp32"], Budget()),
    # And on the first core, after the VGG-11 model, that set's second ResNet-18 model (27 min).
    ("ten-arch", ["resnet18-dm-inner-mmd-250-10-seed1"], Budget(eval_models=1)),
    ("precision", None, Budget()),
    ("cross-arch", None, Budget()),
    ("dsa-eval", None, Budget()),
    # This project's faithful mode at the iterations where the seed's own code was evaluated
    # (experiments/seed_faithfulness.py).
    ("seed-faithful", None, Budget(250, 300, 3, "0,100")),
]


def command(grid: str, name: str, flags: list[str], budget: Budget) -> list[str]:
    return [sys.executable, "mnist_distill.py", "--exp", name, "--no-log",
            "--set", f"DEFAULT.logging_parent={RUNS / grid}", *budget.flags(), *flags]


def shown(text: str) -> str:
    """Paths inside the repository written relative to it."""
    return text.replace(str(ROOT) + "/", "")


def command_line(cmd: list[str]) -> str:
    """The command as recorded in results.json and the table: ``python``, paths relative to the repository."""
    return shown(shlex.join(["python", *cmd[1:]]))


def finished_runs(grid: str = "*", name: str = "*") -> list[tuple[Path, dict]]:
    """(run folder, results) of every run that completed or was evaluated, oldest first; not interrupted ones."""
    runs = [(path.parent, json.loads(path.read_text())) for path in sorted(RUNS.glob(f"{grid}/*_{name}/results.json"))]
    return [(folder, results) for folder, results in runs if results.get("status") in ("completed", "evaluated")]


def finished(grid: str, name: str, cmdline: str) -> Path | None:
    return next((folder / "results.json" for folder, results in finished_runs(grid, name)
                 if results.get("command") == cmdline), None)


def resumable(grid: str, name: str, cmd: list[str]) -> Path | None:
    """The run folder with the furthest checkpoint this command can continue exactly, if any."""
    if "--eval-only" in cmd or "--baseline" in cmd:
        return None
    fresh = load_settings(cmd[2:])
    best, best_iteration = None, 0
    for path in sorted((RUNS / grid).glob(f"*_{name}/{CHECKPOINT_NAME}")):
        try:
            state = load_checkpoint(path)
            check_resumable(state["settings"], fresh)
        except (CheckpointError, SettingsError):
            continue
        iteration = int(state["iteration"])
        # A checkpoint at the target itself still counts when that set was never evaluated (a longer run
        # stopped there): continuing it just evaluates.
        evaluated = any(e["iteration"] == iteration for e in state.get("evaluations", []))
        if best_iteration < iteration and (iteration < fresh.total_iterations
                                           or (iteration == fresh.total_iterations and not evaluated)):
            best, best_iteration = path.parent, iteration
    return best


def run(grid: str, name: str, flags: list[str], budget: Budget, dry_run: bool) -> bool:
    """Run one configuration unless it is already done; True when a new run finished."""
    cmd = command(grid, name, flags, budget)
    cmdline = command_line(cmd)
    if finished(grid, name, cmdline):
        print(f"[skip] {grid}/{name}: already done")
        return False
    start = resumable(grid, name, cmd)
    print(f"[run] {cmdline}" + (f" (continues {shown(str(start))})" if start else ""), flush=True)
    if dry_run:
        return False
    proc = subprocess.run([*cmd, "--resume", str(start)] if start else cmd, cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode == EXIT_INTERRUPTED:
        print(f"[stopped] {grid}/{name} at its last checkpoint: the same command continues it")
        return False
    if proc.returncode != 0:
        print(f"[fail] {grid}/{name} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        return False
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run folder: "))
    results = json.loads((run_dir / "results.json").read_text())
    results["command"] = cmdline
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    final = results["evaluations"][-1]
    print(f"[done] {grid}/{name}: {100 * final['mean']:.2f} +- {100 * final['std']:.2f} %")
    return True


def table() -> str:
    rows = ["| grid | run | test accuracy (%) | other architectures (%) | iterations | evaluation | s / iteration | "
            "command |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder, r in finished_runs():
        if "command" not in r:
            continue
        s, final = r["settings"], r["evaluations"][-1]
        iters = "–" if "baseline" in r else str(r["iteration"])  # --eval-only: the saved set's iteration
        spi = "–" if r["status"] == "evaluated" else f"{r['timings']['seconds_per_iteration']:.2f}"
        protocol = (f"{s['eval_models']} × {s['eval_epochs']} ep" + (", aug. test" if s["augment_test"] else "")
                    + (", DSA aug." if s.get("eval_augment_strategy") == "dsa" else ""))
        others = ", ".join(f"{arch} {100 * a['mean']:.1f} ± {100 * a['std']:.1f}"
                           for arch, a in list(final.get("architectures", {}).items())[1:]) or "–"
        grid, name = run_name(folder)
        rows.append(f"| {grid} | {name} | "
                    f"{100 * final['mean']:.2f} ± {100 * final['std']:.2f} | {others} | {iters} | {protocol} | {spi} | "
                    f"`{r['command']}` |")
    return "\n".join(rows)


def replaced_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between its ``start`` and ``end`` markers replaced by ``body``."""
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def architectures() -> str:
    """The across-architectures table of the committed runs and the files in assets/."""
    sizes = {path.stem: len(load_checkpoint(path, for_resume=False)["labels"]) // 10
             for path in sorted((ROOT / "assets").glob("*.pt"))}
    return architecture_table(finished_runs(), ASSETS, sizes)


def update_readme() -> None:
    text = replaced_between(README.read_text(), START, END, table())
    README.write_text(replaced_between(text, ARCH_START, ARCH_END, architectures()))


def export_assets() -> None:
    """Refresh each asset from the newest completed run at its pinned iteration that still has its checkpoint
    (checkpoints are not in git)."""
    for asset, (grid, name, iteration) in ASSETS.items():
        done = [folder for folder, results in finished_runs(grid, name)
                if results["status"] == "completed" and results["iteration"] == iteration
                and (folder / CHECKPOINT_NAME).exists()]
        if not done:
            continue
        state = load_checkpoint(done[-1])
        small = {key: state[key] for key in ("points", "labels", "iteration", "settings", "evaluations")}
        torch.save(small, ROOT / "assets" / f"{asset}.pt")
        projection = small["settings"].get("eval_projection", "binary")  # the image its evaluations trained on
        grid_image = digit_grid(project_points(small["points"], projection), small["labels"])
        save_digit_grid(ROOT / "assets" / f"{asset}.png", grid_image)
        print(f"[asset] assets/{asset}.pt and .png from {done[-1].relative_to(ROOT)}")


def planned_calls(grids: list[str], only: list[str] | None) -> list[tuple[str, list[str], Budget]]:
    """PLAN's calls for these grids (and names), in PLAN's order, so a grid replays with the budgets its table
    rows were made with; a name PLAN never runs gets the INI's budget."""
    calls: list[tuple[str, list[str], Budget]] = []
    for grid in grids:
        names = [name for name in GRIDS[grid] if only is None or name in only]
        planned: set[str] = set()
        for plan_grid, plan_names, plan_budget in PLAN:
            if plan_grid != grid:
                continue
            chosen = [name for name in names if plan_names is None or name in plan_names]
            if chosen:
                calls.append((grid, chosen, plan_budget))
                planned.update(chosen)
        unplanned = [name for name in names if name not in planned]
        if unplanned:
            calls.append((grid, unplanned, Budget()))
    return calls


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grids", nargs="*", metavar="GRID", help=f"grids to run: {', '.join(GRIDS)}")
    p.add_argument("--all", action="store_true", help="replay PLAN: every run of the README's table")
    # Without any budget flag a grid runs with PLAN's budgets; any budget flag replaces them for every name.
    p.add_argument("--iterations", type=int, help="budget: outer iterations (default: PLAN's, else the INI's)")
    p.add_argument("--eval-epochs", type=int, help="budget: epochs per evaluation model (default: PLAN's, else 1000)")
    p.add_argument("--eval-models", type=int, help="budget: evaluation models (default: PLAN's, else 5)")
    p.add_argument("--eval-iterations", help="with --iterations: evaluate at these (default 0 and end)")
    p.add_argument("--only", nargs="*", default=None, help="run only these names of the grids")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--table-only", action="store_true", help="only regenerate the README's two tables")
    args = p.parse_args()
    unknown = [g for g in args.grids if g not in GRIDS]
    if unknown:
        p.error(f"unknown grid {unknown[0]!r} (choose from {', '.join(GRIDS)})")
    budget_flags = (args.iterations, args.eval_epochs, args.eval_models, args.eval_iterations)
    if args.all:
        calls = PLAN
    elif any(flag is not None for flag in budget_flags):
        budget = Budget(args.iterations, args.eval_epochs, args.eval_models, args.eval_iterations or "0")
        calls = [(grid, args.only, budget) for grid in args.grids]
    else:
        calls = planned_calls(args.grids, args.only)
    if not args.table_only:
        for grid, names, call_budget in calls:
            ran = [run(grid, name, flags, call_budget, args.dry_run)
                   for name, flags in GRIDS[grid].items() if names is None or name in names]
            if any(ran):  # before later calls: the final grid evaluates the refreshed assets
                export_assets()
    if not args.dry_run:  # a dry run writes nothing, the README included
        update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
