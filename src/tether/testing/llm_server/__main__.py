"""``python -m tether.testing.llm_server``: serve a scripted LLM API (see the package)."""

import sys

from tether.testing.llm_server._cli import main

sys.exit(main())
