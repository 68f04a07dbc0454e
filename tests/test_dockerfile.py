"""The image contract of operations.md (no Docker engine runs here, so the Dockerfile is checked as text)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_image_is_multi_stage_slim_and_installs_only_runtime_dependencies():
    stages = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert len(stages) >= 2 and all("slim" in stage for stage in stages)
    assert "requirements/runtime.lock" in DOCKERFILE and "dev.lock" not in DOCKERFILE
    runtime = (ROOT / "requirements" / "runtime.lock").read_text()
    for dev_only in ("pytest", "hypothesis", "fastapi", "pyjwt"):
        assert not re.search(rf"^{dev_only}==", runtime, re.M | re.I), dev_only


def test_image_runs_python_m_app_as_non_root_with_healthcheck_on_healthz():
    final = DOCKERFILE[DOCKERFILE.rindex("FROM"):]
    assert re.search(r"^USER\s+(?!root)\S+", final, re.M)
    assert re.search(r"^EXPOSE\s+8000", final, re.M)
    assert re.search(r"^HEALTHCHECK .*", final, re.M) and "/healthz" in final
    assert 'CMD ["python", "-m", "app"]' in final
    assert "HOST=0.0.0.0" in final


def test_image_copies_the_data_directories_the_app_reads():
    for directory in ("app", "presets", "profiles"):
        assert re.search(rf"^COPY {directory} ", DOCKERFILE, re.M), directory
