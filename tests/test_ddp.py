"""Two CPU processes over gloo (torchrun) against one process with the same effective batch: the same final weights
and the same logged losses (not scaled by the world size); with the teacher-output cache, two processes reading rows
by id give what one process with the live teacher gives; the adversarial trainer on a cross-lingual mix with unlabelled
target-language rows; and in one epoch every example is trained on exactly once, over the processes together (an
epoch that does not fill its last optimizer step is padded with its first examples, see
test_an_uneven_epoch_is_padded_with_its_first_examples)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_classifier
from ddp_adversarial_worker import ADVERSARIAL_WEIGHT, ALPHA, BETA, TEMPERATURE, build, language_data
from ddp_worker import annealing_data
from safetensors.torch import load_file

from distil_trainers.models.discriminator import LANGUAGE_COLUMN
from distil_trainers.teachers.cache import precompute_teacher_outputs

WORKER = Path(__file__).with_name("ddp_worker.py")
ADVERSARIAL_WORKER = Path(__file__).with_name("ddp_adversarial_worker.py")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path: Path, kind: str, processes: int, *extra: str, worker: Path = WORKER) -> tuple[dict, dict]:
    """``worker`` run as one process with 4 examples per device, or as two with 2; the final weights and the log."""
    out = tmp_path / f"{kind}_{processes}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        cmd = [sys.executable, str(worker), kind, str(out), "4", *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(worker), kind, str(out), "2", *extra]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return load_file(str(out / "final.safetensors")), json.loads((out / "log.json").read_text())


def seen_rows(tmp_path: Path, kind: str, processes: int) -> list[list[list[str]]]:
    """The ids each process trained on, in the run of :func:`run`: one list per process, of one list per
    micro-batch."""
    out = tmp_path / f"{kind}_{processes}"
    return [json.loads((out / f"seen_rank{rank}.json").read_text()) for rank in range(processes)]


def global_batches(seen: list[list[list[str]]]) -> list[list[str]]:
    """The rows of every micro-batch index over the processes together (process 0's first)."""
    assert len({len(batches) for batches in seen}) == 1, "the processes ran different numbers of micro-batches"
    return [[i for batches in seen for i in batches[k]] for k in range(len(seen[0]))]


def assert_each_example_once(seen: list[list[list[str]]], ids: list[str]) -> None:
    """Over the processes together, every id trained on exactly once; every process the same number of rows."""
    flat = [i for batches in seen for batch in batches for i in batch]
    repeated = {i: n for i, n in Counter(flat).items() if n > 1}
    assert not repeated, f"trained on more than once: {repeated}"
    assert sorted(flat) == sorted(ids), f"never trained on: {sorted(set(ids) - set(flat))}"
    assert len({sum(map(len, batches)) for batches in seen}) == 1


def assert_same_global_batches(single: list[list[list[str]]], ddp: list[list[list[str]]]) -> None:
    """Micro-batch k of one process (4 rows) holds the rows of micro-batch k of the two processes (2 + 2 rows)."""
    assert [sorted(b) for b in global_batches(single)] == [sorted(b) for b in global_batches(ddp)]


@pytest.mark.parametrize("kind", ["ddml", "annealing"])
def test_two_processes_match_one(tmp_path, kind):
    single_weights, single_log = run(tmp_path, kind, 1)
    ddp_weights, ddp_log = run(tmp_path, kind, 2)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log)


def test_two_processes_on_the_cache_match_one_with_the_live_teacher(tmp_path):
    # built over a shuffled copy: each rank's rows are found by id, whatever the sampler hands it
    precompute_teacher_outputs(tiny_classifier(0), annealing_data().shuffle(seed=5), tmp_path / "cache", batch_size=7)
    single_weights, single_log = run(tmp_path, "annealing", 1)
    ddp_weights, ddp_log = run(tmp_path, "annealing_cached", 2, str(tmp_path / "cache"))
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log)


