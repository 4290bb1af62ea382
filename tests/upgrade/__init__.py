"""The rolling upgrade check (python -m tests.upgrade; see __main__)."""
