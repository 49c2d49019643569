"""Talking to the Hugging Face Hub: download with pinned revisions and fast, clear failures; upload.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, when it is
imported. attnzoo reads them when a call is made and passes them explicitly, so a value set after
``import huggingface_hub`` (a notebook, a test) is honoured too.

Only safetensors and JSON are ever downloaded; nothing downloaded is unpickled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from attnzoo.errors import AttnzooError

# Without network and without a cached copy, hf_hub_download retries for about 23 s before failing. A single
# HEAD with this timeout and no retries tells "no network" apart first.
PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "on", "yes", "true"}


def endpoint() -> str:
    import huggingface_hub.constants as constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> str:
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                             "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def offline() -> bool:
    import huggingface_hub.constants as constants

    flag = os.environ.get("HF_HUB_OFFLINE")
    return flag.strip().lower() in _TRUE if flag is not None else bool(constants.HF_HUB_OFFLINE)


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests.exceptions", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(errors)


_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")  # control characters, spaces, backslashes


def _path_like_problem(value: str) -> str | None:
    """Why ``value`` (a file name in a repo, or a revision) could step out of the folder it is joined to."""
    if not value:
        return "it is empty"
    if _UNSAFE.search(value):
        return "it holds a space, a control character or a backslash"
    if value.startswith("/"):
        return "it starts with '/'"
    if any(part in ("", ".", "..") for part in value.split("/")):
        return "it has an empty, '.' or '..' path segment"
    return None


def check_names(repo_id: str, filename: str | None = None, revision: str | None = None) -> None:
    """Refuse, before any request, a repo id, file name or revision that huggingface_hub would refuse with a
    traceback, or that names a path outside the Hub cache (``../etc``, ``src/..``, ``a/../../b``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        if not isinstance(repo_id, str) or repo_id.count("/") != 1:
            raise HFValidationError("it is not ORG/NAME")
        validate_repo_id(repo_id)
    except HFValidationError:
        raise AttnzooError(f"Hub repo id {repo_id!r} is refused. Accepted: "
                           "ORG/NAME, each part of letters, digits, '-', '_' and '.', not starting or ending with '-' "
                           "or '.', without '--' or '..', at most 96 characters.") from None
    if filename is not None and (why := _path_like_problem(filename)):
        raise AttnzooError(f"file name {filename!r} in Hub repo {repo_id!r} is refused: {why}. Accepted: a path "
                           "inside the repo, such as config.json or weights/model.safetensors.")
    if revision is not None and (why := _path_like_problem(revision)):
        raise AttnzooError(f"revision {revision!r} of Hub repo {repo_id!r} is refused: {why}. Accepted: a branch, "
                           "a tag or a commit sha, such as main, v1.0 or 40 hexadecimal digits.")


def parse_hub_source(source: str, revision: str | None = None) -> tuple[str, str | None]:
    """``hf-hub:org/name[@revision]`` -> (repo_id, revision); a ``revision`` argument must agree."""
    body = source[len("hf-hub:"):].strip()
    repo_id, _, rev = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise AttnzooError(f"hf-hub source {source!r} must read hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION.")
    rev = rev or None
    if rev and revision and rev != revision:
        raise AttnzooError(f"{source!r} pins revision {rev!r} but revision={revision!r} was also given; give one.")
    check_names(repo_id, revision=rev or revision)
    return repo_id, rev or revision


def _where(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


def _translate(err: BaseException, repo_id: str, filename: str, revision: str | None) -> AttnzooError | None:
    from huggingface_hub import errors as hf_errors

    where = _where(repo_id, revision)
    if isinstance(err, getattr(hf_errors, "GatedRepoError", ())):
        return AttnzooError(f"Hub repo {repo_id!r} is gated: accept its terms on the Hub and log in (`hf auth login` "
                            "or HF_TOKEN).")
    if isinstance(err, hf_errors.RepositoryNotFoundError):
        return AttnzooError(f"Hub repo {repo_id!r} does not exist at {endpoint()} (or it is private and you are not "
                            "logged in: `hf auth login` or set HF_TOKEN).")
    if isinstance(err, hf_errors.RevisionNotFoundError):
        return AttnzooError(f"Hub repo {repo_id!r} has no revision {revision!r} (a branch, tag or commit sha).")
    remote_missing = getattr(hf_errors, "RemoteEntryNotFoundError", None) or hf_errors.EntryNotFoundError
    if isinstance(err, remote_missing) and not isinstance(err, hf_errors.LocalEntryNotFoundError):
        return AttnzooError(f"Hub repo {where!r} has no file {filename!r}: it does not hold attnzoo weights "
                            "(model.safetensors + config.json, written by `attnzoo push`).")
    if isinstance(err, getattr(hf_errors, "HfHubHTTPError", ())):
        status = getattr(getattr(err, "response", None), "status_code", "?")
        return AttnzooError(f"the Hub ({endpoint()}) answered HTTP {status} for {filename!r} of {where!r}: "
                            f"{str(err).splitlines()[0]}")
    return None


def _no_network(repo_id: str, filename: str, revision: str | None, why: str) -> AttnzooError:
    return AttnzooError(
        f"cannot download {filename!r} of {_where(repo_id, revision)!r}: {why}, and it is not in the local cache "
        f"({cache_dir()}). Remedy: connect to the network (or point HF_ENDPOINT at a reachable mirror) and run the "
        "same call once to fill the cache (it then works with HF_HUB_OFFLINE=1), or load a local directory "
        "written by `attnzoo export`.")


def _probe(repo_id: str, filename: str, revision: str | None) -> None:
    """One HEAD request, short timeout, no retries: fail in seconds when the Hub cannot be reached."""
    import inspect

    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())
    kwargs = {"timeout": PROBE_TIMEOUT_S}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = False
    try:
        get_hf_file_metadata(url, **kwargs)
    except _network_errors() as err:
        raise _no_network(repo_id, filename, revision, f"{endpoint()} cannot be reached ({type(err).__name__}: "
                          f"{err})") from None
    except Exception as err:  # noqa: BLE001 - Hub answers are translated, anything else is a bug
        translated = _translate(err, repo_id, filename, revision)
        if translated is None:
            raise
        raise translated from None


def download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """A file of a Hub repo, from the cache when it holds that revision, else downloaded into it."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    check_names(repo_id, filename, revision)
    common = {"repo_id": repo_id, "filename": filename, "revision": revision, "cache_dir": cache_dir()}
    if offline():
        try:
            return _in_snapshot(Path(hf_hub_download(**common, local_files_only=True)), repo_id, filename)
        except (hf_errors.LocalEntryNotFoundError, FileNotFoundError):
            raise _no_network(repo_id, filename, revision, "HF_HUB_OFFLINE=1 is set") from None
    cached = try_to_load_from_cache(**common)
    if not isinstance(cached, str):
        # Nothing cached: huggingface_hub would retry a dead network for ~23 s; probe once instead.
        _probe(repo_id, filename, revision)
    try:
        path = Path(hf_hub_download(**common, endpoint=endpoint()))
    except _network_errors() as err:
        raise _no_network(repo_id, filename, revision, f"{endpoint()} cannot be reached ({err})") from None
    except Exception as err:  # noqa: BLE001
        translated = _translate(err, repo_id, filename, revision)
        if translated is None:
            if isinstance(err, hf_errors.LocalEntryNotFoundError):
                raise _no_network(repo_id, filename, revision, f"{endpoint()} cannot be reached") from None
            if isinstance(err, ValueError):  # names were checked: what it refused is what the server answered
                raise AttnzooError(f"huggingface_hub refused what {endpoint()} answered for {filename!r} of "
                                   f"{_where(repo_id, revision)!r}: {str(err).splitlines()[0]}") from None
            raise
        raise translated from None
    return _in_snapshot(path, repo_id, filename)


def _in_snapshot(path: Path, repo_id: str, filename: str) -> Path:
    """``path`` when it sits in the cache as ``snapshots/<40-hex commit sha>/<filename>``; a mirror that answered
    another commit id (a path such as ``a/b``) has its file evicted and refused."""
    depth = len(Path(filename).parts)
    parts = path.parts
    start = len(parts) - 1 - parts[::-1].index("snapshots") if "snapshots" in parts else len(parts)
    commit = "/".join(parts[start + 1:len(parts) - depth])
    if not _COMMIT_SHA.fullmatch(commit) or parts[len(parts) - depth:] != Path(filename).parts:
        evict(path)
        raise AttnzooError(f"the Hub at {endpoint()} answered commit id {commit!r} for {filename!r} of {repo_id!r}, "
                           "which is not a commit sha (40 hexadecimal digits): refused, and the file removed from "
                           "the cache.")
    return path


def commit_of(cached_path: Path) -> str | None:
    """The commit sha of a file in the Hub cache layout (``.../snapshots/<sha>/<file>``)."""
    parts = cached_path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def evict(cached_path: Path) -> None:
    """Remove a cached file (its snapshot pointer and the blob behind it): a refused file is not reused."""
    blob = Path(os.path.realpath(cached_path))
    for path in {cached_path, blob}:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def upload_files(files: dict[str, Path | bytes], repo_id: str, revision: str | None = None, private: bool = False,
                 message: str = "Upload attnzoo weights") -> tuple[str, str]:
    """Create the repo (and branch) when needed and commit ``files`` (path in the repo -> local file or bytes)
    in one commit; returns (commit sha, commit url)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub import errors as hf_errors

    check_names(repo_id, revision=revision)
    for name in files:
        check_names(repo_id, filename=name)
    api = HfApi(endpoint=endpoint())
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes)
                                     else str(content)) for name, content in files.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id=repo_id, operations=operations, revision=revision, commit_message=message)
    except _network_errors() as err:
        raise AttnzooError(f"cannot reach the Hub at {endpoint()} to push {repo_id!r}: {err}.") from None
    except hf_errors.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise AttnzooError(f"the Hub refused to write {repo_id!r} (HTTP {status}): log in with a write token "
                               "(`hf auth login` or HF_TOKEN) that may write to that namespace.") from None
        translated = _translate(err, repo_id, "(upload)", revision)
        raise (translated or err) from None
    return info.oid, info.commit_url
