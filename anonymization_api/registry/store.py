"""The registry of inference servers: BMW's `url_configuration.json`, and what each server offers.

The file keeps BMW's shape, `{"urls": [...]}`, plus a `servers` section with what discovery found
(protocol, models, task, labels), so a server that is down at start still validates
configurations and answers 503 instead of disappearing. Writes are atomic and serialised by a
lock, so concurrent requests never leave the file half written. It holds at most `max_servers`
servers (ANONYMIZER_API_MAX_SERVERS): each is discovered again at every start, so an unbounded
registry would make start-up and memory unbounded too. Which replica serves a call, and when a
server is marked unavailable, is the `InferenceRouter`'s business.
"""

import asyncio
import json
import logging
from pathlib import Path

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
    ) -> None:
        self._path = path
        self._limits = Limits(discovery_timeout_s, discovery_deadline_s, max_discovery_bytes)
        self._max_servers = max_servers
        self._policy = policy or UrlPolicy()
        self._servers: dict[str, ServerInfo] = {}
        self._lock = asyncio.Lock()

    # --- persistence ---

    def load(self) -> None:
        """Read the file (BMW's, or ours with discovery results); a missing file is an empty registry."""
        if not self._path.exists():
            self._write()
            return
        text = self._path.read_text(errors="replace")
        try:
            content = UrlConfiguration.model_validate(json.loads(text or "{}"))
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
        ignored = []
        for raw in content.urls:
            try:
                url = normalise_url(raw)
            except InvalidRequest as exc:
                logger.warning("%s: an entry is ignored: %s", self._path.name, exc)
                continue
            if url not in self._servers and len(self._servers) >= self._max_servers:
                ignored.append(url)
            elif url not in self._servers:
                self._servers[url] = content.record(url, raw).info(url)
        if ignored:
            logger.warning(
                "%s lists more than %d servers, the most the registry holds (ANONYMIZER_API_MAX_SERVERS); ignored: %s",
                self._path.name,
                self._max_servers,
                ", ".join(ignored),
            )

    def _write(self) -> None:
        content = UrlConfiguration(
            urls=list(self._servers),
            servers={url: ServerRecord.of(server).model_dump(mode="json") for url, server in self._servers.items()},
        )
        atomic_write(self._path, content.model_dump_json(indent=2))

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
        async with self._lock:
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
        async with self._lock:
            del self._servers[self.get(raw_url).url]
            await asyncio.to_thread(self._write)

    async def remove_all(self) -> None:
        async with self._lock:
            self._servers.clear()
            await asyncio.to_thread(self._write)

    async def refresh(self, only_unavailable: bool = False) -> None:
        """Discover registered servers again (concurrently); keeps what was known of those still down."""
        targets = [s for s in self._servers.values() if not (only_unavailable and s.available)]
        found = await asyncio.gather(*(discover(s.url, s.given, self._limits, self._policy) for s in targets))
        async with self._lock:
            changed = False
            for server in found:
                previous = self._servers.get(server.url)
                if previous is None:
                    continue  # removed meanwhile
                if server.available:
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


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(map(str, error['loc'])) or 'the file'}: {error['msg']}"
    return str(exc)
