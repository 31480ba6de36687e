"""Training speed: seconds per iteration, images/s, input-pipeline wait and peak RSS.

    python -m benchmarks.train_speed [--models stargan,cyclegan,deeplab] [--presets demo,paper]
        [--precisions fp32,mixed_bfloat16] [--batch-size 8] [--iterations 10] [--warmup 3]
        [--data-dir DIR [--dataset-config NAME]] [--stargan-official-arch] [--compare-official]
        [--few-iterations] [--in-process] [--out benchmarks/results/train_speed.json]
        [--overwrite] [--quick]

For every (model, preset, precision) the trainer of ``ctmri_tf.training`` is built from
``ctmri_tf.configs.get_config(model, preset)`` with ``data.batch_size`` and ``precision``
overridden, and its ``replica_step`` is run exactly as ``ctmri_tf.training.loop.train`` runs it
(``strategy.run`` inside a ``tf.function``, one trace per step kind, per-step seed from a
``tf.random.Generator``), except that the batch is fetched outside the compiled step so that
the two can be timed apart:

* ``input wait``: time spent in ``next(iterator)``: how long the step waited for the input
  pipeline (with prefetching, ~0 when the pipeline keeps up);
* ``step``: the compiled train step, until its losses are on the host.

An *iteration* is one call of the step; seconds per iteration = wait + step. Every step kind is
traced once first (untimed), then ``--warmup`` iterations run untimed, then ``--iterations`` are
timed (median reported). StarGAN's iteration is the official code's: one critic update, plus a
generator update every ``loss.n_critic``-th iteration; its timed iterations are whole n_critic
cycles (``--iterations`` rounded up), and both the per-step median and the mean over the full
cycles (the sustained rate, comparable with the official code's s/iteration) are reported.
images/s counts the real images a step consumes (StarGAN: ``batch_size``, half CT, half MRI;
CycleGAN: ``batch_size`` CT + ``batch_size`` MRI; DeepLabV3+: ``batch_size``) per second of the
sustained iteration time.

Input: the real ``ctmri_tf.data`` pipeline over the built tfds ``ctmri`` dataset when
``--data-dir`` holds it (the trainer's pipeline: StarGAN's ``training_batches``, unpaired or
paired, CycleGAN's ``unpaired_batches``, ``segmentation_batches``, of the ``train`` split,
resized to the model size, k-slice stacks for a 2.5-D preset), otherwise in-memory phantoms
(``ctmri_tf.phantom`` rendered at the model size, a shuffled, repeated ``tf.data`` stream from
memory); the row's ``input`` says which.

Peak RSS: each configuration runs in a fresh process (``--in-process`` runs them all in this
one; the peak is then the cumulative peak of the process).

``--stargan-official-arch`` runs exactly the official StarGAN architecture at the size of the
official PyTorch measurement (128 px, batch 8, 64 filters, 6 residual blocks, 6-layer critic)
and ``--compare-official`` puts the official PyTorch figures on this 2-core CPU (4.9 s/iteration
at 128 px batch 8, 4.7 s at 256 px batch 1) beside every StarGAN row of that architecture.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from ctmri_tf.errors import CtmriInputError  # noqa: E402
from ctmri_tf.flags import FlagParser  # noqa: E402

NAME = "train_speed"
MODELS = {"stargan": "stargan", "cyclegan": "cyclegan", "deeplab": "segmentation",
          "deeplabv3+": "segmentation", "segmentation": "segmentation"}
"""``--models`` names -> ``ctmri_tf.configs`` experiment."""
MODEL_LABELS = {"stargan": "StarGAN", "cyclegan": "CycleGAN", "segmentation": "DeepLabV3+"}
PRESETS = {"smoke": "smoke", "demo": "demo", "paper": "paper"}
PRECISIONS = {"fp32": "float32", "float32": "float32", "bf16": "mixed_bfloat16",
              "mixed_bfloat16": "mixed_bfloat16"}
OFFICIAL = "official"
"""Preset label of the ``--stargan-official-arch`` configuration."""
OFFICIAL_IMAGE_SIZE = 128
OFFICIAL_BATCH_SIZE = 8
OFFICIAL_PYTORCH_SECONDS = {(128, 8): 4.9, (256, 1): 4.7}
"""Official PyTorch StarGAN (64 filters, 6 residual blocks, 6-layer critic) on this project's
2-core CPU: seconds per iteration by (image size px, batch size)."""
OFFICIAL_ARCHITECTURE = {"generator_filters": 64, "generator_residual_blocks": 6,
                         "discriminator_filters": 64, "discriminator_layers": 6}
TARGET_BF16_SPEEDUP = 1.3
TARGET_INPUT_WAIT = 0.05
TARGET_OFFICIAL_SECONDS = 3.7
PHANTOM_SUBJECTS = 2
PHANTOM_SLICES = 16
QUICK_BATCH_SIZE = 2
QUICK_PRESET = "smoke"

KEY_FIELDS = ("model", "preset", "precision", "image_size", "batch_size", "input_kind")


@dataclasses.dataclass(frozen=True)
class Spec:
    """One configuration to measure (picklable: it crosses into the child process).

    Attributes:
        experiment: ``stargan``, ``cyclegan`` or ``segmentation``.
        preset: ``smoke``, ``demo``, ``paper`` or :data:`OFFICIAL`.
        precision: ``float32`` or ``mixed_bfloat16``.
        batch_size: global batch (``data.batch_size``).
        iterations: timed iterations (StarGAN: rounded up to whole n_critic cycles).
        warmup: untimed iterations after the one tracing call per step kind.
        data_dir: tfds data folder holding the built dataset, or None (in-memory phantoms).
        dataset_config: tfds ``ctmri`` config (None: the preset's ``data.dataset_config``).
        seed: weights, data order and per-step randomness.
        overrides: ``(field, value)`` config overrides applied last (``--set`` of
            ``benchmarks.quality``, whose runs are calibrated with this).
    """

    experiment: str
    preset: str
    precision: str
    batch_size: int
    iterations: int
    warmup: int
    data_dir: str | None = None
    dataset_config: str | None = None
    seed: int = 0
    overrides: tuple[tuple[str, str], ...] = ()


# ----------------------------------------------------------------------------- configs

def experiment_config(spec: Spec):
    """The validated experiment config of ``spec``: the preset (the official architecture for
    :data:`OFFICIAL`) with batch size, precision and data source overridden."""
    from ctmri_tf import configs

    overrides: dict[str, Any] = {"precision": spec.precision, "data.batch_size": spec.batch_size,
                                 "seed": spec.seed}
    if spec.preset == OFFICIAL:
        if spec.experiment != "stargan":
            raise CtmriInputError(None, "the official architecture is StarGAN's")
        base = configs.get_config("stargan", "paper")
        overrides.update({f"model.{k}": v for k, v in OFFICIAL_ARCHITECTURE.items()})
        overrides["data.image_size"] = OFFICIAL_IMAGE_SIZE
    else:
        base = configs.get_config(spec.experiment, spec.preset)
    if spec.data_dir is not None:
        overrides["data.data_dir"] = str(spec.data_dir)
    if spec.dataset_config is not None:
        overrides["data.dataset_config"] = spec.dataset_config
    overrides.update(dict(spec.overrides))
    return configs.override(base, overrides)


def official_seconds(config) -> float | None:
    """The official PyTorch s/iteration of this StarGAN config's architecture, size and batch
    (None when there is no such measurement)."""
    if config.experiment != "stargan":
        return None
    model = dataclasses.asdict(config.model)
    if any(model[k] != v for k, v in OFFICIAL_ARCHITECTURE.items()):
        return None
    return OFFICIAL_PYTORCH_SECONDS.get((config.data.image_size, config.data.batch_size))


def images_per_step(config) -> int:
    """Real images one training step consumes (CycleGAN: a CT and an MRI per batch entry)."""
    return 2 * config.data.batch_size if config.experiment == "cyclegan" else config.data.batch_size


def cycle_length(config) -> int:
    """Iterations after which the step kinds repeat (StarGAN: ``n_critic``; others: 1)."""
    return config.loss.n_critic if config.experiment == "stargan" else 1


# ----------------------------------------------------------------------------- tasks and inputs

def make_task(config, strategy):
    """The trainer of ``config`` (a ``ctmri_tf.training.loop.TrainingTask``), from the
    experiment registry."""
    from ctmri_tf import experiments

    return experiments.get(config.experiment).task(config, strategy)


def tfds_batches(config):
    """The trainer's own input pipeline over the built tfds dataset (infinite, seeded).

    Raises:
        CtmriInputError: the dataset is not built in ``config.data.data_dir``.
    """
    from ctmri_tf import data

    d = config.data
    common_args = dict(seed=config.seed, repeat=True, drop_remainder=True,
                       config=d.dataset_config, data_dir=d.data_dir)
    if config.experiment == "stargan":
        # the trainer's stream: unpaired or registered pairs, 2-D or 2.5-D (model.context_slices)
        from ctmri_tf.training.stargan import training_batches
        return training_batches(config)
    if config.experiment == "cyclegan":
        return data.unpaired_batches("train", d.batch_size, d.image_size,
                                     mask_inputs=d.mask_inputs, augment=d.augment,
                                     context_slices=config.model.context_slices, **common_args)
    return data.segmentation_batches("train", d.batch_size, d.image_size, augment=d.augment,
                                     **common_args)


def phantom_arrays(image_size: int, *, subjects: int = PHANTOM_SUBJECTS,
                   slices: int = PHANTOM_SLICES, mask_inputs: bool = True) -> dict:
    """Phantom slices at the model size, in model space.

    Returns:
        ``{"ct", "mri"}``: float32 ``(N, size, size, 1)`` in [-1, 1] (CT through the CT window,
        MRI through each volume's percentile scale inside its body; background -1 when
        ``mask_inputs``) and ``"mask"``: float32 ``(N, size, size, 1)`` in {0, 1}.
    """
    import numpy as np

    from ctmri_tf import intensity, phantom

    ct, mri, masks = [], [], []
    for index in range(subjects):
        subject = phantom.make_subject(index, image_size=image_size, num_slices=slices)
        scale = intensity.fit_mri_scale(subject.mri, mask=subject.mask)
        body = subject.mask > 0
        ct_unit = intensity.ct_to_unit(subject.ct)
        mri_unit = intensity.mri_to_unit(subject.mri, scale)
        if mask_inputs:
            ct_unit, mri_unit = np.where(body, ct_unit, -1.0), np.where(body, mri_unit, -1.0)
        ct.append(ct_unit)
        mri.append(mri_unit)
        masks.append(body)
    stack = lambda arrays: np.concatenate(arrays)[..., None].astype(np.float32)  # noqa: E731
    return {"ct": stack(ct), "mri": stack(mri), "mask": stack(masks)}


def phantom_batches(config):
    """An infinite, seeded ``tf.data`` stream of in-memory phantom batches shaped like the
    trainer's pipeline (``{"ct", "mri"}`` for the GANs, ``(image, mask)`` for DeepLabV3+)."""
    import numpy as np
    import tensorflow as tf

    d = config.data
    if getattr(getattr(config, "model", None), "context_slices", 1) > 1:
        raise CtmriInputError(None, "in-memory phantom batches are 2-D; a 2.5-D model "
                                    "(model.context_slices > 1) needs the built tfds dataset "
                                    "(--data-dir)")

    def stream(tensors, batch, seed):
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        ds = ds.shuffle(PHANTOM_SUBJECTS * PHANTOM_SLICES * 2, seed=seed).repeat()
        return ds.batch(batch, drop_remainder=True)

    if config.experiment in ("stargan", "cyclegan"):
        arrays = phantom_arrays(d.image_size, mask_inputs=d.mask_inputs)
        per_side = d.batch_size // 2 if config.experiment == "stargan" else d.batch_size
        ds = tf.data.Dataset.zip({"ct": stream(arrays["ct"], per_side, config.seed),
                                  "mri": stream(arrays["mri"], per_side, config.seed + 1)})
    else:   # both modalities, images not masked (as segmentation_batches), with body masks
        arrays = phantom_arrays(d.image_size, mask_inputs=False)
        images = np.concatenate([arrays["ct"], arrays["mri"]])
        masks = np.concatenate([arrays["mask"], arrays["mask"]])
        ds = stream((images, masks), d.batch_size, config.seed)
    return ds.prefetch(tf.data.AUTOTUNE)


def input_pipeline(config) -> tuple[Any, str, str]:
    """``(dataset, kind, description)``: the tfds pipeline when ``data.data_dir`` holds the
    built dataset, else in-memory phantoms (the description says why)."""
    d = config.data
    if d.data_dir is not None:
        try:
            return tfds_batches(config), "tfds", f"tfds ctmri/{d.dataset_config} ({d.data_dir})"
        except CtmriInputError as err:
            reason = f"ctmri/{d.dataset_config} not built in {d.data_dir}: {err.problem}"
            print(f"warning: {reason}; using in-memory phantoms", file=sys.stderr)
            return phantom_batches(config), "phantoms", f"in-memory phantoms ({reason})"
    return phantom_batches(config), "phantoms", "in-memory phantoms (no --data-dir)"


# ----------------------------------------------------------------------------- measuring

def compiled_step(task, strategy, seed: int):
    """``step(batch, kind) -> losses``: ``ctmri_tf.training.loop.train``'s distributed step,
    taking the batch as an argument instead of pulling it from the iterator inside."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    @tf.function
    def step(batch, kind):
        step_seed = rng.make_seeds(1)[:, 0]
        per_replica = strategy.run(lambda b, s: task.replica_step(b, s, kind),
                                   args=(batch, step_seed))
        return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in per_replica.items()}

    return step


def _parameters(task) -> int:
    import keras
    return int(sum(obj.count_params() for obj in task.checkpoint_objects().values()
                   if isinstance(obj, keras.Model)))


def measure(spec: Spec) -> dict:
    """Build the trainer and input of ``spec``, time its iterations; return the result row."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    config = experiment_config(spec)
    strategy = tf.distribute.get_strategy()
    dataset, input_kind, input_description = input_pipeline(config)
    task = make_task(config, strategy)
    step = compiled_step(task, strategy, config.seed)
    iterator = iter(dataset)

    def run(kind: str) -> tuple[float, float]:
        began = time.perf_counter()
        batch = next(iterator)
        fetched = time.perf_counter()
        losses = step(batch, kind)
        float(next(iter(losses.values())))        # wait for the step: losses on the host
        return fetched - began, time.perf_counter() - fetched

    cycle = cycle_length(config)
    kinds_in_order = [task.step_kind(i) for i in range(cycle)]
    trace_seconds = {}
    for kind in dict.fromkeys(kinds_in_order):          # one tracing call per kind, untimed
        wait, compute = run(kind)
        trace_seconds[kind] = wait + compute
    for i in range(spec.warmup):
        run(task.step_kind(i))
    timed = -(-spec.iterations // cycle) * cycle         # whole cycles
    waits, computes, kinds = [], [], []
    for i in range(timed):
        kind = task.step_kind(i)
        wait, compute = run(kind)
        waits.append(wait)
        computes.append(compute)
        kinds.append(kind)
    totals = [w + c for w, c in zip(waits, computes)]
    per_kind = {kind: {"median_s": statistics.median([t for t, k in zip(totals, kinds) if k == kind]),
                       "count": kinds.count(kind), "trace_s": trace_seconds[kind]}
                for kind in dict.fromkeys(kinds)}
    median_step = statistics.median(totals)
    seconds_per_iteration = statistics.fmean(totals) if cycle > 1 else median_step
    official = official_seconds(config)
    row = {
        "model": config.experiment,
        "model_label": MODEL_LABELS[config.experiment],
        "preset": spec.preset,
        "precision": config.precision,
        "image_size": config.data.image_size,
        "batch_size": config.data.batch_size,
        "images_per_step": images_per_step(config),
        "architecture": dataclasses.asdict(config.model),
        "parameters": _parameters(task),
        "input_kind": input_kind,
        "input": input_description,
        "warmup": spec.warmup,
        "iterations": timed,
        "cycle": cycle,
        "step_kinds": per_kind,
        "seconds_per_step_median": median_step,
        "seconds_per_iteration": seconds_per_iteration,
        "seconds_per_iteration_how": ("mean over whole n_critic cycles" if cycle > 1
                                      else "median"),
        "images_per_second": images_per_step(config) / seconds_per_iteration,
        "input_wait_fraction": sum(waits) / sum(totals),
        "input_wait_median_s": statistics.median(waits),
        "samples_s": totals,
        "input_wait_samples_s": waits,
        "peak_rss_bytes": common.peak_rss_bytes(),
        "wall_s": time.perf_counter() - started,
        "official_pytorch_s": official,
        "speedup_vs_official": official / seconds_per_iteration if official else None,
    }
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    return row


def measure_values(values: dict) -> dict:
    """:func:`measure` of ``Spec(**values)`` (what the child process is handed)."""
    return measure(Spec(**values))


def measure_isolated(spec: Spec) -> dict:
    """:func:`measure` in a fresh process: the peak RSS is this configuration's alone."""
    from benchmarks import train_speed   # importable by name in the child (not __main__)

    row = common.run_isolated(train_speed.measure_values, dataclasses.asdict(spec))
    row["peak_rss_scope"] = "configuration (own process)"
    return row


# ----------------------------------------------------------------------------- report

def speedup_summary(rows: list[dict]) -> list[str]:
    """Lines comparing mixed_bfloat16 with float32 per model and preset, input wait, and the
    official StarGAN, each with its target."""
    lines = []
    by_config = {(r["model"], r["preset"], r["image_size"], r["batch_size"], r["precision"]): r
                 for r in rows}
    for (model, preset, size, batch, precision), row in by_config.items():
        if precision != "mixed_bfloat16":
            continue
        fp32 = by_config.get((model, preset, size, batch, "float32"))
        if fp32:
            speedup = fp32["seconds_per_iteration"] / row["seconds_per_iteration"]
            row["bf16_speedup"] = speedup
            verdict = "meets" if speedup >= TARGET_BF16_SPEEDUP else "misses"
            lines.append(f"{MODEL_LABELS[model]} {preset}: mixed_bfloat16 is {speedup:.2f}x "
                         f"float32 speed per iteration ({verdict} the target >= "
                         f"{TARGET_BF16_SPEEDUP}x)")
    for row in rows:
        label = f"{row['model_label']} {row['preset']} {row['precision']}"
        if row["input_wait_fraction"] >= TARGET_INPUT_WAIT:
            lines.append(f"{label}: input wait {100 * row['input_wait_fraction']:.1f} % of the "
                         f"iteration (target < {100 * TARGET_INPUT_WAIT:.0f} %)")
        if row.get("official_pytorch_s"):
            ours = row["seconds_per_iteration"]
            verdict = ""
            if (row["image_size"], row["batch_size"]) == (OFFICIAL_IMAGE_SIZE,
                                                          OFFICIAL_BATCH_SIZE):
                verdict = (f"; target <= {TARGET_OFFICIAL_SECONDS} s: "
                           f"{'met' if ours <= TARGET_OFFICIAL_SECONDS else 'missed'}")
            lines.append(f"{label}: {ours:.2f} s/iteration vs official PyTorch "
                         f"{row['official_pytorch_s']} s ({row['speedup_vs_official']:.2f}x"
                         f"{verdict})")
    if rows and all(r["input_wait_fraction"] < TARGET_INPUT_WAIT for r in rows):
        lines.append(f"input wait < {100 * TARGET_INPUT_WAIT:.0f} % of every iteration (target "
                     f"met)")
    return lines


COLUMNS = [
    common.Column("model_label", "model"),
    common.Column("preset", "preset"),
    common.Column("precision", "precision"),
    common.Column("image_size", "px"),
    common.Column("batch_size", "batch"),
    common.Column("input_kind", "input"),
    common.Column("seconds_per_step_median", "median s/step", "{:.3f}"),
    common.Column("seconds_per_iteration", "s/iteration", "{:.3f}"),
    common.Column("images_per_second", "images/s", "{:.2f}"),
    common.Column("input_wait_fraction", "input wait", common.percent),
    common.Column("peak_rss_bytes", "peak RSS", common.format_bytes),
]


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(prog="python -m benchmarks.train_speed",
                        description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="stargan,cyclegan,deeplab",
                        help="comma-separated: stargan, cyclegan, deeplab (default: all)")
    parser.add_argument("--presets", default="demo,paper",
                        help="comma-separated: smoke, demo, paper (default: demo,paper)")
    parser.add_argument("--precisions", default="fp32,mixed_bfloat16",
                        help="comma-separated: fp32 (float32), mixed_bfloat16 (bf16)")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (default: 8)")
    parser.add_argument("--iterations", type=int, default=common.MIN_ITERATIONS,
                        help=f"timed iterations, >= {common.MIN_ITERATIONS} (default: "
                             f"{common.MIN_ITERATIONS})")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed iterations after tracing (default: 3)")
    parser.add_argument("--data-dir", default=None,
                        help="tfds data folder holding the built ctmri dataset (else in-memory "
                             "phantoms)")
    parser.add_argument("--dataset-config", default=None,
                        help="tfds ctmri config (default: each preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stargan-official-arch", action="store_true",
                        help="only StarGAN, exactly the official architecture at 128 px, batch "
                             "8 (64 filters, 6 residual blocks, 6-layer critic), compared with "
                             "the official PyTorch figure")
    parser.add_argument("--compare-official", action="store_true",
                        help="add the official PyTorch StarGAN figures (4.9 s/iteration at 128 "
                             "px batch 8, 4.7 s at 256 px batch 1, this 2-core CPU) to the notes "
                             "and beside matching StarGAN rows")
    parser.add_argument("--few-iterations", action="store_true",
                        help=f"allow fewer than {common.MIN_ITERATIONS} timed iterations, for "
                             "configurations too slow to time ten of (e.g. CycleGAN paper at "
                             "batch 8 on a CPU); the rows and the table say so")
    parser.add_argument("--in-process", action="store_true",
                        help="run every configuration in this process (peak RSS is then "
                             "cumulative); --quick implies it")
    common.add_output_arguments(parser, NAME)
    return parser


def specs_from_args(args: argparse.Namespace) -> list[Spec]:
    """The configurations to measure, in table order."""
    common.check_iterations(args.iterations, args.warmup, args.quick, args.few_iterations)
    precisions = common.parse_choices(args.precisions, PRECISIONS, "precision")
    shared = dict(iterations=args.iterations, warmup=args.warmup, data_dir=args.data_dir,
                  dataset_config=args.dataset_config, seed=args.seed)
    if args.stargan_official_arch:
        if args.quick:
            raise CtmriInputError(None, "--stargan-official-arch measures the full official "
                                        "architecture; it has no --quick form")
        return [Spec("stargan", OFFICIAL, precision, OFFICIAL_BATCH_SIZE, **shared)
                for precision in precisions]
    models = common.parse_choices(args.models, MODELS, "model")
    presets = common.parse_choices(args.presets, PRESETS, "preset")
    if args.quick:
        presets = [QUICK_PRESET]
    if args.batch_size < 1:
        raise CtmriInputError(None, f"--batch-size must be >= 1, got {args.batch_size}")
    return [Spec(model, preset, precision, args.batch_size, **shared)
            for model in models for preset in presets for precision in precisions]


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.iterations = min(args.iterations, common.QUICK_ITERATIONS)
        args.warmup = min(args.warmup, common.QUICK_WARMUP)
        args.batch_size = QUICK_BATCH_SIZE
        args.in_process = True
    specs = specs_from_args(args)
    for spec in specs:
        experiment_config(spec)                    # every config valid before measuring any
    common.check_out(args.out, args.overwrite)
    previous = common.previous_results(args)
    machine = common.machine_info()
    rows = []
    for spec in specs:
        print(f"[{NAME}] {MODEL_LABELS[spec.experiment]} {spec.preset} {spec.precision} "
              f"batch {spec.batch_size} ...", file=sys.stderr, flush=True)
        row = measure(spec) if args.in_process else measure_isolated(spec)
        row.setdefault("peak_rss_scope", "process so far (--in-process)")
        if args.few_iterations and spec.iterations < common.MIN_ITERATIONS:
            row["few_iterations"] = (f"{spec.iterations} timed iterations (fewer than "
                                     f"{common.MIN_ITERATIONS}, --few-iterations)")
        rows.append(row)
    columns = list(COLUMNS)
    if args.compare_official or args.stargan_official_arch:
        columns += [common.Column("official_pytorch_s", "PyTorch s/it", "{:.1f}"),
                    common.Column("speedup_vs_official", "vs PyTorch", "{:.2f}x")]
    notes = {"iteration": "one call of the trainer's compiled step plus its next(iterator); "
                          "StarGAN: one critic update and a generator update every n_critic-th",
             "targets": {"bf16_speedup_min": TARGET_BF16_SPEEDUP,
                         "input_wait_fraction_max": TARGET_INPUT_WAIT,
                         "stargan_official_seconds_max": TARGET_OFFICIAL_SECONDS}}
    if args.compare_official or args.stargan_official_arch:
        notes["official_pytorch"] = {
            "what": "official PyTorch StarGAN (yunjey/stargan: 64 filters, 6 residual blocks, "
                    "6-layer critic) on this project's 2-core CPU, s/iteration",
            "128px_batch8_s": OFFICIAL_PYTORCH_SECONDS[(128, 8)],
            "256px_batch1_s": OFFICIAL_PYTORCH_SECONDS[(256, 1)]}
    summary = speedup_summary(rows)
    summary += [f"{r['model']} {r['preset']} {r['precision']}: "
                f"{r['few_iterations']}" for r in rows if "few_iterations" in r]
    common.finish(args, benchmark=NAME, rows=rows, columns=columns, notes=notes,
                  machine=machine, previous=previous, key_fields=KEY_FIELDS,
                  metric="seconds_per_iteration", higher_is_better=False,
                  summary=summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or input (message on stderr)."""
    return common.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
