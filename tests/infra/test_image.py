"""The app image honours the container contract the pods are built for."""

import re

from components.workload import APP_UID
from tools.mock_stack import ROOT

DOCKERFILE = (ROOT / "app" / "Dockerfile").read_text()


def test_every_base_image_is_pinned_by_digest():
    images = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert images and all(re.search(r"@sha256:[0-9a-f]{64}$", image) for image in images)
    assert all(base == "${PYTHON_IMAGE}" for base in re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE))


def test_the_image_is_multi_stage():
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.MULTILINE)) >= 2


def test_the_image_runs_as_the_uid_the_pods_require():
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert user == f"{APP_UID}:{APP_UID}"


def test_one_entry_point_serves_every_role():
    assert 'ENTRYPOINT ["python", "-m", "app"]' in DOCKERFILE
