"""Speed of one outer iteration and of one evaluation model, against a seed-form reference and the
machine's own floor, measured side by side in one run. Prints one JSON object.

    .venv/bin/python benchmarks/bench.py [--device cpu|cuda] [--quick]

* paths: seconds per outer iteration (median after warm-up) of the project's PyTorch and MinkowskiEngine
  paths at the seed's configuration (configs/seed.ini: 10 classes x 256 real digits, 1 cloud x 250 points,
  modmse, second-order terms included);
* seed_code: the seed's own ``mnist_distill.py`` on the same machine in the same run, per path
  (``../shared/tools/seed_bench.sh``; needs the seed's git dir, ``fetch github:kghandour/dd3d``; skipped when
  absent), and each path's speed-up over it;
* reference: the seed's way of doing the same per class -- the literal Conv3d grid for the PyTorch path
  (same math); ME's own modules for the ME path (first-order only, as the seed ran it: timed, not equal);
* configurations: the default configuration (configs/default.ini, the MinkowskiEngine ConvNet) and the best
  dense mode (configs/convnet.ini), seconds per iteration with their floors;
* floor: FLOPs of one outer iteration (torch.utils.flop_counter) / this machine's sgemm speed measured
  here; each path's ratio to it;
* evaluation: one DC ConvNet trained for the default epochs on 10 images, plus the 10 000-digit test pass; again
  with EVALUATION.precision = bf16, against the fp32 floor and the machine's bfloat16 GEMM speed; both again with
  EVALUATION.compile (torch.compile; its one-off compilation timed apart);
* evaluation_architectures: for every evaluation architecture, seconds per model of N models trained one
  after another (loop) and as one vmapped stack (batched), on 10 images, from a timed slice of epochs and
  test digits scaled to the default epochs and the 10 000 test digits; FLOPs of one model and its floor.

    .venv/bin/python benchmarks/bench.py --only-architectures [--architectures mlp,lenet] [--quick]
    .venv/bin/python benchmarks/bench.py --only-evaluation [--quick]
    .venv/bin/python benchmarks/bench.py --only-paths [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.settings import REPO_ROOT, load_settings  # noqa: E402

SEED_INI = REPO_ROOT / "configs" / "seed.ini"  # the paths are timed on the seed's method, beside its code
from dd3d.distill import Distiller, build_network  # noqa: E402
from dd3d.evaluate import CHUNK, ModelStack, compiled, make_models, test_accuracy, test_stack, train_model, train_stack  # noqa: E402
from dd3d.mnist import load_mnist  # noqa: E402
from dd3d.pointsets import RealClouds, binarize, occupancy_to_images  # noqa: E402
from dd3d.runtime import peak_memory_gb  # noqa: E402
from distillation_loss import match_loss  # noqa: E402
from models.MEConv import create_dense_batch, create_input_batch  # noqa: E402
from models.MNIST import ConvNet  # noqa: E402

SEED_BENCH = REPO_ROOT.parent / "shared" / "tools" / "seed_bench.sh"
SEED_GIT = Path("/work/.mirror/kghandour+dd3d/repo")  # where the search tool's fetch puts the seed
# Configurations timed beside the seed's: name -> CLI arguments.
CONFIGURATIONS = {"default (ME ConvNet)": ["--config", str(REPO_ROOT / "configs" / "default.ini")],
                  "dense ConvNet (configs/convnet.ini)": ["--config", str(REPO_ROOT / "configs" / "convnet.ini")]}


def timed(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    out = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            out.append(time.perf_counter() - start)
    return out


def sgemm_flops_per_s(device: torch.device, n: int = 4096, repeats: int = 5,
                      dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, repeats, 1, device))
    return 2 * n**3 / best


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class SeedReference:
    """The seed's per-class loop on its own modules: literal Conv3d grid (PyTorch) or ME modules (ME)."""

    def __init__(self, distiller: Distiller, pytorch: bool, me: object | None) -> None:
        self.d, self.pytorch = distiller, pytorch
        if pytorch:
            net = distiller.net
            layers = [m for conv in net.convs for m in (conv, nn.ReLU(), nn.MaxPool3d(2))]
            self.features, self.classifier = nn.Sequential(*layers), net.classifier
        else:
            self.me = me
            self.pool = me.MinkowskiMaxPooling(kernel_size=2, stride=2, dimension=3)
            self.relu = me.MinkowskiReLU()

    def logits(self, points: torch.Tensor) -> torch.Tensor:
        if self.pytorch:
            return self.classifier(self.features(create_dense_batch(points).unsqueeze(2)).flatten(1))
        x = create_input_batch(points)
        s = self.me.SparseTensor(x.features, coordinate_map_key=x.sparse.coordinate_map_key,
                                 coordinate_manager=x.sparse.coordinate_manager)
        net = self.d.net
        for conv, norm in zip(net.convs, net.norms, strict=True):
            s = self.pool(self.relu(norm(conv(s))))
        dense = s.dense(shape=torch.Size([len(points), 128, 1, 28, 28]),
                        min_coordinate=torch.zeros(3, dtype=torch.int))[0]
        return net.classifier(dense.flatten(1))

    def step(self) -> None:
        d, s = self.d, self.d.settings
        params = d.params
        d.optimizer.zero_grad()
        for c in range(10):
            real = d.real.sample(c, s.batch_size, d.generator).to(d.device)
            target = torch.full((len(real),), c, device=d.device)
            gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(self.logits(real), target), params)]
            syn = d.points[c:c + 1]
            loss = F.cross_entropy(self.logits(syn), target[:1])
            gw_syn = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            gw_syn = [g if g is not None else torch.zeros_like(p) for g, p in zip(gw_syn, params, strict=True)]
            dist = match_loss(gw_syn, gw_real, s.dist_opt)
            if dist.requires_grad:
                dist.backward()
        d.optimizer.step()


