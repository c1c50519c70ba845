"""The Hub side of the distillation trainers: Trainer uploads, this module adds only what Trainer lacks.

:class:`HubMixin` (a base of every trainer of the library, before the Trainer class):

* **One model** (``AnnealingTrainer``, ``RationaleSFTTrainer``…): :class:`~transformers.Trainer`'s own
  ``push_to_hub``, ``init_hf_repo`` and ``hub_strategy`` pushes (``"end"``, ``"every_save"``, ``"checkpoint"``,
  ``"all_checkpoints"``) do the uploading. The mixin only writes this library's model card (``create_model_card``,
  as TRL's trainers do: from the trainer class's ``_name``, ``_tag_names`` and ``_paper`` citation, the method, the
  hyper-parameters, the metrics and ``datasets``; see :mod:`distil_trainers.cards`), also before every checkpoint push.
* **Several students** (``hub_students()`` gives more than one: DDML's ``MutualLearningTrainer``): one repository per
  student, named by :attr:`HubMixin.hub_student_pattern` (default ``"{repo_id}-{student}"``, e.g.
  ``me/ddml-davidson-minilm3``), each with its card naming its peers' repositories; at the end
  (``push_to_hub()``) and at every checkpoint push. ``"checkpoint"`` / ``"all_checkpoints"`` also push the whole
  checkpoint (every student and the shared optimizer state) to the run's repository ``hub_model_id``, as Trainer does.
* **No token in any file.** Trainer pickles the whole ``TrainingArguments``, ``hub_token`` included, to
  ``training_args.bin`` (in ``output_dir`` and in every checkpoint, and those are uploaded): the mixin has it pickle
  :func:`args_without_secrets` instead. The run's own arguments keep the token, so pushing and resuming work.
* **One clear error.** A failed ``push_to_hub()`` raises one :class:`HubPushError` that says the local save is
  complete and where (when the repository could not even be created, the model is saved and its card written first).
  Failing to create the repository when the trainer is built with ``push_to_hub=True`` raises it too, before
  training. Checkpoint pushes run in the background as with Trainer; a failed one does not stop training.

:func:`push_saved_models` pushes folders saved earlier (the ``distil-trainers push`` command), one repository each;
:func:`split_push_argument` / :func:`push_recipe_models` serve the recipes that push their finished students once.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STUDENT_PATTERN",
    "IGNORE_PATTERNS",
    "SECRET_ARGUMENTS",
    "SECRET_KWARGS",
    "HubMixin",
    "HubPushError",
    "args_without_secrets",
    "default_repo_id",
    "push_recipe_models",
    "push_saved_models",
    "save_training_args",
    "split_push_argument",
    "student_folder",
    "student_repo_id",
]

DEFAULT_STUDENT_PATTERN = "{repo_id}-{student}"
# Never uploaded from a saved model's folder (Trainer's own patterns, plus logs and the recipes' bookkeeping).
IGNORE_PATTERNS = ["_*", "checkpoint-*", ".*", "runs/*", "stage.json", "training_complete.json", "*.lock"]
# Arguments (of TrainingArguments and its subclasses: this library's, TRL's configs) that hold a credential. A name
# ending in "_token" is no sign of one: TRL's SFTConfig has pad_token and eos_token, tokenizer tokens.
SECRET_ARGUMENTS = ("hub_token", "push_to_hub_token", "hf_token", "use_auth_token", "auth_token", "token")
# Keys of the dictionary arguments (model_init_kwargs, teacher_model_init_kwargs…) that hold a credential.
SECRET_KWARGS = ("token", "use_auth_token", "hub_token")


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message says what is saved locally and where. Attributes: ``repo_id`` (where it
    failed), ``reason`` (the error, on one line), ``pushed`` (the repositories pushed before it)."""

    def __init__(self, message: str, repo_id: str | None = None, reason: str | None = None, pushed=()):
        super().__init__(message)
        self.repo_id = repo_id
        self.reason = reason
        self.pushed = list(pushed)


def _reason(exc: BaseException, limit: int = 300) -> str:
    if isinstance(exc, HubPushError) and exc.reason:
        return exc.reason
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text if len(text) <= limit else text[: limit - 3] + '...'}"


