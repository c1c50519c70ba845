"""A fake Hub for the tests: ``HfApi.create_repo`` and ``HfApi.upload_folder`` (what Trainer and
distil_trainers.hub push with) keep every upload in a local folder instead of the network."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from huggingface_hub import HfApi


class FakeHub:
    """Stands in for the Hub behind ``HfApi.create_repo`` and ``HfApi.upload_folder``: each upload's files are read
    when it is called and copied to ``<root>/<repo_id>/<path_in_repo>``; ``uploads`` records (repo, path_in_repo,
    files, commit message, token, {file: bytes}). ``fail_on``: repositories whose upload raises."""

    def __init__(self, root, fail_on=()):
        self.root, self.fail_on = Path(root), set(fail_on)
        self.repos, self.tokens, self.uploads = [], [], []

    def install(self, monkeypatch):
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: self.create_repo(repo_id, **kw))
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: self.upload_folder(**kw))
        return self

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.repos.append((repo_id, private))
        self.tokens.append(token)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, token=None,
                      run_as_future=False, ignore_patterns=None, allow_patterns=None, **kwargs):  # fmt: skip
        from huggingface_hub.utils import filter_repo_objects

        try:
            if repo_id in self.fail_on:
                raise ConnectionError("connection refused")
            folder = Path(folder_path)
            paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            files = list(filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
            contents = {f: (folder / f).read_bytes() for f in files}
            for f, data in contents.items():
                target = self.root / repo_id / (path_in_repo or "") / f
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self.tokens.append(token)
            self.uploads.append((repo_id, path_in_repo or "", files, commit_message, token, contents))
            result = f"commit:{repo_id}"
        except Exception as exc:
            if not run_as_future:
                raise
            future = Future()
            future.set_exception(exc)
            return future
        if run_as_future:
            future = Future()
            future.set_result(result)
            return future
        return result

    def summary(self):
        return [(repo, where, files, message) for repo, where, files, message, _, _ in self.uploads]