def test_two_processes_match_one_on_two_tasks_of_unequal_sizes(tmp_path):
    # 16 + 8 examples, 4 per optimizer step: six single-task steps, every example once, in one process and in two
    single_weights, single_log = run(tmp_path, "multitask", 1)
    ddp_weights, ddp_log = run(tmp_path, "multitask", 2)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps=6)


def test_multitask_with_activation_checkpointing_in_two_processes_matches_one(tmp_path):
    # each step leaves the other task's head unused; Trainer turns DDP's unused-parameter search off under
    # checkpointing, which would stop the second step: the trainer turns it back on (non-reentrant checkpointing)
    single_weights, single_log = run(tmp_path, "multitask_checkpointing", 1)
    ddp_weights, ddp_log = run(tmp_path, "multitask_checkpointing", 2)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps=6)


def test_two_processes_train_on_every_example_once_per_epoch(tmp_path):
    # 32 examples, 4 per optimizer step, no dataloader_drop_last: eight steps, in one process and in two
    single_weights, single_log = run(tmp_path, "annealing_epoch", 1)
    ddp_weights, ddp_log = run(tmp_path, "annealing_epoch", 2)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps=8)
    ids = annealing_data(32)["id"][:]
    single, ddp = seen_rows(tmp_path, "annealing_epoch", 1), seen_rows(tmp_path, "annealing_epoch", 2)
    assert [len(b) for b in single[0]] == [4] * 8 and [len(b) for r in ddp for b in r] == [2] * 16
    assert_each_example_once(single, ids)
    assert_each_example_once(ddp, ids)
    assert_same_global_batches(single, ddp)


def test_an_uneven_epoch_is_padded_with_its_first_examples(tmp_path):
    """30 examples, 4 per optimizer step, no dataloader_drop_last. One process: eight steps, the last of 2 examples.
    Two processes: accelerate's even batches (Trainer's default) give every process whole micro-batches, so process 1
    ends the epoch on the first 2 examples of the epoch again (process 0's first micro-batch): every example is
    trained on, those 2 twice, nothing else twice, nothing dropped."""
    run(tmp_path, "annealing_uneven", 1)
    run(tmp_path, "annealing_uneven", 2)
    ids = annealing_data(30)["id"][:]
    single, ddp = seen_rows(tmp_path, "annealing_uneven", 1), seen_rows(tmp_path, "annealing_uneven", 2)
    assert [len(b) for b in single[0]] == [4] * 7 + [2]
    assert_each_example_once(single, ids)
    assert [len(b) for r in ddp for b in r] == [2] * 16
    first = ddp[0][0]
    assert ddp[1][-1] == first
    flat = [i for batches in ddp for batch in batches for i in batch]
    assert Counter(flat) == Counter(ids + first)
    # the same order as one process: the same global batches, the last one completed by the padding
    assert_same_global_batches([single[0][:-1]], [ddp[0][:-1], ddp[1][:-1]])
    assert sorted(ddp[0][-1]) == sorted(single[0][-1])


