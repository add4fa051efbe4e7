"""Every server parameter the CloudNativePG Cluster sets, in every stack, is one PostgreSQL itself accepts, and one
CloudNativePG lets the user set. CloudNativePG's webhook passes any value through: a value PostgreSQL refuses
(`shared_buffers: 25%`) stops the server at start-up, and nothing after it (migrations, the API) is ever created.

The check asks the local `postgres` binary: `postgres -D <data dir> -C name -c name=value` parses the value as the
server does at start-up and exits non-zero on one it refuses. The server never runs as root, so as root the binary
runs as the `postgres` user, on a throwaway data directory that user owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components.config import byte_count
from tools.mock_stack import STACKS

SERVER_BINARIES = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"

# Parameters CloudNativePG keeps to itself: its validating webhook rejects a Cluster that sets one. From
# FixedConfigurationParameters in pkg/postgres/configuration.go of cloudnative-pg (operator 1.30, the pinned chart's).
CLOUDNATIVE_PG_FORBIDDEN = frozenset(
    """
    allow_system_table_mods archive_cleanup_command archive_command archive_mode bonjour bonjour_name cluster_name
    config_file data_directory data_sync_retry event_source external_pid_file hba_file hot_standby ident_file
    jit_provider listen_addresses log_destination log_directory log_file_mode log_filename log_rotation_age
    log_rotation_size log_truncate_on_rotation logging_collector pg_failover_slots.primary_dsn
    pg_failover_slots.standby_slot_names port primary_conninfo primary_slot_name promote_trigger_file
    recovery_end_command recovery_min_apply_delay recovery_target recovery_target_action recovery_target_inclusive
    recovery_target_lsn recovery_target_name recovery_target_time recovery_target_timeline recovery_target_xid
    restart_after_crash restore_command shared_preload_libraries ssl ssl_ca_file ssl_cert_file ssl_crl_file
    ssl_dh_params_file ssl_ecdh_curve ssl_key_file ssl_passphrase_command ssl_passphrase_command_supports_reload
    ssl_prefer_server_ciphers stats_temp_directory synchronized_standby_slots synchronous_standby_names
    syslog_facility syslog_ident syslog_sequence_numbers syslog_split_messages temp_tablespaces
    unix_socket_directories unix_socket_group unix_socket_permissions
    """.split()
)


def cluster_parameters(run) -> dict[str, str]:
    return run.one("Cluster", "workflow-postgres")["spec"]["postgresql"]["parameters"]


def _server_binary() -> Path | None:
    """The newest installed server's `postgres`, as Debian's postgresql package lays it out."""
    found = sorted(SERVER_BINARIES.glob("*/bin/postgres"), key=lambda path: int(path.parts[-3]))
    return found[-1] if found else None


class Server:
    """The local PostgreSQL server binary with a data directory of its own, run as a user it accepts."""

    def __init__(self, binary: Path, data: Path):
        self.binary = binary
        self.data = data

    def command(self, *args: str) -> list[str]:
        # runuser (util-linux) switches user without a login shell or PAM session: as root, the server's own user.
        switch = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        return [*switch, *args]

    def accepts(self, name: str, value: str) -> subprocess.CompletedProcess:
        """Starts the server far enough to read `name=value` and print the parameter, then stops it."""
        return subprocess.run(
            self.command(str(self.binary), "-D", str(self.data), "-C", name, "-c", f"{name}={value}"),
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.fixture(scope="module")
def server():
    binary = _server_binary()
    if binary is None:
        pytest.skip(f"no PostgreSQL server binary under {SERVER_BINARIES}/*/bin (Debian's postgresql package)")
    # Under /tmp itself, not pytest's per-user directory, which the server's user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="postgres-parameters-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user=SERVER_USER)
        instance = Server(binary, root / "data")
        subprocess.run(
            instance.command(
                str(binary.parent / "initdb"), "--auth=trust", "-U", SERVER_USER, "-D", str(instance.data)
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield instance
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_postgres_parameter_is_one_postgres_accepts(stacks, server, stack_name):
    refused = {
        f"{key}={value}: {result.stderr.strip()}"
        for key, value in cluster_parameters(stacks[stack_name]).items()
        if (result := server.accepts(key, value)).returncode != 0
    }
    assert not refused


def test_postgres_refuses_a_percentage_for_shared_buffers(server):
    result = server.accepts("shared_buffers", "25%")
    assert result.returncode != 0
    assert 'invalid value for parameter "shared_buffers": "25%"' in result.stderr


def test_postgres_reports_the_size_it_was_given(server):
    # 256MB in the server's 8kB pages: what -C prints is the value it would run with, not an echo of the input.
    assert server.accepts("shared_buffers", "256MB").stdout.strip() == "32768"


def test_no_postgres_parameter_is_one_cloudnative_pg_manages_itself(stacks):
    assert not {key for run in stacks.values() for key in cluster_parameters(run)} & CLOUDNATIVE_PG_FORBIDDEN


def test_postgres_memory_is_a_share_of_each_stack_memory_limit(stacks):
    sizes = {}
    for name, run in stacks.items():
        limit_mb = byte_count(run.one("Cluster", "workflow-postgres")["spec"]["resources"]["limits"]["memory"]) // 2**20
        parameters = cluster_parameters(run)
        sizes[name] = (parameters["shared_buffers"], parameters["effective_cache_size"])
        assert sizes[name] == (f"{limit_mb // 4}MB", f"{limit_mb // 2}MB"), name
    assert sizes["prod"] != sizes["dev"]
