"""FILE_STORAGE_BACKEND=s3 against a real S3-compatible server on loopback (moto), through a real gunicorn."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import timedelta
from types import SimpleNamespace
from uuid import UUID

import pytest
import requests
from django.conf import settings
from django.core.files.storage import storages
from django.urls import resolve
from django.utils import timezone

from portal.models import UploadFile
from portal.services import lifecycle
from tests.portal.conftest import events
from tests.portal.s3_server import CREDENTIALS, REGION, OutageProxy, s3_client, start_moto
from tests.portal.server import MB, download_sha256, peak_rss_bytes, start_gunicorn, upload_generated_file, worker_pid

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PART = 5 * MB  # S3's smallest part: a 12 MiB file goes up in 3 parts
PREFIX = "doorito-test"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto"))
    yield endpoint
    proc.stop()


@pytest.fixture
def bucket(moto, request):
    """A fresh bucket per test, and the S3 client that inspects it."""
    name = f"doorito-{request.node.name.replace('_', '-')[:40].strip('-')}"
    client = s3_client(moto)
    client.create_bucket(Bucket=name)
    return name, client


@pytest.fixture
def proxy(moto):
    outage = OutageProxy(upstream_port=int(moto.rsplit(":", 1)[1]))
    yield outage
    outage.close()


def storage_env(bucket_name: str, endpoint: str) -> dict[str, str]:
    return {
        "FILE_STORAGE_BACKEND": "s3",
        "FILE_STORAGE_S3_BUCKET": bucket_name,
        "FILE_STORAGE_S3_ENDPOINT_URL": endpoint,
        "FILE_STORAGE_S3_REGION": REGION,
        "FILE_STORAGE_S3_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "FILE_STORAGE_S3_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "FILE_STORAGE_S3_PREFIX": PREFIX,
        "FILE_STORAGE_S3_ADDRESSING_STYLE": "path",
        "FILE_STORAGE_S3_PART_SIZE": str(PART),
        "FILE_STORAGE_S3_MAX_ATTEMPTS": "2",
        "FILE_STORAGE_S3_TIMEOUT": "5",
    }


@pytest.fixture
def s3_settings(settings, bucket, proxy):
    """This process (cleanup runs here) uses the same bucket through the proxy, as the web process does."""
    env = storage_env(bucket[0], proxy.endpoint)
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {
            "BACKEND": "portal.services.storage.S3UploadStorage",
            "OPTIONS": {
                "bucket_name": env["FILE_STORAGE_S3_BUCKET"],
                "endpoint_url": env["FILE_STORAGE_S3_ENDPOINT_URL"],
                "region_name": REGION,
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "location": PREFIX,
                "addressing_style": "path",
                "part_size": PART,
                "concurrency": 4,
                "max_attempts": 2,
                "timeout": 5.0,
            },
        },
    }
    assert type(storages["uploads"]).__name__ == "S3UploadStorage"
    return env


@pytest.fixture
def server(test_database_url, tmp_path, s3_settings):
    media = tmp_path / "media"
    media.mkdir()
    proc, base = start_gunicorn("gunicorn-s3", test_database_url, tmp_path, media, **s3_settings)
    yield SimpleNamespace(base=base, media=media, pid=proc.pid)
    proc.stop()


@pytest.fixture
def token(make_user):
    return make_user("alice")[1]


def upload(base: str, token: str, data: bytes) -> requests.Response:
    return requests.post(
        f"{base}/api/files",
        files={"file": ("data.bin", data)},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )


def objects(bucket) -> dict[str, int]:
    name, client = bucket
    return {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])}


def staged_files(media) -> list:
    return [p for p in media.rglob("*") if p.is_file()]


def test_upload_goes_to_the_bucket_in_parts_and_downloads_with_the_same_sha256(server, bucket, token):
    base, media = server.base, server.media
    data = os.urandom(12 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()

    response = upload(base, token, data)

    assert response.status_code == 201, response.text
    row = UploadFile.objects.get(pk=response.json()["id"])
    key = f"{PREFIX}/{row.storage_name}"
    assert objects(bucket) == {key: len(data)}
    etag = bucket[1].head_object(Bucket=bucket[0], Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload of 3 parts, not one buffered PUT
    assert staged_files(media) == []  # the bytes left local staging

    download = requests.get(
        f"{base}/api/files/{row.id}/download", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == digest
    assert download.headers["X-Checksum-SHA256"] == digest
    assert download.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
    assert download.headers["Content-Length"] == str(len(data))
    assert download.headers["Content-Disposition"].startswith("attachment")


def test_cleanup_deletes_the_object_then_the_row(server, bucket, token):
    base = server.base
    file_id = upload(base, token, b"expiring " * 1000).json()["id"]
    assert len(objects(bucket)) == 1
    UploadFile.objects.filter(pk=file_id).update(expires_at=timezone.now() - timedelta(minutes=1))

    assert lifecycle.cleanup_expired_uploads() == {"deleted": 1, "remaining": 0}

    assert objects(bucket) == {}
    assert not UploadFile.objects.filter(pk=file_id).exists()
    assert [e.event_type for e in events()] == ["file.stored", "file.expiring", "file.expired"]


def test_an_object_already_missing_at_cleanup_counts_as_deleted(server, bucket, token):
    base = server.base
    file_id = upload(base, token, b"gone already " * 100).json()["id"]
    (key,) = objects(bucket)
    bucket[1].delete_object(Bucket=bucket[0], Key=key)
    UploadFile.objects.filter(pk=file_id).update(expires_at=timezone.now() - timedelta(minutes=1))

    assert lifecycle.cleanup_expired_uploads() == {"deleted": 1, "remaining": 0}
    assert not UploadFile.objects.filter(pk=file_id).exists()
    assert events()[-1].event_type == "file.expired"


def test_an_s3_error_at_cleanup_is_recorded_on_the_row_and_retried(server, bucket, token, proxy):
    base = server.base
    file_id = upload(base, token, b"keep trying " * 100).json()["id"]
    UploadFile.objects.filter(pk=file_id).update(expires_at=timezone.now() - timedelta(minutes=1))
    proxy.fail_after(0)

    assert lifecycle.cleanup_expired_uploads() == {"deleted": 0, "remaining": 1}

    row = UploadFile.objects.get(pk=file_id)
    assert row.status == UploadFile.Status.EXPIRED and row.cleanup_failed_at is not None
    assert "StorageUnavailable" in row.cleanup_error and "deleting" in row.cleanup_error
    assert len(objects(bucket)) == 1  # nothing was deleted, and the row still points at it

    proxy.restore()
    assert lifecycle.cleanup_expired_uploads() == {"deleted": 1, "remaining": 0}
    assert objects(bucket) == {} and not UploadFile.objects.filter(pk=file_id).exists()


def test_bucket_unreachable_mid_finish_fails_cleanly_and_a_retry_works(server, bucket, token, proxy):
    base, media = server.base, server.media
    data = os.urandom(12 * 1024 * 1024)
    proxy.fail_after(7 * 1024 * 1024)  # down while the second part is on its way

    failed = upload(base, token, data)

    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "storage_unavailable"
    # Removing the failed upload could not reach the bucket either: its row stays `failed` (never listed or
    # served) for cleanup to finish. No event, no staged bytes, no object, not even a partial one.
    failed_row = UploadFile.objects.get()
    assert failed_row.status == UploadFile.Status.FAILED
    assert events() == []
    assert staged_files(media) == []
    proxy.restore()
    assert objects(bucket) == {}

    retried = upload(base, token, data)
    assert retried.status_code == 201, retried.text
    download = requests.get(
        f"{base}/api/files/{retried.json()['id']}/download", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert list(objects(bucket).values()) == [len(data)]
    after_grace = timezone.now() + timedelta(hours=settings.FILE_UPLOAD_UPLOADING_GRACE_HOURS, minutes=1)
    assert lifecycle.cleanup_expired_uploads(now=after_grace) == {"deleted": 1, "remaining": 0}
    assert list(UploadFile.objects.values_list("id", flat=True)) == [UUID(retried.json()["id"])]


def test_download_while_the_bucket_is_unreachable_is_a_503_in_json(server, bucket, token, proxy):
    base = server.base
    file_id = upload(base, token, b"later " * 100).json()["id"]
    proxy.fail_after(0)

    response = requests.get(
        f"{base}/api/files/{file_id}/download", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"


def test_a_96_mib_file_goes_to_the_bucket_and_back_with_bounded_server_memory(server, bucket, token):
    base = server.base
    worker = worker_pid(server.pid)
    # Warm up first: boto3's client and its service model take their fixed ~30 MiB on first use.
    warm = upload(base, token, b"warm-up " * 1000).json()["id"]
    requests.get(f"{base}/api/files/{warm}/download", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    before = peak_rss_bytes(worker)
    size = 96 * MB

    response, sent = upload_generated_file(base, token, size)
    assert response.status_code == 201, response.text
    after_upload = peak_rss_bytes(worker)
    _, received = download_sha256(base, token, response.json()["id"])
    after = peak_rss_bytes(worker)

    assert received == sent
    assert sorted(objects(bucket).values()) == [8000, size]
    print(
        f"worker peak RSS: before {before / MB:.0f} MiB, after upload {after_upload / MB:.0f} MiB, "
        f"after download {after / MB:.0f} MiB, file {size / MB:.0f} MiB"
    )
    # Parts of 5 MiB, 4 at a time: about 20 MiB of part buffers at most, never the file.
    assert after - before < 40 * MB


def test_a_tus_upload_finishes_into_the_bucket(server, bucket, token):
    if resolve("/api/uploads/").url_name == "unknown-endpoint":
        pytest.skip("the tus endpoints (issue 10) are not routed on this branch yet")
    base = server.base
    data = os.urandom(6 * MB + 123)
    tus = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    created = requests.post(
        f"{base}/api/uploads/",
        headers={
            **tus,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": f"filename {base64.b64encode(b'tus.bin').decode()}",
        },
        timeout=30,
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    offset = 0
    for piece in (data[: 4 * MB], data[4 * MB :]):  # two PATCHes, the last one finishes the upload
        patched = requests.patch(
            location,
            data=piece,
            headers={**tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
            timeout=60,
        )
        assert patched.status_code == 204, patched.text
        offset = int(patched.headers["Upload-Offset"])
    assert offset == len(data)

    file_id = location.rstrip("/").rsplit("/", 1)[1]
    assert list(objects(bucket).values()) == [len(data)]
    download, received = download_sha256(base, token, file_id)
    assert download.status_code == 200
    assert received == hashlib.sha256(data).hexdigest() == download.headers["X-Checksum-SHA256"]
    assert staged_files(server.media) == []
