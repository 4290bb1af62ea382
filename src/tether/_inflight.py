"""Whether this process keeps a list of its ``LLM`` calls in flight.

Only a test environment reads that list (``TestEnv`` ends a wait on a model whose
endpoint accepted the request and never answers: ``tether.ai._llm.outstanding_calls``),
so a call adds itself only while one is open: a production call does no such
bookkeeping. A counter, not a flag: several environments may be open at once.
"""

from __future__ import annotations

#: The open test environments that watch the calls in flight.
watchers = 0
