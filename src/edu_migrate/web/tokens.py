"""Bearer tokens: HMAC-signed JWTs that name the user, say when they were issued, and expire.
The database voids a token issued before its account's password, activity or role changed
(token_still_valid, schema V006), and a token signed out (its id, the jti, in
auth.revoked_tokens, schema V024)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import jwt

ALGORITHM = "HS256"
DEFAULT_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class TokenClaims:
    user_id: UUID
    issued_at: datetime
    token_id: UUID
    expires_at: datetime


class TokenIssuer:
    """Issues and checks tokens. The default secret is new for each server process, so a restart
    signs everybody out; give one to share tokens between processes."""

    def __init__(self, secret: bytes | None = None, lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime

    def issue(self, user_id: UUID) -> str:
        now = datetime.now(UTC)
        # The issue time to the microsecond: a token issued right after a password change
        # must not look older than the change.
        return jwt.encode({"sub": str(user_id), "iat": now.timestamp(),
                           "exp": now + self.lifetime, "jti": str(uuid.uuid4())},
                          self._secret, algorithm=ALGORITHM)

    def claims_of(self, token: str) -> TokenClaims | None:
        """Who a valid, unexpired token names and when it was issued; None for anything else."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp", "iat", "jti"]})
            return TokenClaims(UUID(str(claims["sub"])),
                               datetime.fromtimestamp(float(claims["iat"]), UTC),
                               UUID(str(claims["jti"])),
                               datetime.fromtimestamp(float(claims["exp"]), UTC))
        except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError, OSError):
            return None