def make_distiller(cli: list[str], data, device: torch.device) -> Distiller:
    settings = load_settings([*cli, "--device", device.type])
    torch.manual_seed(0)
    net, to_input = build_network(settings, device)
    real = RealClouds(data.train_images, data.train_labels, settings.threshold, settings.num_points)
    return Distiller(net, to_input, real, settings, device, torch.Generator().manual_seed(0))


def bench_distiller(distiller: Distiller, device: torch.device, repeats: int, flops_per_s: float) -> dict:
    """Seconds per outer iteration (median after one warm-up), its FLOPs and the floor they give."""
    fast = timed(distiller.step, repeats, 1, device)
    flops = count_flops(distiller.step)
    floor = flops / flops_per_s
    return {"seconds_per_iteration": statistics.median(fast), "samples": fast, "flops_per_iteration": flops,
            "floor_seconds": floor, "ratio_to_floor": statistics.median(fast) / floor,
            "depth": distiller.settings.net_depth}


def bench_path(pytorch: bool, data, device: torch.device, repeats: int, ref_repeats: int,
               flops_per_s: float, me: object | None) -> dict:
    distiller = make_distiller(["--config", str(SEED_INI), "--pytorch" if pytorch else "--no-pytorch"], data, device)
    out = bench_distiller(distiller, device, repeats, flops_per_s)
    ref = timed(SeedReference(distiller, pytorch, me).step, ref_repeats, 1, device)
    return {**out, "reference_seconds_per_iteration": statistics.median(ref), "reference_samples": ref,
            "speedup_vs_reference": statistics.median(ref) / out["seconds_per_iteration"]}


def bench_seed_code(seed_git: Path, python: str, pytorch: bool, iterations: int) -> dict:
    """The seed's own mnist_distill.py, timed per outer iteration by seed_bench.sh (median of iterations 2..N)."""
    work = Path.home() / ".cache" / "seed_bench" / ("bench" + python.replace("/", "_"))  # one per interpreter
    env = {**os.environ, "SEED_BENCH_DIR": str(work)}
    cmd = ["bash", str(SEED_BENCH), str(seed_git), python, str(iterations), *(["--pytorch"] if pytorch else [])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip() or proc.stdout.strip())[-300:]}
    result = json.loads(lines[-1])
    return {"seconds_per_iteration": result["s_per_it"], "samples": result["all"], "python": python}


