"""Fair use: who is asking (hashed identities), what they may do (limits), admission of a request."""

from weathernote.fairuse.admission import Admission
from weathernote.fairuse.identity import Identifier, Identity, load_or_create_secret, secret_problem
from weathernote.fairuse.limiter import Decision, RateLimiter
from weathernote.fairuse.pacer import Pacer

__all__ = [
    "Admission",
    "Decision",
    "Identifier",
    "Identity",
    "Pacer",
    "RateLimiter",
    "load_or_create_secret",
    "secret_problem",
]