def push_failed(exc: BaseException, repo_id: str | None, local_dir: str | os.PathLike, pushed=()) -> HubPushError:
    """The one error of a failed push, once everything is saved in ``local_dir``."""
    done = f" Already pushed: {', '.join(pushed)}." if pushed else ""
    return HubPushError(
        f"Pushing to the Hugging Face Hub failed at {repo_id} ({_reason(exc)}).{done} The local save is complete: "
        f"{local_dir} holds the trained model(s) and their model cards; nothing was lost. Push them again once the "
        "Hub is reachable (network, HF_HUB_OFFLINE unset, a token with write access), e.g. with trainer.push_to_hub() "
        "or `distil-trainers push`.",
        repo_id=repo_id,
        reason=_reason(exc),
        pushed=pushed,
    )


# --------------------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------------------


def default_repo_id(args: Any) -> str:
    """``args.hub_model_id``, else the output folder's name (as Trainer names the repository)."""
    return getattr(args, "hub_model_id", None) or Path(args.output_dir).absolute().name


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


# --------------------------------------------------------------------------------------------------------------------
# No token in any file
# --------------------------------------------------------------------------------------------------------------------


def args_without_secrets(args: Any) -> Any:
    """A shallow copy of ``args`` with every credential removed: the :data:`SECRET_ARGUMENTS` that are strings set to
    ``None``, the string :data:`SECRET_KWARGS` left out of dictionary arguments (copied, never changed in place).
    ``copy.copy`` rather than ``dataclasses.replace``, which would run ``__post_init__`` (and its checks) again."""
    clean = copy.copy(args)
    for name in SECRET_ARGUMENTS:
        if isinstance(getattr(clean, name, None), str):
            setattr(clean, name, None)
    for name, value in list(vars(clean).items()):
        if isinstance(value, dict) and any(isinstance(value.get(key), str) for key in SECRET_KWARGS):
            setattr(clean, name, {k: v for k, v in value.items() if not (k in SECRET_KWARGS and isinstance(v, str))})
    return clean


def save_training_args(args: Any, output_dir: str | os.PathLike) -> Path:
    """Write ``<output_dir>/training_args.bin`` as Trainer does (``torch.save``), without the credentials."""
    import torch

    path = Path(output_dir) / "training_args.bin"
    torch.save(args_without_secrets(args), path)
    return path


def _pickled_without_secrets(args: Any) -> Any:
    """A copy of ``args`` that reads like it (the token included: Trainer pushes with ``args.hub_token``) but pickles
    as :func:`args_without_secrets`, so whatever Trainer writes with ``torch.save(self.args, …)`` holds no token."""
    import copyreg

    clean, view, cls = args_without_secrets(args), copy.copy(args), type(args)
    pickled = (copyreg._reconstructor, (cls, object, None), vars(clean))  # as pickle rebuilds any plain object
    view.__class__ = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__reduce_ex__": lambda *_: pickled})
    return view


# --------------------------------------------------------------------------------------------------------------------
# Uploads of saved folders (the students of a mutual-learning run, `distil-trainers push`)
# --------------------------------------------------------------------------------------------------------------------


def _hf_api():
    from transformers.utils.hub import hf_api  # the instance Trainer pushes with

    return hf_api()


def folder_files(folder: str | os.PathLike, ignore_patterns=IGNORE_PATTERNS) -> list[str]:
    """The files of ``folder`` an upload sends (relative POSIX paths)."""
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=ignore_patterns))


