"""What ``import distil_trainers`` (and importing each trainer) costs over importing transformers itself.

Each statement runs in a fresh interpreter under ``python -X importtime``, round-robin, ``--repeats`` times; the
import time of a statement is the sum of the cumulative times of the modules it imported at top level (the
interpreter's own start-up is not counted). Medians are printed with the difference to ``import transformers`` and
to ``from transformers import Trainer`` (what any trainer built on Trainer pays anyway).

    python benchmarks/import_time.py
    python benchmarks/import_time.py --repeats 9
    # another checkout of the package (e.g. an older commit: git worktree add /tmp/old <commit>)
    python benchmarks/import_time.py --pythonpath /tmp/old
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

STATEMENTS = [
    "import transformers",
    "from transformers import Trainer",
    "import distil_trainers",
    "from distil_trainers import AnnealingTrainer",
    "from distil_trainers import MutualLearningTrainer",
    "from distil_trainers.trainers.adversarial import AdversarialTrainer",
    "from distil_trainers import RationaleSFTTrainer",
    "from distil_trainers.teachers import precompute_llm_teacher_outputs",
]
HEAVY = ("trl", "peft", "sklearn", "pandas", "matplotlib", "jinja2", "llama_cpp", "bitsandbytes")
LINE = re.compile(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|( *)(\S+)")


def measure(statement: str, pythonpath: str | None = None) -> tuple[float, list[str]]:
    """(seconds spent importing, heavy optional modules loaded) for one fresh interpreter."""
    code = f"{statement}\nimport sys\nprint('LOADED', *sorted(m for m in sys.modules if '.' not in m))"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    micros = 0
    for match in LINE.finditer(run.stderr):
        if len(match.group(2)) == 1:  # top level: one space after the bar
            micros += int(match.group(1))
    loaded = next(line for line in run.stdout.splitlines() if line.startswith("LOADED")).split()[1:]
    return micros / 1e6, [m for m in HEAVY if m in loaded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pythonpath", help="Import distil_trainers from this checkout instead of the installed one.")
    parser.add_argument("--statements", nargs="+", default=STATEMENTS, help="What to time (default: all below).")
    opts = parser.parse_args()
    statements = list(dict.fromkeys(["import transformers", "from transformers import Trainer", *opts.statements]))
    times: dict[str, list[float]] = {s: [] for s in statements}
    heavy: dict[str, list[str]] = {}
    for _ in range(opts.repeats):
        for statement in statements:
            seconds, heavy[statement] = measure(statement, opts.pythonpath)
            times[statement].append(seconds)
    median = {s: statistics.median(v) for s, v in times.items()}
    base, trainer = median["import transformers"], median["from transformers import Trainer"]
    where = f"distil_trainers from {opts.pythonpath}" if opts.pythonpath else "installed distil_trainers"
    print(f"python {sys.version.split()[0]}, {where}, median of {opts.repeats} fresh interpreters, -X importtime\n")
    print("| statement | import time (s) | − import transformers | − Trainer | optional modules loaded |")
    print("|---|---:|---:|---:|---|")
    for s in statements:
        print(f"| `{s}` | {median[s]:.2f} | {median[s] - base:+.2f} | {median[s] - trainer:+.2f} | "
              f"{', '.join(heavy[s]) or '—'} |")


if __name__ == "__main__":
    main()