def bench_evaluation(data, device: torch.device, epochs: int, flops_per_s: float, precision: str = "fp32",
                     bf16_flops_per_s: float | None = None, compile_models: bool = False) -> dict:
    """One ConvNet trained on 10 images and its test pass; with bf16, also its ratio to the bf16 GEMM floor.

    With ``compile_models`` (EVALUATION.compile) the compilation of the train and test graphs is timed apart
    (``compile_seconds``: once per architecture and process, shared by its N models) and not in ``seconds``.
    """
    flags = ["--set", f"EVALUATION.precision={precision}", "--set", f"EVALUATION.compile={compile_models}"]
    settings = load_settings(["--device", device.type, "--eval-epochs", str(epochs), *flags])
    picks = torch.cat([torch.nonzero(data.train_labels == c).flatten()[:1] for c in range(10)])
    images = occupancy_to_images(binarize(data.train_images[picks], 75)).to(device)
    labels = data.train_labels[picks].to(device)
    test_images = occupancy_to_images(binarize(data.test_images, 75)).to(device)
    test_labels = data.test_labels.to(device)
    g, lr, one = torch.Generator().manual_seed(0), settings.classifier_lr, load_settings(["--eval-epochs", "1", *flags])

    def trained(s) -> nn.Module:
        net = ConvNet().to(device)
        train_model(compiled(net, s), images, labels, s, g, lr)
        return net

    def tested(net: nn.Module, digits: int = len(test_labels)) -> float:
        return test_accuracy(compiled(net, settings), test_images[:digits], test_labels[:digits], False, g,
                             precision=precision)

    compile_s = 0.0
    if compile_models:
        torch._dynamo.reset()  # a cold start within this process (torch's on-disk cache may still serve it)
        # One training step and one test chunk: the graphs the timed runs use, little else.
        [compile_s] = timed(lambda: tested(trained(one), CHUNK), 1, 0, device)
    [train_s] = timed(lambda: trained(settings), 1, 0, device)
    net = trained(one)
    [test_s] = timed(lambda: tested(net), 1, 1, device)
    one_epoch = count_flops(lambda: train_model(ConvNet().to(device), images, labels, one, g, lr))
    test_flops = count_flops(lambda: test_accuracy(net, test_images, test_labels, False, g))
    flops = one_epoch * epochs + test_flops
    floor = flops / flops_per_s
    seconds = train_s + test_s
    out = {"epochs": epochs, "precision": precision, "compile": compile_models, "train_seconds": train_s,
           "test_seconds": test_s, "seconds": seconds, "flops": flops, "floor_seconds": floor,
           "ratio_to_floor": seconds / floor}
    if compile_models:
        out["compile_seconds"] = compile_s
    if bf16_flops_per_s:  # the same FLOPs at the machine's bfloat16 GEMM speed
        out["bf16_floor_seconds"] = flops / bf16_flops_per_s
        out["ratio_to_bf16_floor"] = seconds * bf16_flops_per_s / flops
    return out


def bench_architecture(arch: str, images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                       test_labels: torch.Tensor, models: int, epochs: int, slice_epochs: int, test_scale: float,
                       flops_per_s: float) -> dict:
    """One architecture: N models one after another (loop) against one vmapped stack (batched)."""
    device = images.device
    sliced = load_settings(["--device", device.type, "--eval-epochs", str(slice_epochs)])
    one = load_settings(["--device", device.type, "--eval-epochs", "1"])
    lr, seeds, train_scale = sliced.eval_lr(arch), list(range(models)), epochs / slice_epochs

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    def loop(settings) -> list:
        return [train_model(n, images, labels, settings, g, lr)
                for n, g in zip(make_models(arch, seeds, device), gens(), strict=True)]

    def batched(settings) -> ModelStack:
        return train_stack(ModelStack(make_models(arch, seeds, device)), images, labels, settings, gens(), lr)

    loop(one), batched(one)  # warm-up (allocator, kernel choice) before the clock runs
    [loop_train] = timed(lambda: loop(sliced), 1, 0, device)
    [stack_train] = timed(lambda: batched(sliced), 1, 0, device)
    nets, stack = loop(one), batched(one)
    [loop_test] = timed(lambda: [test_accuracy(n, test_images, test_labels, False, g)
                                 for n, g in zip(nets, gens(), strict=True)], 1, 0, device)
    [stack_test] = timed(lambda: test_stack(stack, test_images, test_labels, False, gens()), 1, 0, device)
    net = make_models(arch, [0], device)[0]
    flops = (count_flops(lambda: train_model(net, images, labels, one, gens()[0], lr)) * epochs
             + count_flops(lambda: test_accuracy(nets[0], test_images, test_labels, False, gens()[0])) * test_scale)
    loop_s = (loop_train * train_scale + loop_test * test_scale) / models
    stack_s = (stack_train * train_scale + stack_test * test_scale) / models
    floor = flops / flops_per_s
    return {
        "loop_train_s_per_model": loop_train * train_scale / models,
        "batched_train_s_per_model": stack_train * train_scale / models,
        "loop_test_s_per_model": loop_test * test_scale / models,
        "batched_test_s_per_model": stack_test * test_scale / models,
        "loop_s_per_model": loop_s, "batched_s_per_model": stack_s, "batched_speedup": loop_s / stack_s,
        "flops_per_model": flops, "floor_seconds": floor, "ratio_to_floor": min(loop_s, stack_s) / floor,
    }