def push_saved_models(
    folders: Mapping[str | None, str | os.PathLike],
    contexts: Mapping[str | None, Any],
    repo_id: str,
    commit_message: str = "End of training",
    student_pattern: str = DEFAULT_STUDENT_PATTERN,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
) -> dict[str | None, str]:
    """Write each saved model's card (``README.md`` from ``contexts[key]``, a
    :class:`~distil_trainers.cards.CardContext`, titled with its repository's name; the students of a
    mutual-learning run name their peers' repositories), then create each repository and upload each folder in one
    commit (``HfApi.create_repo`` / ``upload_folder``). ``folders``: ``{None: folder}`` for one model (pushed to
    ``repo_id``), ``{student: folder}`` for the students of a mutual-learning run (each to
    ``student_repo_id(student_pattern, repo_id, student)``). Returns ``{key: repository}``.

    Raises:
        HubPushError: if an upload fails (the models and their cards are on disk by then), naming what was pushed.
    """
    from .cards import write_model_card

    if not folders:
        raise ValueError("Nothing to push: no saved model folders were given.")
    if None in folders and len(folders) > 1:
        raise ValueError("Give either one unnamed folder or named students, not both.")
    repos = {key: repo_id if key is None else student_repo_id(student_pattern, repo_id, key) for key in folders}
    if len(set(repos.values())) != len(repos):
        raise ValueError(f"The pattern {student_pattern!r} gives the same repository to several students: {repos}")
    for key, folder in folders.items():
        if not any(f.endswith((".safetensors", ".bin", ".gguf")) for f in folder_files(folder)):
            raise FileNotFoundError(f"No model weights in {folder}: save the model there before pushing it.")
        context = contexts[key]
        context.model_name = repos[key].split("/")[-1]  # the card names its repository
        for peer in context.peers:
            peer.repo_id = peer.repo_id or repos.get(peer.name)
        write_model_card(context, folder)
    local_dir = local_dir or Path(next(iter(folders.values()))).parent
    for key, folder in folders.items():
        logger.info("%s <- %s (%d files)", repos[key], folder, len(folder_files(folder)))
    if dry_run:
        return repos
    pushed: list[str] = []
    api = _hf_api()
    for key, folder in folders.items():
        try:
            api.create_repo(repos[key], token=token, private=private, exist_ok=True)
            api.upload_folder(repo_id=repos[key], folder_path=str(folder), commit_message=commit_message,
                              token=token, revision=revision, ignore_patterns=IGNORE_PATTERNS)  # fmt: skip
        except Exception as exc:
            raise push_failed(exc, repos[key], local_dir, pushed) from exc
        pushed.append(repos[key])
        logger.info("Pushed %s", repos[key])
    return repos


def split_push_argument(args: Any) -> tuple[Any, bool]:
    """``(args with push_to_hub=False, whether to push)``: for recipes that train several stages and push only the
    finished students, once, with :func:`push_recipe_models`."""
    if not getattr(args, "push_to_hub", False):
        return args, False
    import dataclasses

    return dataclasses.replace(args, push_to_hub=False), True


