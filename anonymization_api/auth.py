"""API keys and roles: `admin` changes the registry, `user` anonymises and sees its own jobs.

Keys come from ANONYMIZER_API_ADMIN_KEYS and ANONYMIZER_API_USER_KEYS (comma-separated) and from
a keys file (ANONYMIZER_API_KEYS_FILE: lines `admin KEY` or `user KEY`, `#` comments). Each key is
given as it is or as `sha256:<hex>` of the key, so the settings need not hold the secret itself.
Clients send `Authorization: Bearer KEY` or `X-API-Key: KEY`.

With no key configured everyone is an anonymous admin; the service then listens on loopback only
(`check_exposure`) and answers only requests addressed to a loopback name (`LoopbackHostOnly`: a
web page cannot reach it through DNS rebinding), unless ANONYMIZER_API_ALLOW_ANONYMOUS_REMOTE says
otherwise, so BMW's clients keep working on the same machine without a key.
"""

import hashlib
import hmac
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ClassVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from anonymization_api.errors import AnonymisationError
from anonymizer_shared.http import is_loopback_host

logger = logging.getLogger(__name__)


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class Unauthenticated(AnonymisationError):
    status_code = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="anonymizer"'}


class Forbidden(AnonymisationError):
    status_code = 403


class InvalidKeys(ValueError):
    """The key settings cannot be read; the service refuses to start rather than run open."""


@dataclass(frozen=True)
class Caller:
    """Who sent a request: `key_id` names the key (a prefix of its hash: never the key), None when
    no keys are configured."""

    key_id: str | None
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


ANONYMOUS = Caller(None, Role.ADMIN)
KEYS_FIX = (
    "set ANONYMIZER_API_ADMIN_KEYS and ANONYMIZER_API_USER_KEYS (or ANONYMIZER_API_KEYS_FILE) "
    "to reach it by another name"
)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys by their sha256, each with its role."""

    def __init__(self, keys: dict[str, Role]) -> None:
        self._keys = keys

    @classmethod
    def from_settings(cls, admin_keys: str, user_keys: str, keys_file: Path | None) -> "KeyRing":
        keys: dict[str, Role] = {}
        entries = [(Role.ADMIN, k) for k in admin_keys.split(",")] + [(Role.USER, k) for k in user_keys.split(",")]
        if keys_file is not None:
            try:
                lines = keys_file.read_text().splitlines()
            except OSError as exc:
                raise InvalidKeys(f"the keys file {keys_file.name} cannot be read ({exc.strerror})") from exc
            for number, line in enumerate(lines, 1):
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                role, _, key = text.partition(" ")
                if role not in (Role.ADMIN, Role.USER) or not key.strip():
                    raise InvalidKeys(f"keys file line {number}: expected 'admin KEY' or 'user KEY'")
                entries.append((Role(role), key.strip()))
        for role, raw in entries:
            key = raw.strip()
            if not key:
                continue
            digest = key.removeprefix("sha256:").lower() if key.startswith("sha256:") else key_hash(key)
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise InvalidKeys("a 'sha256:' key must be followed by 64 hexadecimal digits")
            if key_hash(key) == digest and len(key) < 16:
                raise InvalidKeys("API keys must be at least 16 characters long")
            # a key listed for both roles is an admin: the wider role wins
            keys[digest] = Role.ADMIN if keys.get(digest) is Role.ADMIN else role
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def caller(self, presented: str | None) -> Caller:
        if not self.enabled:
            return ANONYMOUS
        if not presented:
            raise Unauthenticated("an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        digest = key_hash(presented)
        for known, role in self._keys.items():
            if hmac.compare_digest(known, digest):
                return Caller(digest[:16], role)
        raise Unauthenticated("the API key is not valid; ask an administrator for one")


def check_exposure(host: str, keys: KeyRing, allow_anonymous_remote: bool) -> None:
    """Refuse to listen beyond loopback without keys, unless that was asked for explicitly."""
    if keys.enabled:
        return
    if is_loopback_host(host):
        logger.warning("no API keys configured: anyone on this machine may use the service; listening on %s", host)
        return
    if not allow_anonymous_remote:
        raise InvalidKeys(
            f"refusing to listen on {host} without API keys: anyone who reaches it could change the registry and "
            "read uploads. Set ANONYMIZER_API_ADMIN_KEYS and ANONYMIZER_API_USER_KEYS (or ANONYMIZER_API_KEYS_FILE), "
            "or set ANONYMIZER_API_ALLOW_ANONYMOUS_REMOTE=true where a proxy in front authenticates"
        )
    logger.warning("no API keys configured and listening on %s: anonymous access from the network", host)


# --- dependencies --------------------------------------------------------------------------------

# Declared for OpenAPI (the security schemes /docs shows); the checks are ours, so neither raises.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")


def _presented_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> str | None:
    return bearer.credentials if bearer else api_key


def _caller(request: Request, key: Annotated[str | None, Depends(_presented_key)]) -> Caller:
    keys: KeyRing = request.app.state.keys
    caller = keys.caller(key)
    request.state.caller = caller
    return caller


def _is_admin(request: Request, key: Annotated[str | None, Depends(_presented_key)]) -> bool:
    """For routes open to all that tell admins more: whether the request carries an admin key (or
    the service runs without keys); a request with no key or a wrong one is answered all the same."""
    try:
        return request.app.state.keys.caller(key).is_admin
    except Unauthenticated:
        return False


def require_user(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    return caller


def require_admin(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this needs an admin key: only administrators change the registry of inference servers")
    return caller


CallerDep = Annotated[Caller, Depends(require_user)]
IsAdminDep = Annotated[bool, Depends(_is_admin)]
# OpenAPI's "no key is needed" alternative, for the routes that take IsAdminDep
OPTIONAL_KEY = {"security": [{}]}
