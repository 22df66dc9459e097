"""The TTL lifecycle with time moved forward: expiring, expired, cleaned; crashes; concurrent runs."""

from __future__ import annotations

import errno
import logging
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from common.outbox.models import OutboxEvent
from portal.models import UploadFile
from portal.services import lifecycle
from portal.services.errors import UploadRejected
from portal.services.file_access import open_for_download
from portal.services.removal import staging_path
from portal.services.staged_uploads import begin_upload
from portal.tasks import cleanup_expired_upload_files_task
from tests.portal.conftest import events, files_on_disk

HOUR = timedelta(hours=1)


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def store(client, alice, media_root):
    """Upload a file through the API; returns its row."""
    _, token = alice

    def store(name="a.txt", ttl_hours=None) -> UploadFile:
        data = {"file": SimpleUploadedFile(name, f"contents of {name}\n".encode())}
        if ttl_hours:
            data["ttl_hours"] = str(ttl_hours)
        response = client.post("/api/files", data, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 201, response.content
        return UploadFile.objects.get(pk=response.json()["id"])

    return store


def types_for(upload) -> list[str]:
    return [e.event_type for e in OutboxEvent.objects.filter(aggregate_id=str(upload.id)).order_by("created_at")]


@pytest.mark.django_db
def test_expiring_then_expired_then_cleaned_with_disk_emptied(store, alice, media_root):
    upload = store("report.txt")
    t0 = upload.created_at
    assert len(files_on_disk(media_root / "uploads")) == 1

    assert lifecycle.notify_expiring_files(now=t0 + 22 * HOUR) == {"notified": 0, "skipped": 0}
    assert lifecycle.notify_expiring_files(now=t0 + 23 * HOUR + timedelta(minutes=1)) == {"notified": 1, "skipped": 0}
    assert lifecycle.notify_expiring_files(now=t0 + 23 * HOUR + timedelta(minutes=30)) == {"notified": 0, "skipped": 0}
    (expiring,) = events("file.expiring")
    assert expiring.payload == {
        "id": str(upload.id),
        "name": "report.txt",
        "type": "text/plain",
        "size": upload.size_bytes,
        "sha256": upload.sha256,
        "expires_at": upload.expires_at.isoformat(),
    }
    # Still served inside the window; refused with 410 the moment it expires, before any cleanup.
    _, handle = open_for_download(owner=alice[0], file_id=upload.id, now=t0 + 23 * HOUR + timedelta(minutes=59))
    handle.close()
    with pytest.raises(UploadRejected) as refused:
        open_for_download(owner=alice[0], file_id=upload.id, now=upload.expires_at)
    assert refused.value.status == 410

    assert lifecycle.cleanup_expired_uploads(now=upload.expires_at - timedelta(seconds=1)) == {
        "deleted": 0,
        "remaining": 0,
    }
    assert lifecycle.cleanup_expired_uploads(now=upload.expires_at + timedelta(seconds=1)) == {
        "deleted": 1,
        "remaining": 0,
    }
    assert not UploadFile.objects.filter(pk=upload.pk).exists()
    assert files_on_disk(media_root) == []
    assert types_for(upload) == ["file.stored", "file.expiring", "file.expired"]
    assert events("file.expired")[0].payload == expiring.payload


@pytest.mark.django_db
def test_notice_exactly_once_even_after_outbox_retention_and_for_files_first_seen_late(store):
    in_window_at_birth = store("short.txt", ttl_hours=1)  # already inside the 1 h window when first seen
    seen_after_expiry = store("late.txt", ttl_hours=2)
    now = in_window_at_birth.created_at
    assert lifecycle.notify_expiring_files(now=now)["notified"] == 1
    OutboxEvent.objects.all().delete()  # retention removed every event
    assert lifecycle.notify_expiring_files(now=now + timedelta(minutes=30))["notified"] == 0
    # The notify task ran late: the second file is already past expires_at, and still gets its one notice.
    late = seen_after_expiry.expires_at + timedelta(minutes=5)
    assert lifecycle.notify_expiring_files(now=late) == {"notified": 1, "skipped": 0}
    assert lifecycle.notify_expiring_files(now=late) == {"notified": 0, "skipped": 0}
    assert lifecycle.cleanup_expired_uploads(now=late) == {"deleted": 2, "remaining": 0}
    assert types_for(in_window_at_birth) == ["file.expired"]  # its notice was pruned, and not re-sent
    assert types_for(seen_after_expiry) == ["file.expiring", "file.expired"]


@pytest.mark.django_db
def test_cleanup_that_runs_before_any_notice_still_gives_one_notice_first(store):
    upload = store("never-noticed.txt")
    assert lifecycle.cleanup_expired_uploads(now=upload.expires_at)["deleted"] == 1
    assert types_for(upload) == ["file.stored", "file.expiring", "file.expired"]


class WorkerKilled(BaseException):
    """The process dying mid-run (not an error a run could catch and record)."""


@pytest.mark.django_db
def test_crash_between_deleting_bytes_and_finishing_the_row_is_completed_by_the_next_run(
    store, alice, media_root, monkeypatch
):
    upload = store("crash.txt")
    after = upload.expires_at + HOUR

    def crash(**kwargs):
        raise WorkerKilled

    with monkeypatch.context() as patched:
        patched.setattr(lifecycle, "finish_removed_upload", crash)
        with pytest.raises(WorkerKilled):
            lifecycle.cleanup_expired_uploads(now=after)
    # Marked (no longer served) and bytes gone, but the row and its event are not finished.
    upload.refresh_from_db()
    assert upload.status == UploadFile.Status.EXPIRED
    assert files_on_disk(media_root) == []
    with pytest.raises(UploadRejected):
        open_for_download(owner=alice[0], file_id=upload.id, now=upload.created_at)
    assert events("file.expired") == []

    assert lifecycle.cleanup_expired_uploads(now=after) == {"deleted": 1, "remaining": 0}
    assert not UploadFile.objects.filter(pk=upload.pk).exists()
    assert len(events("file.expired")) == 1
    assert lifecycle.cleanup_expired_uploads(now=after) == {"deleted": 0, "remaining": 0}
    assert len(events("file.expired")) == 1


@pytest.mark.django_db
def test_crash_after_marking_before_deleting_bytes(store, media_root, monkeypatch):
    upload = store("crash2.txt")
    after = upload.expires_at + HOUR
    with monkeypatch.context() as patched:
        patched.setattr(lifecycle, "delete_upload_bytes", lambda **kw: (_ for _ in ()).throw(WorkerKilled()))
        with pytest.raises(WorkerKilled):
            lifecycle.cleanup_expired_uploads(now=after)
    assert UploadFile.objects.get(pk=upload.pk).status == UploadFile.Status.EXPIRED
    assert len(files_on_disk(media_root)) == 1
    assert lifecycle.cleanup_expired_uploads(now=after) == {"deleted": 1, "remaining": 0}
    assert files_on_disk(media_root) == [] and len(events("file.expired")) == 1


@pytest.mark.django_db
def test_a_file_that_cannot_be_deleted_is_skipped_logged_and_retried_without_blocking_newer_ones(
    store, alice, media_root, caplog
):
    stuck = store("stuck.txt", ttl_hours=1)  # expires first: the head of the queue
    other = store("other.txt", ttl_hours=2)
    after = other.expires_at + HOUR
    # A non-empty directory where its bytes should be: the storage's delete fails with a real OS error.
    stuck_path = media_root / "uploads" / stuck.storage_name
    stuck_path.unlink()
    stuck_path.mkdir()
    (stuck_path / "x").write_bytes(b"x")

    with caplog.at_level(logging.ERROR, logger="portal"):
        assert lifecycle.cleanup_expired_uploads(now=after) == {"deleted": 1, "remaining": 1}
    (failure,) = [r for r in caplog.records if getattr(r, "event", None) == "portal.removal_failed"]
    assert failure.upload_id == str(stuck.id) and failure.exc_info[1].errno == errno.ENOTEMPTY
    assert types_for(other) == ["file.stored", "file.expiring", "file.expired"]
    stuck.refresh_from_db()
    assert stuck.status == UploadFile.Status.EXPIRED and stuck.cleanup_failed_at == after
    assert "Directory not empty" in stuck.cleanup_error
    with pytest.raises(UploadRejected) as refused:  # marked: never served again
        open_for_download(owner=alice[0], file_id=stuck.id, now=stuck.created_at)
    assert refused.value.status == 410

    # A newer expired file is cleaned first, even in a batch of one: the failing row does not starve it.
    newer = store("newer.txt", ttl_hours=1)
    assert lifecycle.cleanup_expired_uploads(now=after + HOUR, limit=1) == {"deleted": 1, "remaining": 1}
    assert not UploadFile.objects.filter(pk=newer.pk).exists()
    # Still failing: retried, not counted as deleted, nothing emitted twice.
    assert lifecycle.cleanup_expired_uploads(now=after + HOUR) == {"deleted": 0, "remaining": 1}
    assert types_for(stuck) == ["file.stored"]

    # Once the cause is fixed, the next run finishes it with its one file.expired.
    (stuck_path / "x").unlink()
    stuck_path.rmdir()
    assert lifecycle.cleanup_expired_uploads(now=after + 2 * HOUR) == {"deleted": 1, "remaining": 0}
    assert types_for(stuck) == ["file.stored", "file.expiring", "file.expired"]
    assert files_on_disk(media_root) == []


@pytest.mark.django_db
def test_stuck_uploading_is_removed_after_the_grace_period_without_events(alice, media_root, settings):
    settings.FILE_UPLOAD_UPLOADING_GRACE_HOURS = 2
    stuck = begin_upload(owner=alice[0], original_filename="half.bin")
    part = staging_path(upload_id=stuck.id)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half of a file")
    assert lifecycle.cleanup_expired_uploads(now=stuck.created_at + HOUR) == {"deleted": 0, "remaining": 0}
    assert part.exists()
    assert lifecycle.cleanup_expired_uploads(now=stuck.created_at + 2 * HOUR) == {"deleted": 1, "remaining": 0}
    assert not part.exists() and not UploadFile.objects.filter(pk=stuck.pk).exists()
    assert events() == []


@pytest.mark.django_db(transaction=True)
def test_batches_of_at_most_the_limit_and_the_task_re_enqueues_itself(store, settings, clean_broker):
    settings.CLEANUP_UPLOADS_BATCH_SIZE = 2
    for i in range(5):
        store(f"{i}.txt", ttl_hours=1)
    UploadFile.objects.update(expires_at=UploadFile.objects.first().created_at - HOUR)
    result = cleanup_expired_upload_files_task.apply().get()
    assert result == {"deleted": 2, "remaining": 3}
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM kombu_message WHERE visible")
        queued = [row[0] for row in cursor.fetchall()]
    assert len(queued) == 1 and "portal.tasks.cleanup_expired_upload_files_task" in queued[0]
    assert cleanup_expired_upload_files_task.apply().get() == {"deleted": 2, "remaining": 1}
    assert cleanup_expired_upload_files_task.apply().get() == {"deleted": 1, "remaining": 0}
    assert UploadFile.objects.count() == 0 and len(events("file.expired")) == 5


def run_concurrently(target, count=2):
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(target())
        except Exception as exc:  # reported below, with the other thread's outcome
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return results


@pytest.mark.django_db(transaction=True)
def test_two_notify_runs_and_two_cleanup_runs_at_once_give_no_double_events(store, settings, media_root):
    settings.CLEANUP_UPLOADS_BATCH_SIZE = 7  # several batches each, so the runs interleave
    uploads = [store(f"{i}.txt") for i in range(40)]
    later = max(u.expires_at for u in uploads) - timedelta(minutes=30)

    notified = run_concurrently(lambda: lifecycle.notify_expiring_files(now=later))
    assert sum(r["notified"] for r in notified) == 40
    assert len(events("file.expiring")) == 40
    assert UploadFile.objects.filter(expiry_notified_at__isnull=True).count() == 0

    cleaned = run_concurrently(lambda: lifecycle.cleanup_expired_uploads(now=later + HOUR))
    # Each run stops at its batch; rerun until nothing remains, as the re-enqueued task would.
    total = sum(r["deleted"] for r in cleaned)
    while UploadFile.objects.exists():
        total += sum(
            r["deleted"] for r in run_concurrently(lambda: lifecycle.cleanup_expired_uploads(now=later + HOUR))
        )
    assert total == 40
    expired = events("file.expired")
    assert len(expired) == 40 and len({e.aggregate_id for e in expired}) == 40
    assert len(events("file.expiring")) == 40
    assert files_on_disk(media_root) == []
