"""The checks of validation.md section 3, each a pure function of a `Context` returning its findings.

A check returns `None` when it does not apply (status `skip`), else its findings (status `fail` when one of
them is an error, `pass` otherwise). Time is part of the context, never read from a clock here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from app.findings import Finding
from app.keys import Algorithm, KeyEntry, KeyView
from app.policy import CompiledPolicy
from app.token import ParsedToken


@dataclass(slots=True)
class Context:
    token: ParsedToken
    policy: CompiledPolicy
    keys: KeyView
    now: float
    # Filled in by the algorithm and key checks for the checks gated on them.
    algorithm: Algorithm | None = None
    candidates: list[KeyEntry] = field(default_factory=list)
    key_used: KeyEntry | None = None
    # The candidate keys the straight line (validation._clean) already tried, none of which verified: not tried
    # again (found by a review: a forged token against a set with a weak key cost every strong key's verify twice).
    tried: tuple[KeyEntry, ...] = ()


Check = Callable[[Context], "list[Finding] | None"]