def bench_architectures(data, device: torch.device, architectures: tuple[str, ...], models: int, epochs: int,
                        slice_epochs: int, test_digits: int, flops_per_s: float) -> dict:
    """Seconds per model, loop against batched, for each architecture (see the module docstring)."""
    picks = torch.cat([torch.nonzero(data.train_labels == c).flatten()[:1] for c in range(10)])
    images = occupancy_to_images(binarize(data.train_images[picks], 75)).to(device)
    labels = data.train_labels[picks].to(device)
    test_images = occupancy_to_images(binarize(data.test_images[:test_digits], 75)).to(device)
    test_labels = data.test_labels[:test_digits].to(device)
    test_scale = len(data.test_labels) / test_digits
    out: dict = {"models": models, "epochs": epochs, "timed_epochs": slice_epochs, "timed_test_digits": test_digits}
    for arch in architectures:
        out[arch] = bench_architecture(arch, images, labels, test_images, test_labels, models, epochs, slice_epochs,
                                       test_scale, flops_per_s)
        print(arch, json.dumps(out[arch]), file=sys.stderr, flush=True)  # progress: the whole set takes minutes
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats and a 50-epoch evaluation model (CI)")
    p.add_argument("--skip-minkowski", action="store_true", help="only the PyTorch path")
    p.add_argument("--architectures", default="all",
                   help="evaluation architectures timed loop against batched (as EVALUATION.architectures; "
                        "none: skip)")
    p.add_argument("--only-architectures", action="store_true",
                   help="only the sgemm speed and the evaluation architectures")
    p.add_argument("--only-evaluation", action="store_true",
                   help="only the GEMM speeds and the evaluation model in fp32 and bf16, eager and compiled")
    p.add_argument("--only-paths", action="store_true",
                   help="only the sgemm speed, the two paths (beside the seed's own code) and the configurations")
    p.add_argument("--eval-models", type=int, default=5, help="models per architecture in the loop/batched timing")
    p.add_argument("--seed-git", type=Path, default=SEED_GIT,
                   help="the seed's git dir: its own code is timed beside each path when it exists")
    p.add_argument("--seed-python", default=sys.executable, help="interpreter that runs the seed's code")
    p.add_argument("--seed-iterations", type=int, default=4, help="outer iterations of the seed's code per path")
    args = p.parse_args()
    device = torch.device(args.device)
    data = load_mnist(load_settings([]).dataset_dir)
    repeats, ref_repeats = (1, 1) if args.quick else (3, 2)
    speed = sgemm_flops_per_s(device)
    me = None
    if not (args.skip_minkowski or args.only_architectures or args.only_evaluation):
        from models.minkowski import import_minkowski

        me = import_minkowski()
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "sgemm_gflops": speed / 1e9,
    }
    if not (args.only_architectures or args.only_evaluation):
        paths = {"pytorch": True} | ({"minkowski": False} if me is not None else {})
        for name, pytorch in paths.items():
            out[name] = bench_path(pytorch, data, device, repeats, ref_repeats, speed, me)
            if args.seed_git.is_dir() and SEED_BENCH.is_file() and device.type == "cpu":
                seed = bench_seed_code(args.seed_git, args.seed_python, pytorch, args.seed_iterations)
                out[name]["seed_code"] = seed
                if "seconds_per_iteration" in seed:
                    ratio = seed["seconds_per_iteration"] / out[name]["seconds_per_iteration"]
                    out[name]["speedup_vs_seed_code"] = ratio
        if me is not None:
            out["configurations"] = {name: bench_distiller(make_distiller(cli, data, device), device, repeats, speed)
                                     for name, cli in CONFIGURATIONS.items()}
    if not (args.only_architectures or args.only_paths):
        bf16_speed = sgemm_flops_per_s(device, dtype=torch.bfloat16)  # the bf16 evaluation's floor, only here
        out["bf16_gemm_gflops"] = bf16_speed / 1e9
        epochs = 50 if args.quick else 1000
        out["evaluation_model"] = bench_evaluation(data, device, epochs, speed)
        # EVALUATION.precision = bf16: the same model and FLOPs, against both floors.
        out["evaluation_model_bf16"] = bench_evaluation(data, device, epochs, speed, "bf16", bf16_speed)
        # EVALUATION.compile = true, in both precisions.
        out["evaluation_model_compiled"] = bench_evaluation(data, device, epochs, speed, compile_models=True)
        out["evaluation_model_bf16_compiled"] = bench_evaluation(data, device, epochs, speed, "bf16", bf16_speed,
                                                                 compile_models=True)
    if args.architectures != "none" and not (args.only_evaluation or args.only_paths):
        archs = load_settings(["--architectures", args.architectures]).eval_architectures
        slice_epochs, test_digits = (5, 500) if args.quick else (20, 2000)
        out["evaluation_architectures"] = bench_architectures(data, device, archs, args.eval_models, 1000,
                                                              slice_epochs, test_digits, speed)
    out["peak_rss_gb"] = peak_memory_gb()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
