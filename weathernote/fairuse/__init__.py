"""Fair use: who is asking (hashed identities), what they may do (limits), admission of a request."""

from weathernote.fairuse.identity import Identifier, Identity
from weathernote.fairuse.limiter import Decision, RateLimiter

__all__ = ["Decision", "Identifier", "Identity", "RateLimiter"]
