"""The registry of inference servers: BMW's `url_configuration.json`, and what each server offers.

The file keeps BMW's shape, `{"urls": [...]}`, plus a `servers` section with what discovery found
(protocol, models, task, labels), so a server that is down at start still validates
configurations and answers 503 instead of disappearing. Writes are atomic and serialised by a
lock, so concurrent requests never leave the file half written. It holds at most `max_servers`
servers (ANONYMIZER_API_MAX_SERVERS): each is discovered again at every start, so an unbounded
registry would make start-up and memory unbounded too. Which replica serves a call, and when a
server is marked unavailable, is the `InferenceRouter`'s business.

Shared (`shared=` a Redis URL, the Celery mode): the same JSON lives under one Redis key, with a
version counter that every change increments. Every API replica and worker re-reads it when the
counter has moved (`sync`, before each request), so `/set_url` on one replica is seen by all. A
change takes a Redis lock and re-reads first, so two replicas' changes never overwrite each other.
On first start the key is seeded from the file.

What is read back, from the file or from Redis, is a claim, not a registration: whoever can write
the key can add a URL the policy refuses, with a record offering any model. So an entry read is
"not checked yet" and receives nothing until this process has discovered it (`ServerInfo.discovered`:
the URL policy checks its address first, then its models are read from the server itself); the
router never sends an image to an entry that is not discovered.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import redis
from pydantic import ValidationError

from anonymization_api.errors import (
    InvalidRequest,
    RefusedUrl,
    TooManyServers,
    UnknownRegistration,
    UnreachableServer,
)
from anonymization_api.registry.discovery import Limits, discover
from anonymization_api.registry.servers import ModelInfo, ServerInfo, ServerRecord, UrlConfiguration
from anonymization_api.registry.url_policy import UrlPolicy, normalise_url
from anonymizer_shared.files import atomic_write

logger = logging.getLogger(__name__)

REDIS_KEY = "anonymizer:registry"


class Registry:
    def __init__(
        self,
        path: Path,
        discovery_timeout_s: float,
        *,
        discovery_deadline_s: float = 15.0,
        max_discovery_bytes: int = 1024 * 1024,
        max_servers: int = 64,
        policy: UrlPolicy | None = None,
        shared: str | None = None,
    ) -> None:
        self._path = path
        self._limits = Limits(discovery_timeout_s, discovery_deadline_s, max_discovery_bytes)
        self._max_servers = max_servers
        self._policy = policy or UrlPolicy()
        self._servers: dict[str, ServerInfo] = {}
        self._lock = asyncio.Lock()
        self._redis = redis.Redis.from_url(shared, decode_responses=True) if shared else None
        self._version: str | None = None

    # --- persistence ---

    def load(self) -> None:
        """Read the file (BMW's, or ours with discovery results); a missing file is an empty registry.
        Shared: read the Redis copy, seeded from the file where there is none yet."""
        if self._redis is not None:
            with self._redis.lock(f"{REDIS_KEY}:lock", timeout=30, thread_local=False):
                if self._redis.exists(REDIS_KEY):
                    self._read_shared()
                    return
        if not self._path.exists():
            if self._redis is None:  # shared, an empty registry is not written: an API may seed it yet
                self._write()
            return
        text = self._path.read_text(errors="replace")
        try:
            self._apply(text, self._path.name)
        except (json.JSONDecodeError, ValidationError, RecursionError) as exc:
            # Start with an empty registry rather than not at all; keep what was there for its owner.
            kept = self._path.with_name(self._path.name + ".invalid")
            atomic_write(kept, text)
            logger.error(
                '%s is not a valid url configuration (%s); expected {"urls": ["http://host:port/", ...]}. '
                "The registry starts empty; the file was kept as %s",
                self._path.name,
                _first_problem(exc),
                kept.name,
            )
            return
        if self._redis is not None:
            self._write()

    def _apply(self, text: str, source: str) -> None:
        """Take the servers a url configuration lists (raises on one of another shape)."""
        content = UrlConfiguration.model_validate(json.loads(text or "{}"))
        known, self._servers = self._servers, {}
        ignored = []
        for raw in content.urls:
            try:
                url = normalise_url(raw)
            except InvalidRequest as exc:
                logger.warning("%s: an entry is ignored: %s", source, exc)
                continue
            if url in self._servers:
                continue
            if len(self._servers) >= self._max_servers:
                ignored.append(url)
                continue
            server = content.record(url, raw).info(url)
            previous = known.get(url)
            if previous is not None and (previous.models, previous.protocol) == (server.models, server.protocol):
                server = previous  # what this process found of it stays
            self._servers[url] = server
        if ignored:
            logger.warning(
                "%s lists more than %d servers, the most the registry holds (ANONYMIZER_API_MAX_SERVERS); ignored: %s",
                source,
                self._max_servers,
                ", ".join(ignored),
            )

    def _read_shared(self) -> None:
        with self._redis.pipeline() as pipe:
            text, self._version = pipe.get(REDIS_KEY).get(f"{REDIS_KEY}:version").execute()
        self._apply(text, f"the shared registry ({REDIS_KEY})")

    def _write(self) -> None:
        content = UrlConfiguration(
            urls=list(self._servers),
            servers={url: ServerRecord.of(server).model_dump(mode="json") for url, server in self._servers.items()},
        )
        if self._redis is None:
            atomic_write(self._path, content.model_dump_json(indent=2))
            return
        with self._redis.pipeline() as pipe:
            pipe.set(REDIS_KEY, content.model_dump_json(indent=2)).incr(f"{REDIS_KEY}:version")
            self._version = str(pipe.execute()[1])

    async def sync(self) -> None:
        """Shared: re-read the registry if another process changed it."""
        if self._redis is None:
            return
        if await asyncio.to_thread(self._redis.get, f"{REDIS_KEY}:version") != self._version:
            async with self._lock:
                await asyncio.to_thread(self._read_shared)

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[None]:
        """A change, serialised in this process and, shared, across processes (read afresh first).
        A change that could not be written (a full disk) is undone here too: what is served is
        what is stored."""
        async with self._lock:
            if self._redis is None:
                with self._undone_on_error():
                    yield
                return
            lock = self._redis.lock(f"{REDIS_KEY}:lock", timeout=30, thread_local=False)
            await asyncio.to_thread(lock.acquire)
            try:
                await asyncio.to_thread(self._read_shared)
                with self._undone_on_error():
                    yield
            finally:
                await asyncio.to_thread(lock.release)

    @contextlib.contextmanager
    def _undone_on_error(self) -> Iterator[None]:
        before = dict(self._servers)
        try:
            yield
        except BaseException:
            self._servers = before
            raise

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    # --- queries ---

    def servers(self) -> list[ServerInfo]:
        return list(self._servers.values())

    def is_registered(self, url: str) -> bool:
        return normalise_url(url) in self._servers

    def get(self, url: str) -> ServerInfo:
        try:
            return self._servers[normalise_url(url)]
        except KeyError:
            raise UnknownRegistration(f"{url} is not registered; registered: {list(self._servers) or 'none'}") from None

    # --- changes ---

    async def add(self, raw_url: str, given: dict[str, ModelInfo] | None = None) -> ServerInfo:
        """Register a server after discovering it; idempotent (discovers again if already there).
        `given` supplies task and labels for models whose server has no configuration endpoint."""
        url = normalise_url(raw_url)
        self._check_room(url)  # before discovery: no requests for a server that cannot be kept
        server = await discover(url, given or {}, self._limits, self._policy)
        if not server.available:
            raise (RefusedUrl if server.refused else UnreachableServer)(f"{url} {server.error}")
        async with self._changing():
            self._check_room(url)  # again: concurrent registrations may have filled it meanwhile
            self._servers[url] = server
            await asyncio.to_thread(self._write)
        return server

    def _check_room(self, url: str) -> None:
        if url not in self._servers and len(self._servers) >= self._max_servers:
            raise TooManyServers(
                f"{self._max_servers} servers are registered, the most the registry holds "
                "(ANONYMIZER_API_MAX_SERVERS); remove one with /remove_url or raise the limit"
            )

    async def remove(self, raw_url: str) -> None:
        async with self._changing():
            del self._servers[self.get(raw_url).url]
            await asyncio.to_thread(self._write)

    async def remove_all(self) -> None:
        async with self._changing():
            self._servers.clear()
            await asyncio.to_thread(self._write)

    async def refresh(self, only_unavailable: bool = False) -> None:
        """Discover registered servers again (concurrently); keeps what was known of those still down."""
        targets = [s for s in self._servers.values() if not (only_unavailable and s.available)]
        found = await asyncio.gather(*(discover(s.url, s.given, self._limits, self._policy) for s in targets))
        async with self._changing():
            changed = False
            for server in found:
                previous = self._servers.get(server.url)
                if previous is None:
                    continue  # removed meanwhile
                redefined = _redefined_models(previous, server) if server.available else ""
                if redefined:
                    # What an administrator registered is what is trusted: a server whose models now
                    # say other things (a model's labels or task) is not believed until registered again.
                    if previous.available or previous.error != redefined:
                        logger.warning("inference server %s is not trusted: %s", server.url, redefined)
                    previous.available, previous.error, previous.discovered = False, redefined, False
                elif server.available:
                    if not previous.available:
                        logger.info("inference server %s is available", server.url)
                    changed = changed or previous.models != server.models or previous.protocol != server.protocol
                    self._servers[server.url] = server
                else:
                    if previous.available:
                        logger.warning("inference server %s is unavailable: %s", server.url, server.error)
                    previous.available, previous.error, previous.refused = False, server.error, server.refused
            if changed:
                await asyncio.to_thread(self._write)

    def mark_unavailable(self, url: str, error: str) -> None:
        server = self._servers.get(url)
        if server is not None:
            if server.available:
                logger.warning("inference server %s marked unavailable: %s", url, error)
            server.available, server.error = False, error

    async def keep_discovering(self, interval_s: float) -> None:
        """Background task: every server is discovered once (the API answers meanwhile, with servers
        "not checked yet"), then those that are down are tried again every `interval_s`."""
        only_unavailable = False
        while True:
            try:
                await self.refresh(only_unavailable)
            except Exception:  # a discovery bug must not end the loop that brings servers back
                logger.exception("discovery failed")
            only_unavailable = True
            await asyncio.sleep(interval_s)


def _redefined_models(known: ServerInfo, found: ServerInfo) -> str:
    """Why `found` contradicts what was registered of the same server, or "" where it does not:
    models it still serves whose task or labels changed."""
    changes = [
        f"model {name} was {model.task} {list(model.labels)}, now {found.models[name].task} "
        f"{list(found.models[name].labels)}"
        for name, model in known.models.items()
        if name in found.models and (found.models[name].task, found.models[name].labels) != (model.task, model.labels)
    ]
    if not changes:
        return ""
    return (
        "its models changed since it was registered (" + "; ".join(changes) + "); an administrator must "
        "register it again (POST /set_url) to accept that"
    )


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(map(str, error['loc'])) or 'the file'}: {error['msg']}"
    return str(exc)
