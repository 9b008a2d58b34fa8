"""Bearer tokens: HMAC-signed JWTs that name the user and expire."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

import jwt

ALGORITHM = "HS256"
DEFAULT_LIFETIME = timedelta(hours=1)


class TokenIssuer:
    """Issues and checks tokens. The default secret is new for each server process, so a restart
    signs everybody out; give one to share tokens between processes."""

    def __init__(self, secret: bytes | None = None, lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime

    def issue(self, user_id: UUID) -> str:
        now = datetime.now(UTC)
        return jwt.encode({"sub": str(user_id), "iat": now, "exp": now + self.lifetime},
                          self._secret, algorithm=ALGORITHM)

    def user_of(self, token: str) -> UUID | None:
        """The user a valid, unexpired token names; None for anything else."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp"]})
            return UUID(str(claims["sub"]))
        except (jwt.InvalidTokenError, ValueError):
            return None
