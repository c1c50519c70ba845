"""Pushing distilled students to the Hugging Face Hub, each with its model card.

A push is done in two steps so that it can be checked without the network:

1. :func:`plan_upload` lists, for every repository, the files of the saved student (weights, config, tokenizer, the
   card ``README.md``, the log history) and the commit message: an :class:`UploadPlan`. Training bookkeeping is
   left out: ``checkpoint-*`` folders, ``_*`` and dot files, ``stage.json`` / ``training_complete.json``,
   ``training_args.bin`` (a pickle; the card lists the hyper-parameters) and ``projections.safetensors`` (the
   feature-matching projections are not part of the student).
2. :func:`execute_plan` creates the repositories (``HfApi.create_repo(exist_ok=True)``) and uploads each in one
   commit (``HfApi.create_commit`` with ``CommitOperationAdd``). Any failure (offline, no token, refused) raises one
   :class:`HubPushError` that says the local save is complete and where it is.

A mutual-learning run pushes one repository per student, named by a pattern (default ``"{repo_id}-{student}"``,
e.g. ``me/ddml-davidson-minilm3``).

:meth:`DistillationTrainer.push_to_hub <distil_trainers.DistillationTrainer.push_to_hub>` and
:meth:`MutualLearningTrainer.push_to_hub` save locally, render the card(s), plan and push with these functions; the
recipes call :func:`push_saved_models` once their report is written.

While training with ``push_to_hub=True``, the trainers honour ``args.hub_strategy`` as
:class:`~transformers.Trainer` does (:class:`CheckpointPusher`):

* ``"end"``: nothing is pushed while training; ``trainer.push_to_hub()`` pushes at the end.
* ``"every_save"`` (Trainer's default): at every saved checkpoint, the student(s) of that checkpoint are copied to
  ``args.output_dir`` with their card and pushed (:func:`plan_checkpoint_push`), with the commit message
  ``"Training in progress, step N"`` (``"epoch N"`` with ``save_strategy="epoch"``).
* ``"checkpoint"``: the same, plus the whole checkpoint folder (optimizer, scheduler, RNG and trainer state) to
  ``last-checkpoint/`` of ``args.hub_model_id``, so that training can resume from the Hub.
* ``"all_checkpoints"``: the same with every checkpoint kept, each as ``checkpoint-N/``.

Like Trainer, a checkpoint push runs in a background thread and training goes on; a save that comes while the
previous push is still running is not pushed, unless ``hub_always_push`` (then that save waits for the previous push
to end, so that two pushes never read the same files at once). A failed checkpoint push never stops the training:
it is logged once as a warning (later failures at INFO level), the checkpoint stays on disk, and the final
``push_to_hub()`` still raises its one :class:`HubPushError` after the local save.

The Hub token never leaves the machine inside a file. Trainer pickles the whole ``TrainingArguments`` to
``training_args.bin``, ``hub_token`` included, and ``hub_strategy="checkpoint"`` / ``"all_checkpoints"`` upload the
checkpoint folder with it; so every trainer of this library writes that file through :func:`save_training_args`,
which pickles :func:`args_without_secrets` (the credentials of :data:`SECRET_ARGUMENTS` and :data:`SECRET_KWARGS`
set to ``None`` / left out; the run's own arguments keep them, so pushing and resuming work as before; Trainer never
reads the file back). As a second guard, :func:`execute_plan` (the final push and every checkpoint push) reads each
file of the plan before creating any repository and refuses the whole push, with one :class:`HubPushError` naming
the file, if one holds the token it pushes with (or that of the ``HfApi`` it is given). It refuses rather than
scrubbing on the way: a token in a file means something else wrote it there, and what else that file holds is
unknown. Tokens shorter than :data:`MIN_SECRET_LENGTH` characters are not searched for (they could match the bytes of
weights by chance; Hub tokens are much longer).
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from .cards import CardContext, card_context_from_trainer, write_model_card

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_MODEL_FILES",
    "CheckpointPusher",
    "DEFAULT_COMMIT_MESSAGE",
    "DEFAULT_STUDENT_PATTERN",
    "EXCLUDED_PATTERNS",
    "HubPushError",
    "MIN_SECRET_LENGTH",
    "RepoUpload",
    "SECRET_ARGUMENTS",
    "SECRET_KWARGS",
    "UploadPlan",
    "args_without_secrets",
    "check_no_secrets",
    "default_repo_id",
    "execute_plan",
    "plan_checkpoint_push",
    "plan_upload",
    "push_saved_models",
    "push_trainer",
    "save_training_args",
    "student_folder",
    "student_repo_id",
    "sync_checkpoint",
    "trainer_plan",
]

DEFAULT_COMMIT_MESSAGE = "End of training"
DEFAULT_STUDENT_PATTERN = "{repo_id}-{student}"
# Paths (relative to the saved model's folder, POSIX separators) that are never uploaded.
EXCLUDED_PATTERNS = (
    "checkpoint-*",
    "checkpoint-*/*",
    "_*",
    ".*",
    "*/.*",
    "runs/*",
    "stage.json",
    "training_complete.json",
    "training_args.bin",
    "projections.safetensors",
)


# The files of a checkpoint that make up the model (as Trainer copies them to output_dir before a checkpoint push).
CHECKPOINT_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
# Never uploaded from a checkpoint folder (everything else is: the state needed to resume).
CHECKPOINT_EXCLUDED = ("_*", ".*", "*/.*")

# Arguments (of TrainingArguments and its subclasses: this library's, TRL's configs) that hold a credential. A name
# ending in "_token" is no sign of one: TRL's SFTConfig has pad_token and eos_token, tokenizer tokens.
SECRET_ARGUMENTS = ("hub_token", "push_to_hub_token", "hf_token", "use_auth_token", "auth_token", "token")
# Keys of the dictionary arguments (model_init_kwargs, teacher_model_init_kwargs…, handed to from_pretrained) that
# hold a credential.
SECRET_KWARGS = ("token", "use_auth_token", "hub_token")
# Shorter tokens are not searched for in the files of a push (see the module docstring).
MIN_SECRET_LENGTH = 8
_SCAN_CHUNK = 1 << 20


class HubPushError(RuntimeError):
    """The upload to the Hub failed; the local save it was made from is complete (see the message).

    Attributes: ``repo_id`` (the repository it failed at), ``reason`` (the error, on one line) and ``pushed`` (the
    repositories of the plan pushed before it)."""

    def __init__(self, message: str, repo_id: str | None = None, reason: str | None = None, pushed=()):
        super().__init__(message)
        self.repo_id = repo_id
        self.reason = reason
        self.pushed = list(pushed)


@dataclass
class RepoUpload:
    """One commit of a push: the repository, the local folder, the files (relative POSIX paths), the commit message,
    and the folder of the repository they go to (``path_in_repo``; ``""``: its root)."""

    repo_id: str
    folder: str
    files: list[str]
    commit_message: str
    student: str | None = None
    path_in_repo: str = ""

    def repo_path(self, file: str) -> str:
        """Where ``file`` goes in the repository."""
        return f"{self.path_in_repo.strip('/')}/{file}" if self.path_in_repo.strip("/") else file


@dataclass
class UploadPlan:
    """Every repository of a push, and the local folder that holds everything (named in errors)."""

    local_dir: str
    uploads: list[RepoUpload] = field(default_factory=list)

    @property
    def repo_ids(self) -> list[str]:
        return [u.repo_id for u in self.uploads]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        lines = [f"Upload plan for {self.local_dir}:"]
        for u in self.uploads:
            where = f"{u.repo_id}/{u.path_in_repo.strip('/')}" if u.path_in_repo.strip("/") else u.repo_id
            lines.append(f"  {where} <- {u.folder} ({len(u.files)} files; commit {u.commit_message!r})")
        return "\n".join(lines)


def default_repo_id(args: Any) -> str:
    """``args.hub_model_id``, else the output folder's name (as Trainer names the repository)."""
    hub_model_id = getattr(args, "hub_model_id", None)
    return hub_model_id or Path(args.output_dir).absolute().name


