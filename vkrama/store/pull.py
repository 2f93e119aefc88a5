"""Pull, resolve, ensure, list and remove models: the store's entry points.

Stage: store (model ref ─► LocalModel). Parses the reference, asks the source what to fetch,
downloads into partial/ (resumable), verifies sha256 and GGUF, then publishes atomically under
a per-model lock. Offline (settings.offline) it never creates an HTTP session, so no socket
is opened. Must not print: progress goes to `on_progress`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from vkrama.config import Settings
from vkrama.errors import ExitStatus, VkramaError, disk_errors
from vkrama.progress import NULL, Download, Reporter
from vkrama.store import download, gguf_info, ranges
from vkrama.store.blobs import SHA256_HEX, Store, StoredFile, file_sha256, key_for
from vkrama.store.file_index import FileIndex, Signature
from vkrama.store.http import Http
from vkrama.store.local_model import LocalModel
from vkrama.store.refs import ModelRef, parse, split_parts
from vkrama.store.sources import hf, oci, ollama, url
from vkrama.store.transfer import RemoteFile


def pull(
    settings: Settings, ref: str, on_progress: Reporter = NULL, sha256: str | None = None
) -> LocalModel:
    """Fetch `ref` into the store (or return it if already there) and return it."""
    model_ref = parse(ref, settings["models.shortnames"])
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not SHA256_HEX.fullmatch(sha256):
            raise VkramaError(f"--sha256 {sha256[:80]!r} is not 64 hex characters",
                              status=ExitStatus.USAGE)  # fmt: skip
    # A full disk or a read-only home is the user's to fix, not a bug: one line, and
    # whatever was half-written is removed on the way out.
    with disk_errors(f"pulling {model_ref.name}", Store(settings.home).root):
        return _pull(settings, model_ref, on_progress, sha256)


def _pull(
    settings: Settings, model_ref: ModelRef, on_progress: Reporter, sha256: str | None
) -> LocalModel:
    store = Store(settings.home)
    if model_ref.scheme == "file":
        return _import_file(store, model_ref, sha256)
    with store.lock(model_ref.name):
        existing = store.get(model_ref.name)
        if existing is not None and sha256 in (None, existing.sha256):
            return existing
        session = None if settings.offline else Http.for_settings(settings, on_progress)
        remotes, origin = _remote_files(settings, model_ref, session, sha256)
        with contextlib.ExitStack() as held:
            # Another name for the same file downloads into the same partial file: one at a
            # time (sorted, so two pulls never wait on each other's locks).
            for key in sorted({_partial_key(r) for r in remotes if r.local is None}):
                held.enter_context(store.lock(f"partial {key}"))
            try:
                staged = [_stage(store, session, r, on_progress) for r in remotes]
                paths = [path for path, _ in staged]
                labels = {path: r.filename for path, r in zip(paths, remotes, strict=True)}
                metadata = gguf_info.read(paths[0], tuple(paths[1:]), labels)
            except (VkramaError, OSError) as error:
                # Only an interrupted transfer is worth resuming; a bad, missing or refused
                # part makes the parts already fetched worthless too, and a full disk must
                # get its space back.
                if not isinstance(error, VkramaError) or error.status != ExitStatus.NETWORK:
                    for remote in remotes:
                        if remote.local is None:
                            ranges.discard(_partial(store, remote))
                raise
            try:
                with store.adding_blobs():
                    files = []
                    for (path, digest), remote in zip(staged, remotes, strict=True):
                        size = path.stat().st_size
                        blob = store.add_blob(path, digest, move=path == _partial(store, remote))
                        if remote.hf_slot is not None:
                            # Best effort: a read-only shared cache must not fail the pull,
                            # whose file is safe in the store already.
                            with contextlib.suppress(OSError):
                                remote.hf_slot.fill(blob)
                        files.append(StoredFile(remote.filename, digest, size))
                    return store.publish(model_ref.name, model_ref.scheme, origin, files, metadata)
            except BaseException:
                # A blob no ref names is only lost space (a full disk is the usual cause
                # here): give it back now rather than at the next `vkrama rm`.
                store.collect_garbage()
                raise


def resolve(settings: Settings, ref: str) -> LocalModel:
    """The stored model for `ref` (or the file itself for a path); never touches the network."""
    model_ref = parse(ref, settings["models.shortnames"])
    if model_ref.scheme == "file":
        return _local_file(Store(settings.home), model_ref)
    found = Store(settings.home).get(model_ref.name)
    if found is None:
        raise VkramaError(
            f"{model_ref.name} is not in the store",
            hint=f"`vkrama pull {ref}` fetches it; `vkrama list` shows what is there",
            status=ExitStatus.NOT_FOUND,
        )
    return found


def ensure(settings: Settings, ref: str, on_progress: Reporter = NULL) -> LocalModel:
    """`resolve`, else `pull` unless offline."""
    try:
        return resolve(settings, ref)
    except VkramaError as error:
        if (
            error.status != ExitStatus.NOT_FOUND
            or parse(ref, settings["models.shortnames"]).scheme == "file"
        ):
            raise
    if settings.offline:
        raise VkramaError(
            f"{ref} is not in the store and vkrama is offline",
            hint="pull it once without --offline",
            status=ExitStatus.OFFLINE,
        )
    return pull(settings, ref, on_progress)


def models(settings: Settings) -> list[LocalModel]:
    return Store(settings.home).models()


def corrupt_records(settings: Settings) -> list[Path]:
    """Records of the store that cannot be read (`models` leaves them out)."""
    return Store(settings.home).corrupt_refs()


def remove(settings: Settings, ref: str) -> LocalModel:
    """Forget a stored model; its files go when no other name uses them."""
    model = resolve(settings, ref)
    if model.source == "file" and Store(settings.home).get(model.name) is None:
        raise VkramaError(f"{ref} is a file outside the store; vkrama does not delete it",
                          status=ExitStatus.NOT_FOUND)  # fmt: skip
    store = Store(settings.home)
    with store.lock(model.name):
        store.remove(model.name)
    return model


def _remote_files(
    settings: Settings, ref: ModelRef, session: Http | None, sha256: str | None
) -> tuple[list[RemoteFile], str]:
    if ref.scheme == "hf":
        return hf.remote_files(settings, ref, session)
    if session is None:
        raise VkramaError(
            f"{ref.name} is not in the store and vkrama is offline",
            hint="pull it once without --offline",
            status=ExitStatus.OFFLINE,
        )
    if ref.scheme == "ollama":
        return ollama.remote_files(settings, ref, session)
    if ref.scheme == "oci":
        return oci.remote_files(ref, session, settings.environ)
    return url.remote_files(ref, sha256)


def _stage(
    store: Store, session: Http | None, remote: RemoteFile, on_progress: Reporter
) -> tuple[Path, str]:
    """Where the verified bytes of `remote` are, and their sha256."""
    if remote.local is not None:
        digest = file_sha256(remote.local)
        if remote.sha256 is not None and digest != remote.sha256:
            raise VkramaError(
                f"checksum mismatch for {remote.local}: its name says {remote.sha256}",
                hint="delete the damaged file from the Hugging Face cache and pull again",
                status=ExitStatus.CHECKSUM,
            )
        size = remote.local.stat().st_size
        on_progress(Download(remote.filename, size, size, size))
        return remote.local, digest
    if remote.sha256 is not None and store.blob(remote.sha256).is_file():
        # The store holds these bytes already (under another name): no transfer. Blobs were
        # verified on the way in and are read-only.
        blob = store.blob(remote.sha256)
        size = blob.stat().st_size
        on_progress(Download(remote.filename, size, size, size))
        return blob, remote.sha256
    assert session is not None  # offline sources only ever give local files
    part = _partial(store, remote)
    return part, download.fetch(session, remote, part, on_progress)


def _partial_key(remote: RemoteFile) -> str:
    return remote.sha256 or key_for(remote.url)


def _partial(store: Store, remote: RemoteFile) -> Path:
    return store.partial(_partial_key(remote))


def _import_file(store: Store, ref: ModelRef, sha256: str | None) -> LocalModel:
    model = _local_file(store, ref)
    if sha256 is not None and sha256.lower() != model.sha256:
        raise VkramaError(
            f"checksum mismatch for {model.path}: expected {sha256}, got {model.sha256}",
            status=ExitStatus.CHECKSUM,
        )
    with store.lock(ref.name), store.adding_blobs():
        files = []
        for path, digest in zip(model.files, model.sha256s, strict=True):
            store.add_blob(path, digest, move=False)
            files.append(StoredFile(path.name, digest, path.stat().st_size))
        return store.publish(ref.name, "file", str(model.path), files, model.metadata)


def _local_file(store: Store, ref: ModelRef) -> LocalModel:
    assert ref.path is not None
    if not ref.path.is_file():
        raise VkramaError(
            f"{ref.path}: no such file",
            hint="check the path, or name a stored model (`vkrama list`) or a pull reference",
            status=ExitStatus.NOT_FOUND,
        )
    parts = [ref.path.parent / name for name in split_parts(ref.path.name)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise VkramaError(
            f"{ref.path.name} is part of a split model; missing: {', '.join(missing)}",
            status=ExitStatus.INCOMPLETE,
        )
    # Hashing a multi-GB model takes seconds and parsing it imports gguf and numpy: every
    # serve, bench and run of an unchanged file takes both from the index instead.
    index = FileIndex(store)
    sigs = [Signature.of(p) for p in parts]
    known = index.lookup(sigs)
    if known is not None:
        digests, metadata = known
    else:
        metadata = gguf_info.read(
            parts[0], tuple(parts[1:]), truncated_hint=gguf_info.USER_FILE_KEPT
        )
        digests = tuple(index.sha256(s) or file_sha256(p) for p, s in zip(parts, sigs, strict=True))
        index.remember(sigs, digests, metadata)
    return LocalModel(
        name=ref.name, path=parts[0], files=tuple(parts), sha256=digests[0],
        size=sum(s.size for s in sigs), source="file", metadata=metadata,
        origin=str(ref.path), sha256s=digests,
    )  # fmt: skip
