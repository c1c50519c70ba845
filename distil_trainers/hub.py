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
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from .cards import CardContext, card_context_from_trainer, write_model_card

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "DEFAULT_STUDENT_PATTERN",
    "EXCLUDED_PATTERNS",
    "HubPushError",
    "RepoUpload",
    "UploadPlan",
    "default_repo_id",
    "execute_plan",
    "plan_upload",
    "push_saved_models",
    "push_trainer",
    "student_folder",
    "student_repo_id",
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


class HubPushError(RuntimeError):
    """The upload to the Hub failed; the local save it was made from is complete (see the message)."""


@dataclass
class RepoUpload:
    """One repository of a push: the local folder, the files (relative POSIX paths) and the commit message."""

    repo_id: str
    folder: str
    files: list[str]
    commit_message: str
    student: str | None = None


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
            lines.append(f"  {u.repo_id} <- {u.folder} ({len(u.files)} files; commit {u.commit_message!r})")
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


def execute_plan(
    plan: UploadPlan,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    api: HfApi | None = None,
) -> list[Any]:
    """Create every repository of the plan and upload its files in one commit each. Returns the commit infos.

    Raises:
        HubPushError: on any failure, naming the repositories already pushed and saying that the local save in
            ``plan.local_dir`` is complete (nothing is lost; push again later)."""
    api = api or HfApi()
    done, infos = [], []
    current = None
    try:
        for upload in plan.uploads:
            current = upload.repo_id
            url = api.create_repo(upload.repo_id, token=token, private=private, exist_ok=True)
            repo_id = getattr(url, "repo_id", None) or upload.repo_id
            operations = [
                CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(upload.folder) / f)) for f in upload.files
            ]
            infos.append(
                api.create_commit(
                    repo_id, operations, commit_message=upload.commit_message, token=token, revision=revision
                )
            )
            done.append(repo_id)
    except Exception as exc:
        pushed = f" Already pushed: {', '.join(done)}." if done else ""
        raise HubPushError(
            f"Pushing to the Hugging Face Hub failed at {current} ({type(exc).__name__}: {_one_line(exc)}).{pushed} "
            f"The local save is complete: {plan.local_dir} holds the trained model(s) and their model cards; "
            "nothing was lost. Push them again once the Hub is reachable (network, HF_HUB_OFFLINE unset, a token "
            "with write access), e.g. with `distil-trainers push` or trainer.push_to_hub()."
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


def push_trainer(
    trainer: Any,
    commit_message: str | None = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    student_pattern: str = DEFAULT_STUDENT_PATTERN,
    api: HfApi | None = None,
    dry_run: bool = False,
    **card_kwargs: Any,
) -> UploadPlan | None:
    """What the trainers' ``push_to_hub`` does: save the student(s) to ``args.output_dir`` (every process takes
    part), then on the main process render the card(s) (``card_kwargs`` go to
    :func:`~distil_trainers.cards.card_context_from_trainer`, e.g. ``datasets=["davidson"]``), plan and upload to
    ``args.hub_model_id`` (one repository per student for mutual learning, named by ``student_pattern``)."""
    trainer.save_model(_internal_call=True)
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    output_dir = Path(args.output_dir)
    repo_id = default_repo_id(args)
    if hasattr(trainer, "student_names"):
        folders: dict[str | None, Path] = {s: student_folder(output_dir, s) for s in trainer.student_names}
        contexts = {}
        for s in trainer.student_names:
            name = student_repo_id(student_pattern, repo_id, s).split("/")[-1]
            contexts[s] = card_context_from_trainer(trainer, student=s, model_name=name, **card_kwargs)
    else:
        folders = {None: output_dir}
        contexts = {None: card_context_from_trainer(trainer, model_name=repo_id.split("/")[-1], **card_kwargs)}
    plan = push_saved_models(
        folders,
        contexts,
        repo_id,
        commit_message or DEFAULT_COMMIT_MESSAGE,
        student_pattern,
        local_dir=output_dir,
        dry_run=True,
    )
    if getattr(args, "save_projections", False):
        for upload in plan.uploads:
            if (Path(upload.folder) / "projections.safetensors").is_file():
                upload.files.append("projections.safetensors")
    if not dry_run:
        execute_plan(
            plan,
            token=token if token is not None else args.hub_token,
            private=private if private is not None else args.hub_private_repo,
            revision=revision if revision is not None else args.hub_revision,
            api=api,
        )
    return plan


# --------------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------------


def split_push_argument(args: Any) -> tuple[Any, bool]:
    """``(args with push_to_hub=False, whether to push)``. The recipes train every stage with ``push_to_hub`` off
    (so that no Trainer creates repositories or pushes checkpoints while training) and push the finished students
    once, after their report is written (:func:`push_recipe_models`)."""
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
