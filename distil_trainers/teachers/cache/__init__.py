"""Teacher-output cache: run the teacher once over a dataset, then distil without it.

A classifier teacher's logits are stored in full; a causal-LM teacher's output is stored as the top-k
log-probabilities of every completion token plus the log of the remaining probability mass (the approach of
DistillKit's offline mode and of sparse-logit KD). Everything is keyed by the dataset's ``id`` column, never by
position, step or rank, so shuffling, gradient accumulation and data parallelism read the right rows.

On disk a cache is a directory with two files, never a pickle:

- ``teacher_outputs.safetensors``: the tensors (``logits`` ``(N, C)``; or ``topk_logprobs`` ``(T, k)``,
  ``topk_indices`` ``(T, k)``, ``rest_logprob`` ``(T,)`` and ``offsets`` ``(N + 1,)`` for the top-k kind);
- ``teacher_outputs.json``: the example ids (row ``i`` of the tensors belongs to ``ids[i]``), the kind, the
  fingerprint, the settings it was built with and a hash of every example's content (format version 3, below).

A multi-task teacher (a :class:`~distil_trainers.models.MultiTaskModel`, or a
:class:`~distil_trainers.models.routed.TaskRoutedTeacher` of single-task teachers) has heads of different widths: its
cache holds, per example, the logits of the head of that example's task (its ``task_ids`` column), in a ``logits``
tensor ``(N, C_max)`` padded with NaN beyond the task's width, plus ``task_ids`` ``(N,)``, the task of every row; the
JSON's ``meta["tasks"]`` records ``{task: num_labels}`` in the teacher's task order (format version 2; single-task
caches keep format version 1).

The fingerprint hashes the teacher (config and every weight) and the dataset columns the teacher reads (ids, token
columns and the task column): :func:`precompute_teacher_outputs` reuses a cache whose fingerprint matches and rebuilds
it otherwise.

A wrong cache is never used, since nothing downstream would notice it:

- NaN or inf in the teacher's outputs (a float16 teacher overflowing, NaN weights) would turn every student weight into
  NaN at the first optimizer step while the logged loss still looks normal. Building, loading, constructing and
  attaching a cache each refuse them with one error naming the examples (:func:`check_finite_logits`). A classifier's
  logits must be finite, ``-inf`` included (the logit-matching losses, e.g. Annealing-KD's MSE, cannot use it; a
  multi-task cache's NaN padding beyond each row's head is not checked). Top-k caches may hold ``-inf``
  log-probabilities (a token the teacher rules out, the rest mass when ``k`` covers the vocabulary): only NaN and
  ``+inf`` are refused there.
- Ids are only names: a cache built on other texts that reuse the same ids would silently distil each example towards
  another example's teacher output. The JSON therefore also stores, per example, a short hash of its content
  (``content_hashes``: the raw ``text``, with ``text_pair``, when the dataset has it, and the input ids the teacher
  read), and :meth:`TeacherOutputs.attach` compares them with the dataset's rows.

Format version 3 (every cache written now) added ``content_hashes``. Caches of versions 1 (single-task and top-k) and
2 (multi-task: the ``task_ids`` tensor and ``meta["tasks"]``) still load, with a warning that their examples cannot be
checked; rebuilding one (``rebuild=True``) adds the hashes.

The code is in four modules: :mod:`.fingerprints` (what ties a cache to its teacher and its examples: fingerprints,
ids, per-example content hashes), :mod:`.checks` (teacher outputs must be finite), :mod:`.outputs` (the
:class:`TeacherOutputs` container, on disk and attached to a dataset) and :mod:`.build` (running a teacher once to
fill one). Import from this package: ``from distil_trainers.teachers.cache import precompute_teacher_outputs``.

Example::

    cache = precompute_teacher_outputs(teacher, tokenized["train"], "runs/teacher_cache", tokenizer=tokenizer)
    trainer = AnnealingTrainer(model=student, teacher_outputs=cache, args=args, train_dataset=tokenized["train"], ...)
"""

from .build import precompute_teacher_outputs, precompute_topk_logprobs, resolve_teacher_outputs, topk_entries
from .checks import BUILD_ADVICE, LOADED_ADVICE, SHOWN_IDS, TEACHER_FAULT_ADVICE, check_finite_logits
from .fingerprints import (
    CONTENT_HASH_CHARS,
    CONTENT_TEXT_COLUMNS,
    ID_COLUMN,
    content_groups,
    dataset_fingerprint,
    example_hashes,
    model_fingerprint,
    teacher_tasks,
)
from .outputs import (
    CACHE_ROW_COLUMN,
    CACHE_ROW_KEY,
    FORMAT_VERSION,
    KINDS,
    META_FILE,
    SUPPORTED_FORMAT_VERSIONS,
    TENSORS_FILE,
    UNVERIFIABLE_FORMAT_VERSIONS,
    TeacherOutputs,
)

__all__ = [
    "resolve_teacher_outputs",
    "CACHE_ROW_COLUMN",
    "TeacherOutputs",
    "check_finite_logits",
    "content_groups",
    "example_hashes",
    "dataset_fingerprint",
    "model_fingerprint",
    "precompute_teacher_outputs",
    "precompute_topk_logprobs",
    "teacher_tasks",
    "topk_entries",
]
