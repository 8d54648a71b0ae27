"""The Limits table of docs/security.md states each limit's default as the code has it."""

from __future__ import annotations

import re

from predictor.config import Settings
from predictor.middleware import MAX_MEMBERS
from predictor.open_files import OTHER_OPEN_FILES
from predictor.protocol.v2 import MAX_DATA_DEPTH
from tests.support.servers import REPO


def test_the_limits_table_states_each_default_as_the_code_has_it() -> None:
    section = (REPO / "docs" / "security.md").read_text().split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    stated = re.findall(r"`(\w+)` \(([\d.]+)\)", section)
    assert {name for name, _ in stated} >= {"header_timeout_s", "max_header_bytes", "max_connections",
                                           "keep_alive_timeout_s", "body_timeout_s", "min_upload_bytes_per_s",
                                           "upload_grace_s", "max_request_bytes", "max_images_per_request",
                                           "liveness_not_ready_grace_seconds", "grpc_max_pending_rpcs",
                                           "grpc_max_connections", "grpc_handshake_timeout_s",
                                           "grpc_max_connection_idle_s", "grpc_max_connection_age_s"}  # fmt: skip
    for name, default in stated:
        assert float(default) == Settings.model_fields[name].default, name
    assert f"`max_connections` + `grpc_max_connections` + {OTHER_OPEN_FILES} |" in section
    assert f"| {MAX_MEMBERS} (`MAX_MEMBERS`" in section and f"| {MAX_DATA_DEPTH} levels (`MAX_DATA_DEPTH`)" in section
