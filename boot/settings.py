"""Doorito settings as django-configurations classes: Base, Dev, Test, Prod.

Every tunable reads exactly one environment variable of the same name (the
Django core ones keep their conventional DJANGO_ prefix, e.g. DJANGO_DEBUG).
docs/configuration.md lists them all; tests/boot/test_configuration.py proves each
one takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from configurations import Configuration
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from boot.env import Env, EnvBool, EnvFloat, EnvInt, EnvList, setting
from common.app_conf import resolve_default_queue
from common.broker import conf as broker_conf
from common.monitoring import conf as monitoring_conf
from common.outbox import conf as outbox_conf
from portal import conf as portal_conf

BASE_DIR = Path(__file__).resolve().parent.parent

# Variables that changed name: {old: what to set instead}. Start-up refuses the old name.
RENAMED_VARIABLES = {
    "OUTBOX_CLEANUP_INTERVAL_SECONDS": "OUTBOX_CLEANUP_INTERVAL_HOURS (hours between cleanups, run at :30)",
}


class Base(Configuration):
    # --- Django core -------------------------------------------------------
    SECRET_KEY = Env("dev-insecure-secret-key-change-me")  # DJANGO_SECRET_KEY
    DEBUG = EnvBool(False)  # DJANGO_DEBUG
    ALLOWED_HOSTS = EnvList(["localhost", "127.0.0.1", "[::1]"])  # DJANGO_ALLOWED_HOSTS

    # Unset means: start and use the embedded, project-local PostgreSQL.
    DATABASE_URL = setting(Env, None)
    DATABASE_CONN_MAX_AGE = setting(EnvInt, 60)

    INSTALLED_APPS = [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "django_celery_results",
        "django_celery_beat",
        "django_structlog",
        "common.outbox",
        "common.broker",
        "common.monitoring",
        "portal",
    ]
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        # Static files (Uppy's vendored bundle, the stylesheet) straight from the WSGI app, also in Prod.
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        # After authentication, so web logs carry user_id as well as request_id.
        "django_structlog.middlewares.RequestMiddleware",
        "common.monitoring.request_id.RequestIdHeaderMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "csp.middleware.CSPMiddleware",
    ]
    # Only the app's own scripts and styles; blob:/data: images are Uppy's thumbnails and icons.
    CONTENT_SECURITY_POLICY = {
        "DIRECTIVES": {
            "default-src": [SELF],
            "script-src": [SELF],
            "style-src": [SELF],
            "img-src": [SELF, "data:", "blob:"],
            "connect-src": [SELF],
            "worker-src": [SELF],
            "object-src": [NONE],
            "base-uri": [SELF],
            "form-action": [SELF],
            "frame-ancestors": [NONE],
        }
    }
    X_FRAME_OPTIONS = "DENY"
    SESSION_COOKIE_HTTPONLY = True
    LOGIN_URL = "login"
    LOGIN_REDIRECT_URL = "files"
    LOGOUT_REDIRECT_URL = "login"
    ROOT_URLCONF = "boot.urls"
    WSGI_APPLICATION = "boot.wsgi.application"
    TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [],
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ]
    DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
    LANGUAGE_CODE = "en-us"
    TIME_ZONE = "UTC"
    USE_TZ = True
    STATIC_URL = "static/"
    # Dev and Test serve static files from the apps' folders; Prod from STATIC_ROOT after collectstatic.
    STATIC_ROOT: Path | None = None
    WHITENOISE_USE_FINDERS = True
    STATICFILES_BACKEND = "django.contrib.staticfiles.storage.StaticFilesStorage"

    # --- Celery (namespace CELERY_) ------------------------------------------
    # Unset means: the same PostgreSQL database as DATABASE_URL (kombu_message table).
    CELERY_BROKER_URL = setting(Env, None)
    # Redis as an option (pip install -e '.[redis]'): with CELERY_BROKER_URL unset, the broker is this server's
    # database 1. Unset: PostgreSQL stays the broker.
    REDIS_URL = setting(Env, None)
    # django-celery-results' database backend, with a batched cleanup (common.monitoring).
    CELERY_RESULT_BACKEND = setting(Env, "common.monitoring.result_backend:BatchedCleanupDatabaseBackend")
    CELERY_TASK_ALWAYS_EAGER = setting(EnvBool, False)
    CELERY_TASK_EAGER_PROPAGATES = True
    CELERY_TASK_TIME_LIMIT = setting(EnvInt, 300)
    CELERY_TASK_SOFT_TIME_LIMIT = setting(EnvInt, 240)
    CELERY_RESULT_EXPIRES = setting(EnvInt, 86400)  # seconds
    CELERY_RESULT_EXTENDED = True
    CELERY_ACCEPT_CONTENT = ["json"]
    CELERY_TASK_SERIALIZER = "json"
    CELERY_RESULT_SERIALIZER = "json"
    CELERY_TIMEZONE = "UTC"
    CELERY_ENABLE_UTC = True
    CELERY_TASK_TRACK_STARTED = True
    CELERY_WORKER_HIJACK_ROOT_LOGGER = False
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    # Where every task routed to "default" (and every unrouted one) goes. CELERY_DEFAULT_QUEUE is the
    # same switch under its older name (the Redis runtime's table); common/app_conf.py reconciles the two.
    CELERY_TASK_DEFAULT_QUEUE = setting(Env, "default")
    CELERY_DEFAULT_QUEUE = setting(Env, None)
    # One direct exchange per queue, so a message routed to one queue never lands in the other.
    # Declared by common.app_conf.resolve_default_queue, once the default queue's name is known.
    CELERY_TASK_QUEUES: tuple = ()
    # Each app's conf.py routes its own tasks; anything not routed goes to CELERY_TASK_DEFAULT_QUEUE.
    CELERY_TASK_ROUTES: dict = {}
    CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
    CELERY_BEAT_SCHEDULE: dict = {}

    # --- Broker transport (common.broker) -----------------------------------
    # Which kombu transport class serves sqla+postgresql+psycopg:// broker URLs.
    # kombu.transport.sqlalchemy:Transport is the stock one (kept for comparisons).
    BROKER_TRANSPORT_CLASS = setting(Env, "common.broker.transport:Transport")
    # Seconds an unacked (in-flight) message stays invisible without its consumer renewing
    # its lease before it is delivered again: must exceed CELERY_TASK_TIME_LIMIT.
    # Unset means: CELERY_TASK_TIME_LIMIT + 60.
    BROKER_VISIBILITY_TIMEOUT = setting(EnvInt, None)
    # Fallback poll (seconds) when no NOTIFY arrives; wake-ups normally come by LISTEN/NOTIFY.
    BROKER_POLLING_INTERVAL = setting(EnvFloat, 5.0)
    # Most messages one claim round trip takes (never more than the worker's free prefetch slots).
    BROKER_CLAIM_BATCH = setting(EnvInt, 8)
    # Seconds between a worker's rescue passes: each returns the messages of consumers whose database
    # session is gone (a killed worker) and picks up broker_cancel marks.
    BROKER_RESCUE_INTERVAL = setting(EnvFloat, 1.0)
    # Seconds a dead consumer's message waits before it is ready again (a live one re-owns its messages
    # within one rescue interval after a reconnect): must exceed BROKER_RESCUE_INTERVAL.
    BROKER_RESCUE_GRACE = setting(EnvFloat, 2.0)
    # Seconds after PostgreSQL starts during which no message is rescued: every worker is reconnecting.
    BROKER_RESCUE_AFTER_RESTART = setting(EnvFloat, 30.0)
    # Dead tuples in kombu_message past which a worker runs VACUUM on it (0: autovacuum only).
    BROKER_VACUUM_THRESHOLD = setting(EnvInt, 1000)
    # MB (table + indexes) past which a mostly empty kombu_message is compacted by VACUUM FULL (0: never).
    BROKER_COMPACT_ABOVE_MB = setting(EnvInt, 8)
    # Seconds a process trusts what it read of the event/heartbeat bindings (a new binding is announced at once).
    BROKER_BINDING_CACHE_SECONDS = setting(EnvFloat, 30.0)
    # Seconds between runs of common.broker.tasks.cleanup_broker_messages_task.
    BROKER_CLEANUP_INTERVAL = setting(EnvInt, 3600)
    # Doorito's tasks ack after they run (at-least-once): see docs/tasks.md "Acknowledgement".
    CELERY_TASK_ACKS_LATE = True

    # --- Outbox and webhooks (common.outbox) ----------------------------------------
    # Seconds to wait before retry n (after attempt n); after the last one the delivery is `failed`.
    OUTBOX_RETRY_SCHEDULE = setting(EnvList, ["5", "300", "1800", "7200", "18000", "36000", "36000"])
    OUTBOX_RETRY_JITTER = setting(EnvFloat, 0.2)  # each delay is scaled by a random factor in [1-j, 1+j]
    WEBHOOK_CONNECT_TIMEOUT = setting(EnvFloat, 5.0)
    WEBHOOK_READ_TIMEOUT = setting(EnvFloat, 15.0)
    WEBHOOK_RESPONSE_BODY_LIMIT = setting(EnvInt, 4096)  # bytes of the response kept in the attempt log
    # A claimed delivery is redelivered (same webhook-id) if its dispatcher has not finished within this.
    OUTBOX_LEASE_SECONDS = setting(EnvInt, 60)
    OUTBOX_BATCH_SIZE = setting(EnvInt, 500)  # deliveries per deliver_outbox_events_task run
    OUTBOX_DELIVERY_CONCURRENCY = setting(EnvInt, 8)  # parallel HTTP requests per dispatcher
    OUTBOX_CLAIM_ROUNDS = setting(EnvInt, 4)  # one claim leases CONCURRENCY x this many deliveries
    OUTBOX_DELIVER_SOFT_TIME_LIMIT = setting(EnvInt, 120)
    # The safety net for lost nudges and retries falling due: the transactional nudge is the fast path.
    OUTBOX_SWEEP_INTERVAL_SECONDS = setting(EnvInt, 300)
    OUTBOX_CLEANUP_INTERVAL_HOURS = setting(EnvInt, 6)  # crontab at :30 every this many hours (1-24)
    OUTBOX_RETENTION_HOURS = setting(EnvInt, 168)
    WEBHOOK_DISABLE_AFTER_SECONDS = setting(EnvInt, 5 * 24 * 3600)  # failing this long disables an endpoint
    WEBHOOK_SECRET_ROTATION_GRACE_SECONDS = setting(EnvInt, 24 * 3600)
    # CIDRs exempt from the SSRF guard (loopback, private, link-local... are refused otherwise).
    WEBHOOK_ALLOWED_NETWORKS = setting(EnvList, [])

    # --- Portal uploads (portal) ---------------------------------------------
    # Uploads live under MEDIA_ROOT/uploads, which no URL serves: downloads go through the API.
    MEDIA_ROOT = Env(str(BASE_DIR / "media"))  # DJANGO_MEDIA_ROOT
    # Where an upload is written while it streams in; keep it on the same disk as the storage
    # so that finishing an upload is a rename. Unset: MEDIA_ROOT/incoming.
    FILE_UPLOAD_STAGING_DIR = setting(Env, None)
    FILE_UPLOAD_TTL_HOURS = setting(EnvInt, 24)
    FILE_UPLOAD_MAX_TTL_HOURS = setting(EnvInt, 168)
    FILE_UPLOAD_MAX_SIZE = setting(EnvInt, 2 * 1024**3)  # bytes
    # Empty: any type. Otherwise the content-sniffed type must be listed.
    FILE_UPLOAD_ALLOWED_TYPES = setting(EnvList, [])
    FILE_UPLOAD_MAX_NAME_LENGTH = setting(EnvInt, 255)
    FILE_UPLOAD_CHUNK_SIZE = setting(EnvInt, 256 * 1024)  # bytes read per step while streaming
    # An upload still `uploading` (or `failed`) this long after it began is cleaned up.
    FILE_UPLOAD_UPLOADING_GRACE_HOURS = setting(EnvInt, 6)
    FILE_UPLOAD_EXPIRY_NOTIFY_HOURS = setting(EnvInt, 1)
    FILE_UPLOAD_EXPIRY_NOTIFY_INTERVAL_MINUTES = setting(EnvInt, 60)  # a divisor of 60: crontab minute */n
    FILE_UPLOAD_PAGE_SIZE = setting(EnvInt, 50)
    # tus (resumable) uploads: an unfinished one expires this long after its last PATCH.
    FILE_UPLOAD_RESUMABLE_EXPIRY_HOURS = setting(EnvInt, 24)
    # Unfinished tus uploads (partial ones included) one user may have at a time.
    FILE_UPLOAD_MAX_ACTIVE_UPLOADS = setting(EnvInt, 20)
    # A long PATCH commits its offset (after an fsync) every this many bytes, so a crash loses at most that.
    FILE_UPLOAD_RESUMABLE_CHECKPOINT_BYTES = setting(EnvInt, 64 * 1024 * 1024)
    CLEANUP_UPLOADS_INTERVAL_HOURS = setting(EnvInt, 6)
    CLEANUP_UPLOADS_BATCH_SIZE = setting(EnvInt, 1000)
    # Where stored files live: "local" (MEDIA_ROOT/uploads) or "s3" (an S3-compatible bucket, via django-storages).
    FILE_STORAGE_BACKEND = setting(Env, "local")
    FILE_STORAGE_S3_BUCKET = setting(Env, None)
    FILE_STORAGE_S3_ENDPOINT_URL = setting(Env, None)  # unset: AWS; else MinIO, Ceph, R2... (http(s)://host:port)
    FILE_STORAGE_S3_REGION = setting(Env, None)
    # Unset: boto3's own chain (AWS_* environment, shared config, instance or task role).
    FILE_STORAGE_S3_ACCESS_KEY_ID = setting(Env, None)
    FILE_STORAGE_S3_SECRET_ACCESS_KEY = setting(Env, None)
    FILE_STORAGE_S3_PREFIX = setting(Env, "")  # key prefix inside the bucket, e.g. "doorito/"
    FILE_STORAGE_S3_ADDRESSING_STYLE = setting(Env, "auto")  # "auto", "path" (most S3-compatibles) or "virtual"
    # Multipart part size (S3's minimum is 5 MiB); memory per finishing upload is about this x the concurrency.
    FILE_STORAGE_S3_PART_SIZE = setting(EnvInt, 8 * 1024 * 1024)
    FILE_STORAGE_S3_CONCURRENCY = setting(EnvInt, 4)  # parts sent in parallel per upload
    FILE_STORAGE_S3_MAX_ATTEMPTS = setting(EnvInt, 3)  # per S3 request, retries included
    FILE_STORAGE_S3_TIMEOUT = setting(EnvFloat, 30.0)  # seconds, connect and read, per S3 request

    # --- Operations (common.monitoring) --------------------------------------
    # A standby beat takes over at most this many seconds after the leader dies (even by kill -9
    # or a vanished host: the leader's lock session uses TCP keepalives scaled to this).
    BEAT_TAKEOVER_TIMEOUT = setting(EnvInt, 15)
    # Workers refresh their heartbeat row, and beat its tick row, at most this often (seconds).
    MONITORING_HEARTBEAT_INTERVAL = setting(EnvInt, 10)
    WORKER_STALE_AFTER = setting(EnvInt, 60)  # seconds without a heartbeat before a worker counts as stale
    BEAT_STALE_AFTER = setting(EnvInt, 60)  # seconds without a leader tick before beat counts as stale
    MONITORING_RETENTION = setting(EnvInt, 7 * 86400)  # rows of stopped/vanished processes kept this long
    QUEUE_AGE_ALARM = setting(EnvInt, 300)  # oldest ready message older than this (seconds) raises an alarm
    # A transaction holding back the xmin horizon longer than this (seconds) raises an alarm: VACUUM cannot
    # clean consumed messages meanwhile.
    XMIN_HORIZON_ALARM_SECONDS = setting(EnvInt, 300)
    LOG_FORMAT = setting(Env, "text")  # "text" (human-readable) or "json" (one object per line)
    RESULT_CLEANUP_INTERVAL = setting(EnvInt, 3600)  # seconds between beat-scheduled celery.backend_cleanup
    RESULT_CLEANUP_BATCH_SIZE = setting(EnvInt, 1000)  # results deleted per transaction
    # Bearer token Prometheus sends to GET /metrics; unset means the endpoint is disabled (404).
    METRICS_TOKEN = setting(Env, None)

    # django-structlog: task logs carry the request id of the web request (or task) that sent them, and
    # its task_started/task_succeeded/task_failed events; the worker needs its boot step (boot/celery.py).
    DJANGO_STRUCTLOG_CELERY_ENABLED = setting(EnvBool, True)
    # Log a web request under the X-Request-ID it arrived with (e.g. from the proxy), not a new one.
    DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = setting(EnvBool, True)
    # LOGGING is built from LOG_FORMAT by common.monitoring.conf (common.monitoring.structured_logging).

    @classmethod
    def setup(cls) -> None:
        super().setup()
        for variable, setting_name in cls.REQUIRED_VARIABLES.items():
            if not getattr(cls, setting_name):
                raise ImproperlyConfigured(f"{variable} must be set in the {cls.__name__} configuration")
        for old, new in RENAMED_VARIABLES.items():
            # A renamed variable left in an environment would otherwise be ignored without a word.
            if old in os.environ:
                raise ImproperlyConfigured(f"{old} was renamed: set {new} instead")
        cls.DATABASES = {"default": cls._database()}
        resolve_default_queue(cls)  # before any app routes a task to it
        # Each app owns its settings' invariants, beat entries and task routes.
        outbox_conf.configure(cls)
        broker_conf.configure(cls)
        portal_conf.configure(cls)
        monitoring_conf.configure(cls)
        if cls.CELERY_TASK_SOFT_TIME_LIMIT >= cls.CELERY_TASK_TIME_LIMIT:
            raise ImproperlyConfigured(
                "CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT "
                f"({cls.CELERY_TASK_SOFT_TIME_LIMIT} >= {cls.CELERY_TASK_TIME_LIMIT})"
            )

    # Variables a configuration refuses to start without: {variable: setting}.
    REQUIRED_VARIABLES: dict = {}

    @classmethod
    def _database(cls) -> dict[str, Any]:
        url = cls.DATABASE_URL
        if not url:
            from common.embedded_postgres import EmbeddedPostgres

            url = EmbeddedPostgres().start()
        try:
            config = dj_database_url.parse(url, conn_max_age=cls.DATABASE_CONN_MAX_AGE, conn_health_checks=True)
        except ValueError as exc:
            raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
        if config["ENGINE"] != "django.db.backends.postgresql" or not config.get("NAME"):
            raise ImproperlyConfigured(
                f"DATABASE_URL: must be a PostgreSQL URL such as postgresql://user@host:5432/db, got {url!r}"
            )
        return dict(config)


class Dev(Base):
    DOTENV = BASE_DIR / ".env" if (BASE_DIR / ".env").exists() else None
    DEBUG = EnvBool(True)
    CELERY_TASK_ALWAYS_EAGER = setting(EnvBool, True)
    WEBHOOK_ALLOWED_NETWORKS = setting(EnvList, ["127.0.0.0/8", "::1/128"])  # local receivers


class Test(Base):
    SECRET_KEY = Env("test-secret-key")
    # Tasks run inline and their exceptions reach the test (CELERY_TASK_EAGER_PROPAGATES). Tests that
    # start real workers opt out: tests/conftest.py (clean_broker) and tests/processes.py (process_env).
    CELERY_TASK_ALWAYS_EAGER = setting(EnvBool, True)
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    WEBHOOK_ALLOWED_NETWORKS = setting(EnvList, ["127.0.0.0/8", "::1/128"])  # local receivers


class Prod(Base):
    SECRET_KEY = Env(None)
    ALLOWED_HOSTS = EnvList([])
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = setting(EnvBool, True)
    SECURE_HSTS_SECONDS = setting(EnvInt, 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # Hashed, compressed files collected by `collectstatic` (the release step), cached forever by browsers.
    STATIC_ROOT = BASE_DIR / "staticfiles"
    WHITENOISE_USE_FINDERS = False
    STATICFILES_BACKEND = "whitenoise.storage.CompressedManifestStaticFilesStorage"
    # Load balancers and orchestrators probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    # Production data never goes to the embedded server's local disk.
    REQUIRED_VARIABLES = {
        "DJANGO_SECRET_KEY": "SECRET_KEY",
        "DJANGO_ALLOWED_HOSTS": "ALLOWED_HOSTS",
        "DATABASE_URL": "DATABASE_URL",
    }
