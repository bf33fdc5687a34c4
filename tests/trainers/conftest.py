"""TRL's tests (the root conftest leaves the folder out without TRL).

TRL's import sets ``VLLM_LOGGING_LEVEL=ERROR`` for the process unless it is set
(``trl/_compat.py``). Every engine started later in the session, in this process or
a child (servers, engine cores, Ray workers), would then drop the INFO lines other
tests read, ead-vllm's "EAD sampler installed on model runner ..." included. TRL is
imported here, before this folder's modules, and the session's level is put back.
"""

from __future__ import annotations

import os

_before = os.environ.get("VLLM_LOGGING_LEVEL")
import trl  # noqa: E402, F401

if _before is None:
    os.environ.pop("VLLM_LOGGING_LEVEL", None)
else:
    os.environ["VLLM_LOGGING_LEVEL"] = _before