def test_adversarial_two_processes_match_one_with_unlabelled_target_rows(tmp_path):
    """AdversarialTrainer (Hinton KD and the language discriminator) on labelled source rows, UNLABELLED
    target-language rows, labelled rows without a language id and target rows with label -100; two micro-batches of 4
    (one process) or of 2 per process (two) per optimizer step, one epoch. Each term is a mean over its own items in
    the whole optimizer step, on every process: the label term over the gold labels, the teacher's over the rows with a
    label other than -100 (UNLABELLED included), the discriminator's over the rows with a language id."""
    single_weights, single_log = run(tmp_path, "adversarial", 1, worker=ADVERSARIAL_WORKER)
    ddp_weights, ddp_log = run(tmp_path, "adversarial", 2, worker=ADVERSARIAL_WORKER)
    assert any(name.startswith("extras.discriminator.") for name in single_weights)  # the student and the discriminator
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps=4,
                    also=("grad_norm", "discriminator_accuracy", "reversal_scale"))
    data = language_data()
    single, ddp = seen_rows(tmp_path, "adversarial", 1), seen_rows(tmp_path, "adversarial", 2)
    assert_each_example_once(single, data["id"][:])
    assert_each_example_once(ddp, data["id"][:])
    assert_same_global_batches(single, ddp)

    # the mix is uneven enough for a wrong count to show: in some optimizer step (two micro-batches) the processes
    # hold different numbers of gold labels and of language ids, and over the step the three counts differ
    row = {i: (label, language) for i, label, language in zip(data["id"][:], data["labels"][:], data[LANGUAGE_COLUMN][:])}

    def counts(batches):  # (gold labels, rows in the teacher's term, language ids)
        rows = [row[i] for batch in batches for i in batch]
        return (sum(y >= 0 for y, _ in rows), sum(y != -100 for y, _ in rows), sum(g != -100 for _, g in rows))

    per_step = [[counts(batches[2 * k : 2 * k + 2]) for batches in ddp] for k in range(4)]
    assert any(r0[0] != r1[0] for r0, r1 in per_step) and any(r0[2] != r1[2] for r0, r1 in per_step)
    assert any(len({a + b for a, b in zip(r0, r1)}) == 3 for r0, r1 in per_step)

    # the first step's logged losses against the initial models, by hand
    trainer = build(str(tmp_path / "reference"), 4)
    position = {i: n for n, i in enumerate(data["id"][:])}
    first_step = global_batches(single)[0] + global_batches(single)[1]
    rows = data.select([position[i] for i in first_step])
    inputs = {"input_ids": torch.tensor(rows["input_ids"]), "attention_mask": torch.tensor(rows["attention_mask"])}
    labels, languages = torch.tensor(rows["labels"]), torch.tensor(rows[LANGUAGE_COLUMN])
    with torch.no_grad():
        student = trainer.student(**inputs, output_hidden_states=True)
        teacher = trainer.teacher(**inputs).logits
        discriminator = trainer.discriminator.net(student.hidden_states[-1][:, 0])
    gold, scored, known = labels >= 0, labels != -100, languages != -100
    ce = F.cross_entropy(student.logits[gold], labels[gold]).item()
    t = TEMPERATURE
    log_teacher, log_student = F.log_softmax(teacher / t, -1), F.log_softmax(student.logits / t, -1)
    kd = (t * t * (log_teacher.exp() * (log_teacher - log_student)).sum(-1))[scored].mean().item()
    adversarial = F.cross_entropy(discriminator[known], languages[known]).item()
    first = single_log["logs"][0]
    assert first["loss_ce"] == pytest.approx(ce, rel=1e-4)
    assert first["loss_kd"] == pytest.approx(kd, rel=1e-4)
    assert first["loss_adversarial"] == pytest.approx(adversarial, rel=1e-4)
    assert first["loss"] == pytest.approx(ALPHA * ce + BETA * kd + ADVERSARIAL_WEIGHT * adversarial, rel=1e-4)


def assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps: int = 4, also: tuple[str, ...] = (),
                    atol: float = 1e-5):
    """The same weights (within ``atol``) and, at every logged step, the same losses and ``also`` keys."""
    assert single_log["world_size"] == 1 and ddp_log["world_size"] == 2
    assert single_weights.keys() == ddp_weights.keys()
    for name, value in single_weights.items():
        difference = float((ddp_weights[name] - value).abs().max())
        assert difference < atol, f"{name}: the weights of 1 and 2 processes differ by up to {difference:.3g}"

    def losses(log):
        return [{k: v for k, v in h.items() if "loss" in k or k in also} for h in log["logs"] if "loss" in h]

    single, ddp = losses(single_log), losses(ddp_log)
    assert len(single) == len(ddp) == steps
    for a, b in zip(single, ddp):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