def student_repo_id(pattern: str, repo_id: str, student: str) -> str:
    """The repository of one student of a mutual-learning run: ``pattern`` formatted with ``repo_id`` (the run's
    ``hub_model_id``; its namespace is kept) and ``student``, e.g. ``"{repo_id}-{student}"``."""
    try:
        name = pattern.format(repo_id=repo_id, student=student)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"Student repository pattern {pattern!r} may only use {{repo_id}} and {{student}}.") from exc
    if name.count("/") > 1 or not name.strip("/"):
        raise ValueError(f"Student repository pattern {pattern!r} gives the invalid repository id {name!r}.")
    return name


def student_folder(output_dir: str | os.PathLike, student: str) -> Path:
    """Where a mutual-learning run saved ``student``: ``<output_dir>/student_<name>`` or ``<output_dir>/<name>``."""
    for candidate in (Path(output_dir) / f"student_{student}", Path(output_dir) / student):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"No saved student {student!r} in {output_dir} (expected student_{student}/ or {student}/)."
    )


def _excluded(relative: str, exclude: Sequence[str]) -> bool:
    parts = relative.split("/")
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(parts[0], p) for p in exclude)


def plan_folder(
    folder: str | os.PathLike,
    repo_id: str,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    student: str | None = None,
    exclude: Sequence[str] = EXCLUDED_PATTERNS,
    skip_dirs: Sequence[str] = (),
) -> RepoUpload:
    """A :class:`RepoUpload` of every file below ``folder`` except the ``exclude`` patterns and the ``skip_dirs``
    sub-folders (the other students' folders of a mutual-learning run). Raises if no model weights are there."""
    folder = Path(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        if relative.split("/")[0] in skip_dirs or _excluded(relative, exclude):
            continue
        files.append(relative)
    if not any(f.endswith((".safetensors", ".bin", ".gguf")) for f in files):
        raise FileNotFoundError(f"No model weights in {folder}: save the model there before pushing it.")
    return RepoUpload(repo_id=repo_id, folder=str(folder), files=files, commit_message=commit_message, student=student)


def plan_upload(
    folders: Mapping[str | None, str | os.PathLike],
    repo_id: str,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    student_pattern: str = DEFAULT_STUDENT_PATTERN,
    local_dir: str | os.PathLike | None = None,
) -> UploadPlan:
    """The plan for saved models: ``{None: folder}`` for one model (pushed to ``repo_id``), ``{student: folder}`` for
    the students of a mutual-learning run (each to ``student_repo_id(student_pattern, repo_id, student)``)."""
    if not folders:
        raise ValueError("Nothing to push: no saved model folders were given.")
    if None in folders and len(folders) > 1:
        raise ValueError("Give either one unnamed folder or named students, not both.")
    plan = UploadPlan(local_dir=str(local_dir or Path(next(iter(folders.values()))).parent))
    for student, folder in folders.items():
        target = repo_id if student is None else student_repo_id(student_pattern, repo_id, student)
        plan.uploads.append(plan_folder(folder, target, commit_message, student))
    if len(set(plan.repo_ids)) != len(plan.repo_ids):
        raise ValueError(
            f"The pattern {student_pattern!r} gives the same repository to several students: {plan.repo_ids}"
        )
    return plan


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def args_without_secrets(args: Any) -> Any:
    """A shallow copy of ``args`` with every credential removed: the :data:`SECRET_ARGUMENTS` that are strings set to
    ``None``, the string :data:`SECRET_KWARGS` left out of dictionary arguments (copied, never changed in place).

    ``copy.copy`` and ``setattr`` rather than ``dataclasses.replace``: replace would run ``__post_init__`` again,
    which converts and validates every argument a second time (and this library's checks with it). ``args`` itself is
    untouched: the run still pushes with its token."""
    clean = copy.copy(args)
    for name in SECRET_ARGUMENTS:
        if isinstance(getattr(clean, name, None), str):
            setattr(clean, name, None)
    for name, value in list(vars(clean).items()):
        if isinstance(value, dict) and any(isinstance(value.get(key), str) for key in SECRET_KWARGS):
            setattr(clean, name, {k: v for k, v in value.items() if not (k in SECRET_KWARGS and isinstance(v, str))})
    return clean


def save_training_args(args: Any, output_dir: str | os.PathLike) -> Path:
    """Write ``<output_dir>/training_args.bin`` as Trainer does (``torch.save`` of the arguments), without the
    credentials (:func:`args_without_secrets`): the file goes into checkpoints, and checkpoints are pushed. Returns
    its path."""
    import torch

    path = Path(output_dir) / "training_args.bin"
    torch.save(args_without_secrets(args), path)
    return path


def _holds(path: Path, secrets: Sequence[bytes]) -> bool:
    """Whether the file holds one of ``secrets``; read in chunks that overlap by the longest secret, so that a secret
    across two chunks is found too and weights of any size fit in memory."""
    overlap = max(len(s) for s in secrets) - 1
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            window = tail + chunk
            if any(s in window for s in secrets):
                return True
            tail = window[-overlap:] if overlap else b""
    return False


def check_no_secrets(plan: UploadPlan, secrets: Iterable[Any]) -> None:
    """Refuse a plan any of whose files holds one of ``secrets`` (the strings of at least :data:`MIN_SECRET_LENGTH`
    characters; others are ignored).

    Raises:
        HubPushError: naming the first such file and its repository (never the secret); nothing is pushed."""
    wanted = sorted({s.encode() for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH})
    if not wanted:
        return
    for upload in plan.uploads:
        for file in upload.files:
            path = Path(upload.folder) / file
            if _holds(path, wanted):
                reason = f"{path} holds the Hugging Face Hub token"
                raise HubPushError(
                    f"Refusing to push to {upload.repo_id}: {reason}, and a token is never uploaded. Nothing was "
                    f"pushed; the local save in {plan.local_dir} is complete. Remove the token from that file (or "
                    "leave the file out) and push again.",
                    repo_id=upload.repo_id,
                    reason=reason,
                )


def execute_plan(
    plan: UploadPlan,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    api: HfApi | None = None,
    secrets: Iterable[str | None] = (),
) -> list[Any]:
    """Create every repository of the plan and upload each :class:`RepoUpload` in one commit. Returns the commit
    infos. First, every file of the plan is read: if one holds ``token``, the ``HfApi``'s own token or one of
    ``secrets`` (:func:`check_no_secrets`), nothing is created nor uploaded.

    Raises:
        HubPushError: on any failure, naming the repositories already pushed and saying that the local save in
            ``plan.local_dir`` is complete (nothing is lost; push again later); or naming the file that holds a
            token."""
    api = api or HfApi()
    done, infos = [], []
    created: dict[str, str] = {}
    current = plan.uploads[0].repo_id if plan.uploads else None
    try:
        check_no_secrets(plan, [token, getattr(api, "token", None), *secrets])
        for upload in plan.uploads:
            current = upload.repo_id
            if upload.repo_id not in created:
                url = api.create_repo(upload.repo_id, token=token, private=private, exist_ok=True)
                created[upload.repo_id] = getattr(url, "repo_id", None) or upload.repo_id
            repo_id = created[upload.repo_id]
            operations = [
                CommitOperationAdd(path_in_repo=upload.repo_path(f), path_or_fileobj=str(Path(upload.folder) / f))
                for f in upload.files
            ]
            infos.append(
                api.create_commit(
                    repo_id, operations, commit_message=upload.commit_message, token=token, revision=revision
                )
            )
            if repo_id not in done:
                done.append(repo_id)
    except HubPushError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {_one_line(exc)}"
        pushed = f" Already pushed: {', '.join(done)}." if done else ""
        raise HubPushError(
            f"Pushing to the Hugging Face Hub failed at {current} ({reason}).{pushed} "
            f"The local save is complete: {plan.local_dir} holds the trained model(s) and their model cards; "
            "nothing was lost. Push them again once the Hub is reachable (network, HF_HUB_OFFLINE unset, a token "
            "with write access), e.g. with `distil-trainers push` or trainer.push_to_hub().",
            repo_id=current,
            reason=reason,
            pushed=done,
        ) from exc
    for repo_id in done:
        logger.info("Pushed %s", repo_id)
    return infos


def push_saved_models(
    folders: Mapping[str | None, str | os.PathLike],
    contexts: Mapping[str | None, CardContext],
    repo_id: str,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    student_pattern: str = DEFAULT_STUDENT_PATTERN,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    api: HfApi | None = None,
    local_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
) -> UploadPlan:
    """Write each saved model's card (``README.md`` from ``contexts[key]``, titled with its repository's name), plan
    the upload and push it (unless ``dry_run``). The students of a mutual-learning run name their peers' repositories in their cards. Returns the
    plan; raises :class:`HubPushError` if the upload fails (the models and cards are on disk by then)."""
    peer_repos = {s: student_repo_id(student_pattern, repo_id, s) for s in folders if s is not None}
    for key, folder in folders.items():
        context = contexts[key]
        context.model_name = (repo_id if key is None else peer_repos[key]).split("/")[-1]  # the card names its repo
        for peer in context.peers:
            peer.repo_id = peer.repo_id or peer_repos.get(peer.name)
        write_model_card(context, folder)
    plan = plan_upload(folders, repo_id, commit_message, student_pattern, local_dir=local_dir)
    logger.info(plan.describe())
    if not dry_run:
        execute_plan(plan, token=token, private=private, revision=revision, api=api)
    return plan


def trainer_plan(
    trainer: Any,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    student_pattern: str | None = None,
    **card_kwargs: Any,
) -> UploadPlan:
    """The plan of a trainer's saved student(s) in ``args.output_dir`` (main process, after the save): renders the
    card(s) (``trainer.hub_card_kwargs`` updated with ``card_kwargs`` go to
    :func:`~distil_trainers.cards.card_context_from_trainer`) and plans one repository, ``args.hub_model_id``, or one
    per student of a mutual-learning run, named by ``student_pattern`` (default: ``trainer.hub_student_pattern``)."""
    args = trainer.args
    output_dir = Path(args.output_dir)
    repo_id = default_repo_id(args)
    pattern = student_pattern or getattr(trainer, "hub_student_pattern", None) or DEFAULT_STUDENT_PATTERN
    card_kwargs = {**(getattr(trainer, "hub_card_kwargs", None) or {}), **card_kwargs}
    if hasattr(trainer, "student_names"):
        folders: dict[str | None, Path] = {s: student_folder(output_dir, s) for s in trainer.student_names}
        contexts = {}
        for s in trainer.student_names:
            name = student_repo_id(pattern, repo_id, s).split("/")[-1]
            contexts[s] = card_context_from_trainer(trainer, student=s, model_name=name, **card_kwargs)
    else:
        folders = {None: output_dir}
        contexts = {None: card_context_from_trainer(trainer, model_name=repo_id.split("/")[-1], **card_kwargs)}
    plan = push_saved_models(
        folders, contexts, repo_id, commit_message or DEFAULT_COMMIT_MESSAGE, pattern, local_dir=output_dir,
        dry_run=True,
    )
    if getattr(args, "save_projections", False):
        for upload in plan.uploads:
            if (Path(upload.folder) / "projections.safetensors").is_file():
                upload.files.append("projections.safetensors")
    return plan


def push_trainer(
    trainer: Any,
    commit_message: str | None = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    student_pattern: str | None = None,
    api: HfApi | None = None,
    dry_run: bool = False,
    **card_kwargs: Any,
) -> UploadPlan | None:
    """What the trainers' ``push_to_hub`` does: save the student(s) to ``args.output_dir`` (every process takes
    part), then on the main process render the card(s) (``card_kwargs`` go to
    :func:`~distil_trainers.cards.card_context_from_trainer`, e.g. ``datasets=["davidson"]``), plan and upload to
    ``args.hub_model_id`` (one repository per student for mutual learning, named by ``student_pattern``, default
    ``trainer.hub_student_pattern``). Blocking; raises :class:`HubPushError` if the upload fails."""
    trainer.save_model(_internal_call=True)
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    plan = trainer_plan(trainer, commit_message or DEFAULT_COMMIT_MESSAGE, student_pattern, **card_kwargs)
    if not dry_run:
        execute_plan(
            plan,
            token=token if token is not None else args.hub_token,
            private=private if private is not None else args.hub_private_repo,
            revision=revision if revision is not None else args.hub_revision,
            api=api if api is not None else getattr(trainer, "hub_api", None),
            secrets=[args.hub_token],  # also when another token pushes
        )
    return plan


# --------------------------------------------------------------------------------------------------------------------
# Pushes while training (hub_strategy)
# --------------------------------------------------------------------------------------------------------------------


def _strategy(args: Any) -> str:
    value = getattr(args, "hub_strategy", "end")
    return str(getattr(value, "value", value))


def sync_checkpoint(trainer: Any, checkpoint_folder: str | os.PathLike) -> list[Path]:
    """Copy the student(s) of a saved checkpoint to ``args.output_dir``, where the final save puts them (as Trainer
    copies the model files before a checkpoint push): the model files (:data:`CHECKPOINT_MODEL_FILES`, the shards of
    an index, ``projections.safetensors`` with ``save_projections``) and the tokenizer; for a mutual-learning run each
    student's folder ``<checkpoint>/<name>/`` to ``<output_dir>/<name>/`` and ``students.json``. Returns the copies."""
    import json

    checkpoint = Path(checkpoint_folder)
    output_dir = Path(trainer.args.output_dir)
    copied: list[Path] = []
    if hasattr(trainer, "student_names"):
        for name in trainer.student_names:
            source = checkpoint / name
            if not source.is_dir():
                raise FileNotFoundError(f"Checkpoint {checkpoint} has no folder for student {name!r}.")
            try:  # where the final save, and so the push, finds it
                target = student_folder(output_dir, name)
            except FileNotFoundError:
                target = output_dir / name
            copied.append(Path(shutil.copytree(source, target, dirs_exist_ok=True)))
        if (checkpoint / "students.json").is_file():
            copied.append(Path(shutil.copy2(checkpoint / "students.json", output_dir / "students.json")))
        return copied
    output_dir.mkdir(parents=True, exist_ok=True)
    names = list(CHECKPOINT_MODEL_FILES)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (checkpoint / index).is_file():
            names += sorted(set(json.loads((checkpoint / index).read_text())["weight_map"].values()))
    if getattr(trainer.args, "save_projections", False):
        names.append("projections.safetensors")
    for name in names:
        if (checkpoint / name).is_file():
            copied.append(Path(shutil.copy2(checkpoint / name, output_dir / name)))
    if getattr(trainer, "processing_class", None) is not None and hasattr(trainer.processing_class, "save_pretrained"):
        trainer.processing_class.save_pretrained(str(output_dir))
    return copied


def checkpoint_commit_message(trainer: Any) -> str:
    """Trainer's message for a checkpoint push: ``"Training in progress, step N"`` (``save_strategy="steps"``),
    else ``"Training in progress, epoch N"``."""
    if str(getattr(trainer.args.save_strategy, "value", trainer.args.save_strategy)) == "steps":
        return f"Training in progress, step {trainer.state.global_step}"
    return f"Training in progress, epoch {int(trainer.state.epoch or 0)}"


def plan_checkpoint_push(
    trainer: Any,
    checkpoint_folder: str | os.PathLike,
    student_pattern: str | None = None,
    **card_kwargs: Any,
) -> UploadPlan:
    """The plan of one checkpoint push under ``args.hub_strategy``: the checkpoint's student(s) copied to
    ``args.output_dir`` (:func:`sync_checkpoint`) and planned with their card(s) like the final push
    (:func:`trainer_plan`, commit ``"Training in progress, …"``); with ``"checkpoint"`` / ``"all_checkpoints"`` also
    the whole checkpoint folder to ``last-checkpoint/`` / ``checkpoint-N/`` of ``args.hub_model_id`` (commit
    ``"…, checkpoint"``). A mutual-learning run's checkpoint (every student and the shared optimizer state) goes to
    that repository too, the run's, beside the students' own repositories."""
    strategy = _strategy(trainer.args)
    if strategy not in ("every_save", "checkpoint", "all_checkpoints"):
        raise ValueError(f"No checkpoint push with hub_strategy={strategy!r}.")
    sync_checkpoint(trainer, checkpoint_folder)
    message = checkpoint_commit_message(trainer)
    plan = trainer_plan(trainer, message, student_pattern, **card_kwargs)
    if strategy in ("checkpoint", "all_checkpoints"):
        target = "last-checkpoint" if strategy == "checkpoint" else Path(checkpoint_folder).name
        upload = plan_folder(
            checkpoint_folder, default_repo_id(trainer.args), f"{message}, checkpoint", exclude=CHECKPOINT_EXCLUDED
        )
        upload.path_in_repo = target
        plan.uploads.append(upload)
    return plan


class CheckpointPusher:
    """The checkpoint pushes of one trainer (``args.hub_strategy`` other than ``"end"``), run one at a time in a
    background thread as Trainer runs them (``run_as_future``); see the module docstring.

    A failure (planning or upload) is caught: the first one is logged as a warning that says the checkpoint is on
    disk and training continues, the later ones at INFO level. ``failures`` keeps every message, ``plans`` every plan
    that was handed to :func:`execute_plan`."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._checkpoint: str | None = None
        self.warned = False
        self.failures: list[str] = []
        self.plans: list[UploadPlan] = []

    @property
    def in_progress(self) -> bool:
        return self._future is not None and not self._future.done()

    def push(self, trainer: Any, checkpoint_folder: str | os.PathLike) -> UploadPlan | None:
        """Plan the push of a just-saved checkpoint (main process) and start it in the background. Returns the plan,
        or ``None`` when nothing is pushed (another process, ``"end"``, or the previous push still running without
        ``hub_always_push``)."""
        args = trainer.args
        if not trainer.is_world_process_zero() or _strategy(args) == "end":
            return None
        if self.in_progress:
            if not getattr(args, "hub_always_push", False):
                logger.info("The previous checkpoint push is still running: %s is not pushed.", checkpoint_folder)
                return None
            self._future.exception()  # wait: the next plan copies files the running push may be reading
        self._collect()
        handler = getattr(trainer, "callback_handler", None)
        if handler is not None:
            handler.on_push_begin(args, trainer.state, trainer.control)
        try:
            plan = plan_checkpoint_push(trainer, checkpoint_folder)
        except Exception as exc:
            self._failed(str(checkpoint_folder), exc)
            return None
        self.plans.append(plan)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distil-trainers-hub")
        token, private, revision = args.hub_token, args.hub_private_repo, args.hub_revision
        api = getattr(trainer, "hub_api", None)

        def run() -> list[Any]:
            return execute_plan(plan, token=token, private=private, revision=revision, api=api)

        self._checkpoint = str(checkpoint_folder)
        self._future = self._executor.submit(run)
        return plan

    def wait(self) -> None:
        """Wait for the running push (end of training, before the final push), report its failure, free the
        thread."""
        if self._future is not None:
            if not self._future.done():
                logger.info("Waiting for the current checkpoint push to finish.")
            self._future.exception()
        self._collect()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _collect(self) -> None:
        """Report the finished push's failure, if any (called from the training thread only)."""
        future = self._future
        if future is None or not future.done():
            return
        self._future = None
        error = future.exception()
        if error is not None:
            self._failed(self._checkpoint or "the checkpoint", error)

    def _failed(self, checkpoint: str, error: BaseException) -> None:
        reason = getattr(error, "reason", None) or f"{type(error).__name__}: {_one_line(error)}"
        where = f" at {error.repo_id}" if getattr(error, "repo_id", None) else ""
        message = (
            f"Pushing {Path(checkpoint).name} to the Hugging Face Hub failed{where} ({reason}). Training continues: "
            f"the checkpoint is saved in {checkpoint}, nothing is lost. Later checkpoints are still pushed (a failure "
            "is not warned about again); once training ends, push the model with trainer.push_to_hub() or "
            "`distil-trainers push` (network, HF_HUB_OFFLINE unset, a token with write access)."
        )
        self.failures.append(message)
        if self.warned:
            logger.info(message)
        else:
            self.warned = True
            logger.warning(message)


# --------------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------------


def split_push_argument(args: Any) -> tuple[Any, bool]:
    """``(args with push_to_hub=False, whether to push)``. The recipes train every stage with ``push_to_hub`` off
    (so that no trainer pushes checkpoints while training, whatever ``hub_strategy`` says: teachers, baselines and
    intermediate stages are never pushed) and push the finished students once, after their report is written
    (:func:`push_recipe_models`)."""
    if not getattr(args, "push_to_hub", False):
        return args, False
    import dataclasses

    return dataclasses.replace(args, push_to_hub=False), True


def push_recipe_models(
    args: Any,
    folders: Mapping[str | None, str | os.PathLike],
    contexts: Mapping[str | None, CardContext],
    student_pattern: str = DEFAULT_STUDENT_PATTERN,
    commit_message: str | None = None,
    api: HfApi | None = None,
) -> UploadPlan | None:
    """The end of a recipe run with ``--push_to_hub``: on the main process, write the cards and push ``folders``
    (``{None: folder}``: one repository ``args.hub_model_id``; ``{student: folder}``: one per student, named by
    ``student_pattern``). If the upload fails, print the one :class:`HubPushError` message and exit with status 1;
    the results and the saved models are on disk by then."""
    if getattr(args, "process_index", 0) != 0:
        return None
    import sys

    repo_id = default_repo_id(args)
    try:
        plan = push_saved_models(
            folders,
            contexts,
            repo_id,
            commit_message or DEFAULT_COMMIT_MESSAGE,
            student_pattern,
            token=getattr(args, "hub_token", None),
            private=getattr(args, "hub_private_repo", None),
            revision=getattr(args, "hub_revision", None),
            api=api,
            local_dir=args.output_dir,
        )
    except HubPushError as exc:
        print(f"\n[hub] {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print("[hub] pushed: " + ", ".join(plan.repo_ids))
    return plan
