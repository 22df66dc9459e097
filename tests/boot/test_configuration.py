"""Every documented environment variable changes its setting; malformed values fail by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from django.conf import settings

from tests.processes import PROJECT_DIR

DOC = PROJECT_DIR / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| .*? \| `([^`]*)` \|", re.MULTILINE)
# A variable sets the setting of the same name, except these (Django's own keep their DJANGO_ prefix).
SETTING_OF = {
    "DATABASE_URL": "DATABASES",
    "CELERY_DEFAULT_QUEUE": "CELERY_TASK_DEFAULT_QUEUE",
    # django-structlog's own setting names, which start with DJANGO_.
    "DJANGO_STRUCTLOG_CELERY_ENABLED": "DJANGO_STRUCTLOG_CELERY_ENABLED",
    "DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID": "DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID",
}


def documented() -> list[tuple[str, str]]:
    return ROW.findall(DOC.read_text())


def setting_of(variable: str) -> str:
    return SETTING_OF.get(variable, variable.removeprefix("DJANGO_"))


def run_probe(pairs, **env) -> dict:
    clean = {
        k: v
        for k, v in __import__("os").environ.items()
        if k not in {v for v, _ in documented()} and not k.startswith("PYTEST")
    }
    # Prod needs these; the database URL is only parsed, never connected to.
    clean.update(
        {
            "DJANGO_SECRET_KEY": "baseline-secret",
            "DJANGO_ALLOWED_HOSTS": "baseline.example",
            "DATABASE_URL": "postgresql://probe@127.0.0.1:5432/probe",
        },
        **env,
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.boot.settings_probe", json.dumps(pairs)],
        cwd=PROJECT_DIR,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_docs_and_env_example_list_the_same_variables():
    in_docs = {v for v, _ in documented()}
    in_example = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (PROJECT_DIR / ".env.example").read_text(), re.M))
    assert len(in_docs) >= 10
    assert in_docs == in_example


# Variables whose example value needs another variable set to start at all.
COMPANIONS = {"FILE_STORAGE_BACKEND": {"FILE_STORAGE_S3_BUCKET": "doorito-files"}}


def test_each_documented_variable_changes_its_setting():
    pairs = documented()
    report = run_probe([(v, value, COMPANIONS.get(v, {})) for v, value in pairs])
    baseline = report[""]
    unchanged = [v for v, _ in pairs if report[v][setting_of(v)] == baseline[setting_of(v)]]
    assert unchanged == [], f"setting these variables changed nothing: {unchanged}"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CELERY_TASK_TIME_LIMIT": "abc"}, "CELERY_TASK_TIME_LIMIT"),
        ({"CELERY_RESULT_EXPIRES": "-5"}, "CELERY_RESULT_EXPIRES"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DATABASE_URL": "mysql://root@127.0.0.1/doorito"}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"CELERY_TASK_SOFT_TIME_LIMIT": "400"}, "CELERY_TASK_SOFT_TIME_LIMIT"),
        ({"BROKER_CLAIM_BATCH": "0"}, "BROKER_CLAIM_BATCH"),
        ({"BROKER_CLEANUP_INTERVAL": "0"}, "BROKER_CLEANUP_INTERVAL"),
        ({"BROKER_RESCUE_GRACE": "0.5"}, "BROKER_RESCUE_GRACE"),
        ({"OUTBOX_CLEANUP_INTERVAL_HOURS": "25"}, "OUTBOX_CLEANUP_INTERVAL_HOURS"),
        ({"FILE_UPLOAD_EXPIRY_NOTIFY_INTERVAL_MINUTES": "7"}, "FILE_UPLOAD_EXPIRY_NOTIFY_INTERVAL_MINUTES"),
        ({"BROKER_TRANSPORT_CLASS": "nope.mod:Transport"}, "BROKER_TRANSPORT_CLASS"),
        ({"BROKER_TRANSPORT_CLASS": "kombu.connection:Connection"}, "BROKER_TRANSPORT_CLASS"),
        ({"FILE_STORAGE_BACKEND": "gcs"}, "FILE_STORAGE_BACKEND"),
        ({"FILE_STORAGE_BACKEND": "s3"}, "FILE_STORAGE_S3_BUCKET"),
        (
            {"FILE_STORAGE_BACKEND": "s3", "FILE_STORAGE_S3_BUCKET": "b", "FILE_STORAGE_S3_PART_SIZE": "1024"},
            "FILE_STORAGE_S3_PART_SIZE",
        ),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "check"],
        ["-m", "celery", "-A", "boot", "report"],
        # gunicorn halts ("Worker failed to boot") instead of restarting the worker forever.
        ["-m", "gunicorn", "boot.wsgi", "--bind", "127.0.0.1:0", "--no-control-socket", "--timeout", "20"],
    ],
)
def test_malformed_value_fails_at_start_naming_the_variable(env, variable, command):
    assert_start_fails_naming(variable, env=env, command=command)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OUTBOX_DELIVERY_CONCURRENCY": "0"}, "OUTBOX_DELIVERY_CONCURRENCY"),
        ({"OUTBOX_BATCH_SIZE": "0"}, "OUTBOX_BATCH_SIZE"),
        ({"WEBHOOK_CONNECT_TIMEOUT": "0"}, "WEBHOOK_CONNECT_TIMEOUT"),
        ({"WEBHOOK_READ_TIMEOUT": "-1"}, "WEBHOOK_READ_TIMEOUT"),
        ({"WEBHOOK_READ_TIMEOUT": "nan"}, "WEBHOOK_READ_TIMEOUT"),
        ({"OUTBOX_DELIVER_SOFT_TIME_LIMIT": "20"}, "OUTBOX_DELIVER_SOFT_TIME_LIMIT"),
        # Renamed: the old name would otherwise be ignored silently.
        ({"OUTBOX_CLEANUP_INTERVAL_SECONDS": "3600"}, "OUTBOX_CLEANUP_INTERVAL_HOURS"),
    ],
)
def test_outbox_settings_that_cannot_work_fail_at_start_naming_the_variable(env, variable):
    assert_start_fails_naming(variable, env=env, command=["manage.py", "check"])


def assert_start_fails_naming(variable: str, *, env: dict, command: list[str]) -> None:
    """Starting `command` with `env` fails with the variable's name and no traceback."""
    result = subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT_DIR,
        env={**__import__("os").environ, "DJANGO_CONFIGURATION": "Dev", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DJANGO_ALLOWED_HOSTS": "x.example", "DATABASE_URL": "postgresql://u@db/d"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "s", "DATABASE_URL": "postgresql://u@db/d"}, "DJANGO_ALLOWED_HOSTS"),
        # Never the embedded server in production: its data would live on the app's disk.
        ({"DJANGO_SECRET_KEY": "s", "DJANGO_ALLOWED_HOSTS": "x.example"}, "DATABASE_URL"),
    ],
)
def test_prod_refuses_to_start_without_required_variable(env, variable):
    required = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL")
    base = {k: v for k, v in __import__("os").environ.items() if k not in required}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env={**base, "DJANGO_CONFIGURATION": "Prod", **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0]


