"""Where a distillation step spends its time beyond the student's own step: cProfile over a few training steps of
``AnnealingTrainer`` (Hinton KD, live teacher or cache) or of ``MutualLearningTrainer`` with K copies of the student
(``--ddml K``) on tiny models, listing the functions of ``distil_trainers`` and of the loss path by cumulative time
per step.

    python benchmarks/profile_step.py --steps 60 [--cached] [--ddml 3]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import _common as C  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cached", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--ddml", type=int, default=0, help="K >= 2: profile MutualLearningTrainer with K students")
    opts = parser.parse_args(argv)

    import torch
    from transformers import default_data_collator

    from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
    from distil_trainers.teachers.cache import precompute_teacher_outputs

    torch.set_num_threads(opts.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench_profile_"))
    spec = C.prepare("tiny", workdir, 512, 32, 64)
    train = C.load_split(spec, "train")
    teacher = C.load_model(spec, "teacher")
    if opts.cached:
        source = {"teacher_outputs": precompute_teacher_outputs(teacher, train)}
    else:
        source = {"teacher_model": teacher}
    common = dict(
        output_dir=str(workdir / "out"), per_device_train_batch_size=opts.batch_size, max_steps=opts.steps,
        learning_rate=1e-4, lr_scheduler_type="constant", save_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, temperature=2.0,
    )
    if opts.ddml:
        names = [f"s{i}" for i in range(opts.ddml)]
        from overhead import with_copies

        train = with_copies(train, [f"{n}_" for n in names] + ([] if opts.cached else ["teacher_"]))
        trainer = MutualLearningTrainer(
            students={n: C.load_model(spec, "student") for n in names}, args=MutualLearningArguments(**common),
            train_dataset=train, data_collator=default_data_collator, **source,
        )
    else:
        trainer = AnnealingTrainer(model=C.load_model(spec, "student"), args=AnnealingArguments(annealing="kd", **common),
                                   train_dataset=train, data_collator=default_data_collator, **source)
    profile = cProfile.Profile()
    profile.enable()
    trainer.train()
    profile.disable()
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, func), (_, ncalls, _, cumulative, _) in stats.stats.items():
        if any(part in filename for part in ("distil_trainers", "trainer.py", "accelerate", "data_loader")):
            rows.append((cumulative / opts.steps * 1000, ncalls, f"{Path(filename).name}:{line}:{func}"))
    rows.sort(reverse=True)
    print(f"{'ms/step (cumulative)':>22}{'calls':>8}  function")
    for ms, ncalls, name in rows[: opts.top]:
        print(f"{ms:22.2f}{ncalls:8d}  {name}")


if __name__ == "__main__":
    main()
