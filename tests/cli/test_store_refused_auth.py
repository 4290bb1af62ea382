"""A server that asks for a password the URL does not give, or whose pg_hba.conf has no
line for the connection, is configured wrong, not down: the commands say so, as they do
for a database or role that does not exist (``test_store_refused.py``). Both need a
server that is not the shared one (which trusts every local connection): a private
cluster (``tests/chaos/pgcluster.py``) with lines of its own in pg_hba.conf.

Before, each was "PostgreSQL at h:p is unavailable: fe_sendauth: no password
supplied" (or the pg_hba line), the message of an outage."""

from __future__ import annotations

import subprocess

import pytest

from tests.chaos.pgcluster import BIN, missing_privilege, private_cluster
from tests.cli.test_cli import assert_one_line_error, tether_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]


def test_a_missing_password_and_a_pg_hba_refusal_are_configuration_problems() -> None:
    reason = missing_privilege()
    if reason:
        pytest.skip(f"private PostgreSQL cluster: {reason}")
    with private_cluster() as cluster:
        hba = cluster.data / "pg_hba.conf"
        # (the cluster's own line trusts everyone: only postgres keeps it; "locked"
        # has no line at all, "shut" a reject line)
        hba.write_text("local all all trust\n"
                       "host all postgres 127.0.0.1/32 trust\n"
                       "host all secret 127.0.0.1/32 scram-sha-256\n"
                       "host all shut 127.0.0.1/32 reject\n")
        for sql in ("CREATE ROLE secret LOGIN PASSWORD 'pw'", "SELECT pg_reload_conf()"):
            subprocess.run([str(BIN / "psql"), "-q", cluster.url(), "-c", sql], check=True,
                           capture_output=True, timeout=60)
        base = f"127.0.0.1:{cluster.port}/postgres"

        proc = tether_cli("runs", db=f"postgresql://secret@{base}", timeout=90)
        assert_one_line_error(proc, "refused the connection", "no password supplied",
                              "a configuration problem, not an outage",
                              "give it in the URL")
        assert proc.returncode == 1 and "unavailable" not in proc.stderr

        proc = tether_cli("db", "status", db=f"postgresql://locked@{base}", timeout=90)
        assert_one_line_error(proc, "refused the connection", "no pg_hba.conf entry for "
                              'host "127.0.0.1", user "locked", database "postgres"',
                              "a configuration problem, not an outage",
                              "allow this host, user and database in the server's "
                              "pg_hba.conf")
        assert proc.returncode == 1 and "unavailable" not in proc.stderr

        proc = tether_cli("runs", db=f"postgresql://shut@{base}", timeout=90)
        assert_one_line_error(proc, "pg_hba.conf rejects connection for host",
                              "a configuration problem, not an outage")