def test_prod_is_secure():
    report = run_probe([])[""]
    assert report["SESSION_COOKIE_SECURE"] == "True"
    assert report["CSRF_COOKIE_SECURE"] == "True"
    assert report["SECURE_SSL_REDIRECT"] == "True"
    assert int(report["SECURE_HSTS_SECONDS"]) > 0
    # Probes come over plain HTTP from load balancers: they must not be redirected.
    assert report["SECURE_REDIRECT_EXEMPT"] == repr([r"^healthz$", r"^readyz$"])


def test_wsgi_refuses_to_serve_an_unchosen_configuration():
    env = {k: v for k, v in __import__("os").environ.items() if k != "DJANGO_CONFIGURATION"}
    result = subprocess.run(
        [sys.executable, "-c", "import boot.wsgi"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "set DJANGO_CONFIGURATION" in result.stderr


def test_broker_is_the_same_postgres_database():
    report = run_probe([], DATABASE_URL="postgresql://app:s%40cret@db.example.com:5433/appdb")[""]
    assert report["CELERY_BROKER_URL"] == repr("sqla+postgresql+psycopg://app:s%40cret@db.example.com:5433/appdb")
    assert settings.CELERY_BROKER_URL.startswith("sqla+postgresql+psycopg://")
    # django-celery-results' django-db backend, subclassed for a batched cleanup.
    assert settings.CELERY_RESULT_BACKEND == "common.monitoring.result_backend:BatchedCleanupDatabaseBackend"
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"


def test_serialization_json_only_utc_and_started_tracking():
    from boot.celery import app

    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert app.conf.timezone == "UTC" and app.conf.enable_utc
    assert app.conf.task_track_started is True
    assert app.conf.task_time_limit == 300 and app.conf.task_soft_time_limit == 240


def test_dev_and_test_run_tasks_eagerly_and_propagate_errors():
    report = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "--no-imports",
            "-c",
            "from django.conf import settings as s; "
            "print(s.CELERY_TASK_ALWAYS_EAGER, s.CELERY_TASK_EAGER_PROPAGATES, s.DEBUG)",
        ],
        cwd=PROJECT_DIR,
        env={**__import__("os").environ, "DJANGO_CONFIGURATION": "Dev"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert report.stdout.split() == ["True", "True", "True"]
    # Test runs tasks inline and propagates their errors; tests that start real workers opt out.
    assert settings.CELERY_TASK_ALWAYS_EAGER is True and settings.CELERY_TASK_EAGER_PROPAGATES is True