def push_recipe_models(
    args: Any,
    folders: Mapping[str | None, str | os.PathLike],
    contexts: Mapping[str | None, Any],
    student_pattern: str = DEFAULT_STUDENT_PATTERN,
    commit_message: str | None = None,
) -> dict[str | None, str] | None:
    """The end of a recipe run with ``--push_to_hub``: :func:`push_saved_models` on the main process; if the upload
    fails, print the one :class:`HubPushError` message and exit with status 1 (the results are on disk by then)."""
    if getattr(args, "process_index", 0) != 0:
        return None
    import sys

    try:
        repos = push_saved_models(
            folders, contexts, default_repo_id(args), commit_message or "End of training", student_pattern,
            token=getattr(args, "hub_token", None), private=getattr(args, "hub_private_repo", None),
            revision=getattr(args, "hub_revision", None), local_dir=args.output_dir,
        )  # fmt: skip
    except HubPushError as exc:
        print(f"\n[hub] {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print("[hub] pushed: " + ", ".join(repos.values()))
    return repos


# --------------------------------------------------------------------------------------------------------------------
# The trainers' mixin
# --------------------------------------------------------------------------------------------------------------------


class HubMixin:
    """The Hub side of this library's trainers, for any [`~transformers.Trainer`] subclass (put it before the Trainer
    class in the bases); see :mod:`distil_trainers.hub`. A trainer class says what its card cites, as TRL's do:
    ``_name`` (e.g. ``"DDML"``), ``_tag_names`` (Hub tags) and ``_paper`` (``{"title", "id", "citation"}``)."""

    # Card fields used by every card this trainer writes (checkpoint pushes included), e.g. {"datasets": ["davidson"]};
    # the keyword arguments of push_to_hub / create_model_card win.
    hub_card_kwargs: dict[str, Any] | None = None
    # The repository of each student of a mutual-learning run ({repo_id}: args.hub_model_id or the output folder);
    # `args.hub_student_pattern` wins. With push_to_hub=True the repositories are created when the trainer is built.
    hub_student_pattern: str = DEFAULT_STUDENT_PATTERN

    # ---- what is pushed where ----------------------------------------------------------------------------------

    def _hub_student_names(self) -> list[str] | None:
        """The students pushed to repositories of their own (more than one: ``hub_students()``), else ``None``."""
        names = None
        if hasattr(self, "hub_students"):
            with contextlib.suppress(AttributeError):  # init_hf_repo runs inside Trainer.__init__
                names = list(self.hub_students())
        if names is None:
            names = list(getattr(self, "student_names", None) or [])
        return names if len(names) > 1 else None

    def hub_student_repos(self) -> dict[str, str]:
        """``{student: repository}`` of a mutual-learning run (empty for a single-model trainer)."""
        repo_id = default_repo_id(self.args)
        pattern = getattr(self.args, "hub_student_pattern", None) or self.hub_student_pattern
        return {s: student_repo_id(pattern, repo_id, s) for s in self._hub_student_names() or ()}

    def _hub_strategy(self) -> str:
        return str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))

    def _run_repo_needed(self) -> bool:
        """Whether the run's own repository gets the checkpoints (several students)."""
        return self._hub_strategy() in ("checkpoint", "all_checkpoints")

    def _student_dir(self, student: str) -> Path:
        """Where ``student`` is saved in ``args.output_dir`` (or will be)."""
        try:
            return student_folder(self.args.output_dir, student)
        except FileNotFoundError:
            return Path(self.args.output_dir) / student

    # ---- Trainer's hooks -----------------------------------------------------------------------------------------

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Trainer's: create the repository (with several students: each student's, and the run's for
        ``hub_strategy="checkpoint"`` / ``"all_checkpoints"``). Raises one :class:`HubPushError` if that fails."""
        students = self.hub_student_repos()
        if not students:
            try:
                return super().init_hf_repo(token=token, private=private)
            except Exception as exc:
                raise self._repo_creation_failed(exc, default_repo_id(self.args)) from exc
        self.hub_model_id, self.push_in_progress = default_repo_id(self.args), None
        if not self.is_world_process_zero():
            return None
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        for repo in [*students.values(), *([self.hub_model_id] if self._run_repo_needed() else [])]:
            try:
                _hf_api().create_repo(repo, token=token, private=private, exist_ok=True)
            except Exception as exc:
                raise self._repo_creation_failed(exc, repo) from exc
        return None

    def _repo_creation_failed(self, exc: BaseException, repo_id: str) -> HubPushError:
        return HubPushError(
            f"Creating the Hugging Face Hub repository {repo_id} failed ({_reason(exc)}). With push_to_hub=True the "
            "repository is created before training, so nothing was trained or saved. Make the Hub reachable "
            "(network, HF_HUB_OFFLINE unset, a token with write access), or train with push_to_hub=False and push the "
            "saved model afterwards with trainer.push_to_hub() or `distil-trainers push`.",
            repo_id=repo_id,
            reason=_reason(exc),
        )

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save, with ``training_args.bin`` pickled without the Hub token and other credentials."""
        with self._args_pickled_without_secrets():
            super()._save(output_dir, state_dict=state_dict)
        if output_dir is None or Path(output_dir) == Path(self.args.output_dir):
            self._hub_saved = True

    @contextlib.contextmanager
    def _args_pickled_without_secrets(self):
        args = self.args
        self.args = _pickled_without_secrets(args)
        try:
            yield
        finally:
            self.args = args

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        language: str | list[str] | None = None,
        license: str | None = None,
        finetuned_from: str | None = None,
        dataset: str | list[str] | None = None,
        **card_kwargs: Any,
    ) -> None:
        """Write this library's card (:mod:`distil_trainers.cards`) to ``args.output_dir/README.md``, or beside each
        student of a mutual-learning run. Takes Trainer's and TRL's arguments; ``card_kwargs`` are fields of
        :class:`~distil_trainers.cards.CardContext` (``datasets=["davidson"]``, ``metrics=…``), over
        :attr:`hub_card_kwargs`. Trainer's ``tasks``, ``dataset_tags`` and ``dataset_args`` are ignored."""
        if not self.is_world_process_zero():
            return
        from .cards import card_context_from_trainer, write_model_card

        for name in ("tasks", "dataset_tags", "dataset_args"):
            card_kwargs.pop(name, None)
        kwargs = {**(self.hub_card_kwargs or {}), **card_kwargs}
        names = dataset_name or dataset
        if names:
            kwargs.setdefault("datasets", [names] if isinstance(names, str) else list(names))
        if tags:
            kwargs["tags"] = [*kwargs.get("tags", []), *([tags] if isinstance(tags, str) else tags)]
        if language:
            kwargs["language"] = [language] if isinstance(language, str) else list(language)
        if license:
            kwargs["license"] = license
        if finetuned_from:
            kwargs["base_model"] = finetuned_from
        repos = self.hub_student_repos()
        if not repos:
            name = model_name or default_repo_id(self.args).split("/")[-1]
            write_model_card(card_context_from_trainer(self, model_name=name, **kwargs), self.args.output_dir)
            return
        for student, repo in repos.items():
            context = card_context_from_trainer(self, student=student, peer_repo_ids=repos,
                                                model_name=repo.split("/")[-1], **kwargs)  # fmt: skip
            write_model_card(context, self._student_dir(student))

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ):
        """Save the model(s) to ``args.output_dir``, write the card(s) and upload: one model with Trainer's
        ``push_to_hub`` (``kwargs`` go to :meth:`create_model_card`, e.g. ``datasets=["davidson"]``); several
        students each to its repository (:meth:`hub_student_repos`). If anything fails, the model(s) and card(s) are
        on disk, and one :class:`HubPushError` says so and where. Returns what Trainer returns (a ``CommitInfo``, or a
        ``Future`` with ``blocking=False``); ``{student: repository}`` for several students (always blocking)."""
        commit_message = commit_message or "End of training"
        if self.hub_student_repos():
            return self._push_students(commit_message, token, revision, private, **kwargs)
        self._hub_saved = False
        try:
            return super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)
        except Exception as exc:
            repo = getattr(self, "hub_model_id", None) or default_repo_id(self.args)
            if not self._hub_saved:  # creating the repository failed before Trainer saved: save before saying so
                self.save_model(_internal_call=True)
                self.create_model_card(model_name=repo.split("/")[-1], **kwargs)
            raise push_failed(exc, repo, self.args.output_dir) from exc

    def _push_students(self, commit_message, token, revision, private, **kwargs) -> dict[str, str] | None:
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        self.create_model_card(**kwargs)
        repos, pushed = self.hub_student_repos(), []
        api = _hf_api()
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        for student, repo in repos.items():
            try:
                api.create_repo(repo, token=token, private=private, exist_ok=True)
                api.upload_folder(repo_id=repo, folder_path=str(student_folder(self.args.output_dir, student)),
                                  commit_message=commit_message, token=token, ignore_patterns=IGNORE_PATTERNS,
                                  revision=revision if revision is not None else self.args.hub_revision)  # fmt: skip
            except Exception as exc:
                raise push_failed(exc, repo, self.args.output_dir, pushed) from exc
            pushed.append(repo)
        return repos

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer's checkpoint push (``hub_strategy``), with this library's card and no token in
        ``training_args.bin``; with several students, each student of the checkpoint to its repository."""
        if not self.is_world_process_zero() or self._hub_strategy() == "end":
            return
        repos = self.hub_student_repos()
        if not repos:
            self.create_model_card(model_name=default_repo_id(self.args).split("/")[-1])
            with self._args_pickled_without_secrets():
                return super()._push_from_checkpoint(checkpoint_folder)
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        from transformers.utils.hub import PushInProgress

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        args, api = self.args, _hf_api()
        if str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps":
            message = f"Training in progress, step {self.state.global_step}"
        else:
            message = f"Training in progress, epoch {int(self.state.epoch)}"
        for student in repos:  # copied where the final save puts them, as Trainer copies its model files
            shutil.copytree(Path(checkpoint_folder) / student, self._student_dir(student), dirs_exist_ok=True)
        self.create_model_card()
        upload = dict(commit_message=message, token=args.hub_token, run_as_future=True, revision=args.hub_revision)
        jobs = [api.upload_folder(repo_id=repo, folder_path=str(self._student_dir(s)), ignore_patterns=IGNORE_PATTERNS,
                                  **upload) for s, repo in repos.items()]  # fmt: skip
        if self._run_repo_needed():
            where = "last-checkpoint" if args.hub_strategy == "checkpoint" else Path(checkpoint_folder).name
            upload["commit_message"] = message + ", checkpoint"
            jobs.append(api.upload_folder(repo_id=self.hub_model_id, folder_path=checkpoint_folder,
                                          path_in_repo=where, **upload))  # fmt: skip
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)


