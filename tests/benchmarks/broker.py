"""Broker benchmark: stock kombu SQLAlchemy transport vs Doorito's transport vs Redis vs RabbitMQ.

Run: .venv/bin/python -m tests.benchmarks.broker [--messages 3000] [--latency-messages 200]

Every broker is measured the same way, through a real `celery -A boot worker -c 2` (prefork) with the
project's settings (acks_late, prefetch multiplier 4) and a no-op task:
- enqueue/s: `--messages` publishes from this process through one Celery producer, no worker running;
- drain/s: then a worker starts; from its "ready." line until the queue holds no ready (and, where the
  broker can tell, no unacked) message;
- latency: `--latency-messages` tasks at ~20/s to the idle worker; each records start time - publish time;
- idle queries/s: 10 s of an idle worker: PostgreSQL transactions committed in the broker database
  (a database of its own, so app traffic is not counted), or Redis commands processed; RabbitMQ pushes;
- rows left: kombu_message rows after the drain (PostgreSQL brokers).
Redis (127.0.0.1:6379 db 15) and RabbitMQ (127.0.0.1:5672, guest) are skipped when unreachable.
--concurrency sets the worker's pool size (-c).
--producers 1 8 32 instead measures the enqueue rate of that many concurrent producer processes, then
threads of one process (each one connection, one publish per transaction, the transport's own
statements, for --seconds each) in five modes: the wake-up NOTIFY in the publishing transaction (the
insert trigger: stock producers, and this transport before migration 0005), by the process's waker thread
for every publish (this transport before migration 0008), on demand (this transport now: the INSERT returns
whether a consumer may be asleep) with no consumer asleep and with one asleep, and none (trigger disabled);
and the wake-up latency (publish returned -> notification received by a listener) of those that notify.
--profile (needs `pip install py-spy` in the venv; not a project dependency) samples the producer during
the enqueue and the worker (all its processes) during the drain, and prints the functions where most
samples were taken (own time, and including callees).
--waiting 10000 instead measures what that many countdown=3600 tasks cost a real worker while they wait:
its memory (RSS summed over all its processes) and the broker database's transactions per second, first
with none waiting, then with them all waiting (scheduled rows), in the same run.
--held-statements 60000 instead times the transport's claim (from the queue's start and after the claim
cursor), look-back and rescue pass after that many messages went through while a transaction holds the xmin.
--pressure runs the pressure mode instead (see pressure() below): a fixed offered rate through a clean phase,
a phase with one connection holding `BEGIN; SELECT txid_current();` open, and a recovery phase, for our
transport and for Procrastinate (installed into .bench/, never a project dependency) in the same run:
    python -m tests.benchmarks.broker --pressure [--rate 200] [--concurrency 4] [--clean-seconds 180]
        [--held-seconds 900] [--recovery-seconds 120] [--window-seconds 30] [--systems doorito procrastinate]
        [--warmup-seconds 20]  (after the first job ran, before the clock starts: the start-up backlog drains)
--peak runs the pressure mode's clean phase alone at a high offered rate (--rate, default 1000 jobs/s, from
--producer-processes forked publishers, default one per 400/s) for --clean-seconds (default 60) through our
transport, Redis and Procrastinate in the same run, and prints done/s per 10 s window, the median and the peak
(there each task records its start in a file of its worker process, not in the database: the jobs are as light
as the broker allows, so done/s measures the broker and its worker, not the task's own transaction):
    python -m tests.benchmarks.broker --peak [--rate 1000] [--concurrency 4] [--systems doorito redis procrastinate]
The databases doorito_bench_broker_app, doorito_bench_broker_queue (and, for --pressure,
doorito_bench_broker_procrastinate) on 127.0.0.1:5432 are recreated, each name followed by $BENCH_DB_SUFFIX
(if set, so concurrent runs do not share them).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PG = "postgresql://postgres@127.0.0.1:5432/"
SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")
APP_DB, QUEUE_DB = f"doorito_bench_broker_app{SUFFIX}", f"doorito_bench_broker_queue{SUFFIX}"
SQLA_URL = "sqla+postgresql+psycopg://postgres@127.0.0.1:5432/" + QUEUE_DB
REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
PROJECT_DIR = Path(__file__).resolve().parents[2]
QUEUE = "default"

BROKERS = {
    "stock sqla": {"CELERY_BROKER_URL": SQLA_URL, "BROKER_TRANSPORT_CLASS": "kombu.transport.sqlalchemy:Transport"},
    "doorito": {"CELERY_BROKER_URL": SQLA_URL, "BROKER_TRANSPORT_CLASS": "common.broker.transport:Transport"},
    "redis": {"CELERY_BROKER_URL": REDIS_URL},
    "rabbitmq": {"CELERY_BROKER_URL": AMQP_URL},
}


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def recreate(name: str) -> None:
    import psycopg

    with psycopg.connect(PG + "postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BROKER_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="boot.settings",
        DJANGO_CONFIGURATION="Test",
        DATABASE_URL=PG + APP_DB,
        CELERY_TASK_ALWAYS_EAGER="false",
        PYTHONPATH=str(PROJECT_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Subprocess:
    """A process in its own session, stopped with SIGTERM (then SIGKILL, for any child left) to its whole group."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self._file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.popen = subprocess.Popen(args, env=env, stdout=self._file, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=log.parent)  # fmt: skip

    def stop(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self._file.close()


class Worker(Subprocess):
    """A `celery -A boot worker` of the benchmark's tasks."""

    def __init__(self, env: dict, log_dir: Path, name: str, concurrency: int = 2, extra: tuple[str, ...] = ()) -> None:
        args = [str(Path(sys.executable).parent / "celery"), "-A", "boot", "worker", "-I",
                "tests.benchmarks.broker_tasks", "-Q", QUEUE, "-c", str(concurrency),
                "-n", f"bench-{time.time_ns()}@%h", "--loglevel", "WARNING", *extra]  # fmt: skip
        super().__init__(args, log_dir / f"{name.replace(' ', '_').replace('/', '_')}.log", env)


class Probe:
    """Broker-side views: outstanding messages, idle query counter, leftover rows."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pg = None

    def outstanding(self) -> int:
        if self.name in ("stock sqla", "doorito"):
            if self._pg is None:
                import psycopg

                self._pg = psycopg.connect(PG + QUEUE_DB, autocommit=True)
            # Stock never deletes: only its ready rows count. Ours deletes on ack: every row counts.
            where = "visible" if self.name == "stock sqla" else "TRUE"
            return self._pg.execute(f"SELECT count(*) FROM kombu_message WHERE {where}").fetchone()[0]
        if self.name == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            return client.llen(QUEUE) + client.hlen("unacked")
        from kombu import Connection

        with Connection(AMQP_URL) as conn:
            return conn.default_channel.queue_declare(QUEUE, passive=True).message_count

    def query_counter(self) -> int | None:
        if self.name in ("stock sqla", "doorito"):
            import psycopg

            with psycopg.connect(PG + "postgres") as conn:
                return conn.execute(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [QUEUE_DB]
                ).fetchone()[0]
        if self.name == "redis":
            import redis

            return redis.Redis.from_url(REDIS_URL).info("stats")["total_commands_processed"]
        return None

    def rows_left(self) -> int | None:
        if self.name not in ("stock sqla", "doorito"):
            return None
        import psycopg

        with psycopg.connect(PG + QUEUE_DB) as conn:
            return conn.execute("SELECT count(*) FROM kombu_message").fetchone()[0]

    def reset(self) -> None:
        if self.name in ("stock sqla", "doorito"):
            import psycopg

            with psycopg.connect(PG + QUEUE_DB, autocommit=True) as conn:
                conn.execute("TRUNCATE kombu_message")
        elif self.name == "redis":
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
        else:
            from kombu import Connection

            with Connection(AMQP_URL) as conn, contextlib.suppress(Exception):  # not declared: nothing to purge
                conn.default_channel.queue_purge(QUEUE)


def producer_connection(name: str):
    from kombu import Connection
    from kombu.transport.sqlalchemy import Transport as StockTransport

    from common.broker.transport import Transport

    url = BROKERS[name]["CELERY_BROKER_URL"]
    if name == "stock sqla":
        conn = Connection(url)
        conn.transport_cls = StockTransport
    elif name == "doorito":
        from django.conf import settings

        conn = Connection(url, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS)
        conn.transport_cls = Transport
    else:
        conn = Connection(url)
    return conn


class Profiler:
    """py-spy sampling one process (and its children) into a raw (collapsed stacks) file."""

    def __init__(self, pid: int, path: Path, *, subprocesses: bool) -> None:
        self.path = path
        args = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
                "--rate", "200", "--nonblocking", "--output", str(path)]  # fmt: skip
        self.popen = subprocess.Popen([*args, *(["--subprocesses"] if subprocesses else [])],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        self.popen.wait(timeout=60)


def top_frames(path: Path, count: int = 12) -> list[str]:
    """The frames with most samples in a py-spy raw file: own time and including callees, in % of samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        weight = int(n)
        samples += weight
        own[frames[-1]] = own.get(frames[-1], 0) + weight
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + weight
    lines = [f"  {samples} samples; own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"    {100 * n / samples:5.1f}%  {frame}")
    lines.append("  including callees (the broker, the task runner, database calls, the pool hand-off):")
    interesting = ("common/", "kombu/transport/", "celery/app/trace.py", "psycopg/connection.py",
                   "django/db/", "billiard/pool.py", "celery/worker/request.py")  # fmt: skip
    ranked = [(f, n) for f, n in total.items() if any(part in f for part in interesting)]
    for frame, n in sorted(ranked, key=lambda kv: -kv[1])[:count]:
        lines.append(f"    {100 * n / samples:5.1f}%  {frame}")
    return lines


def measure(
    name: str, messages: int, latency_messages: int, log_dir: Path, *, concurrency: int = 2, profile: bool = False
) -> dict:
    from boot.celery import app
    from tests.benchmarks.broker_tasks import latency, noop

    probe = Probe(name)
    probe.reset()
    conn = producer_connection(name)
    producer = app.amqp.Producer(conn)
    noop.apply_async(producer=producer)  # declares the queue and warms the connection
    probe.reset()

    profiles: dict[str, list[str]] = {}
    producer_profile = Profiler(os.getpid(), log_dir / "producer.raw", subprocesses=False) if profile else None
    started = time.perf_counter()
    for _ in range(messages):
        noop.apply_async(producer=producer)
    enqueue_rate = messages / (time.perf_counter() - started)
    if producer_profile is not None:
        producer_profile.stop()
        profiles["producer (enqueue)"] = top_frames(producer_profile.path)

    worker = Worker(base_env(**BROKERS[name]), log_dir, name, concurrency)
    worker_profile = None
    try:
        # The worker logs at WARNING (per-task INFO lines would cost more than some brokers): the drain
        # is timed from the first message consumed to the last, by polling the broker.
        deadline = time.monotonic() + 90
        while (left := probe.outstanding()) >= messages:
            if time.monotonic() > deadline or worker.popen.poll() is not None:
                raise SystemExit(f"{name}: nothing consumed:\n{worker.log.read_text()[-3000:]}")
            time.sleep(0.005)
        first_at, first_left = time.monotonic(), left
        if profile:
            worker_profile = Profiler(worker.popen.pid, log_dir / "worker.raw", subprocesses=True)
        while probe.outstanding():
            time.sleep(0.02)
        drain_rate = first_left / (time.monotonic() - first_at)
        if worker_profile is not None:
            worker_profile.stop()
            profiles["worker (drain, all processes)"] = top_frames(worker_profile.path)
        rows_left = probe.rows_left()

        import psycopg

        with psycopg.connect(PG + APP_DB, autocommit=True) as db:
            db.execute("TRUNCATE bench_broker_latency")
        for _ in range(latency_messages):
            latency.apply_async((time.time(),), producer=producer)
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        samples: list[float] = []
        while time.monotonic() < deadline and len(samples) < latency_messages:
            time.sleep(0.2)
            with psycopg.connect(PG + APP_DB) as db:
                samples = [row[0] for row in db.execute("SELECT seconds FROM bench_broker_latency")]

        # PostgreSQL backends flush their statistics up to 10 s after going idle: let the busy phases settle.
        time.sleep(12)
        before = probe.query_counter()
        time.sleep(10)
        after = probe.query_counter()
        idle = None if before is None else (after - before) / 10
        if name == "redis" and idle is not None:
            idle -= 0.1  # our own INFO command
    finally:
        worker.stop()
        conn.release()
        if probe._pg is not None:
            probe._pg.close()
    return {
        "enqueue": enqueue_rate,
        "drain": drain_rate,
        "p50": percentile(samples, 0.5) * 1000 if samples else None,
        "p99": percentile(samples, 0.99) * 1000 if samples else None,
        "latency_n": len(samples),
        "idle": idle,
        "rows_left": rows_left,
        "profiles": profiles,
    }


def worker_rss_mib(worker: Worker) -> float:
    """Resident memory of the worker's main process and its pool children (one process group), in MiB."""
    total_kib = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            if os.getpgid(int(entry.name)) != worker.popen.pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


def waiting_cost(waiting: int, log_dir: Path, concurrency: int) -> None:
    """A real worker's RSS and the broker database's transactions/s with 0, then `waiting`, countdown=3600 tasks."""
    import psycopg

    from boot.celery import app
    from tests.benchmarks.broker_tasks import noop

    probe = Probe("doorito")
    probe.reset()
    conn = producer_connection("doorito")
    producer = app.amqp.Producer(conn)
    worker = Worker(base_env(**BROKERS["doorito"]), log_dir, "doorito-waiting", concurrency)

    def idle_rate() -> float:
        # Backends flush their statistics up to 10 s after going idle: let the last phase settle first.
        time.sleep(12)
        before = probe.query_counter()
        time.sleep(10)
        return (probe.query_counter() - before) / 10

    try:
        noop.apply_async(producer=producer)  # declares the queue; the worker runs it, so it is consuming
        deadline = time.monotonic() + 90
        while probe.outstanding():
            if time.monotonic() > deadline or worker.popen.poll() is not None:
                raise SystemExit(f"the worker consumed nothing:\n{worker.log.read_text()[-3000:]}")
            time.sleep(0.1)
        rate_before, rss_before = idle_rate(), worker_rss_mib(worker)
        started = time.perf_counter()
        for _ in range(waiting):
            noop.apply_async(producer=producer, countdown=3600)
        publish_seconds = time.perf_counter() - started
        rate_after, rss_after = idle_rate(), worker_rss_mib(worker)
        with psycopg.connect(PG + QUEUE_DB) as db:
            states = dict(db.execute("SELECT version, count(*) FROM kombu_message GROUP BY version").fetchall())
    finally:
        worker.stop()
        conn.release()
        probe.reset()
    print(f"{waiting} countdown=3600 tasks published in {publish_seconds:.1f} s; rows by version: {states}")
    print(f"{'waiting':>8} {'worker RSS MiB':>15} {'broker xact/s':>14}")
    print(f"{0:>8} {rss_before:>15.1f} {rate_before:>14.2f}")
    print(f"{waiting:>8} {rss_after:>15.1f} {rate_after:>14.2f}")
    print(
        f"with {waiting} waiting: RSS {rss_after - rss_before:+.1f} MiB ({100 * (rss_after / rss_before - 1):+.1f}%), "
        f"broker transactions {rate_after / rate_before:.2f}x the idle rate "
        "(goal: no worker memory, no per-message queries)"
    )


# The publish of this transport before migration 0008 (no RETURNING): the statement of the "in transaction" and
# "none" modes, so "none" is the cost of a bare INSERT and the on-demand modes pay for their sub-select.
PLAIN_INSERT = (
    "INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id) "
    "VALUES (nextval('message_id_sequence'), true, now() AT TIME ZONE 'UTC', %s, 1, %s)"
)
# The consumers' wake_wanted_until as the on-demand modes start with: armed (a consumer asleep: in "asleep" mode
# a real consumer loop then clears and re-arms it, see producer_rates) or unset (all busy).
SET_WAKE_WANTED = (
    "UPDATE kombu_queue SET wake_wanted_until = CASE WHEN %(armed)s "
    "THEN now() AT TIME ZONE 'UTC' + interval '1 hour' END WHERE id = %(queue)s"
)


# What the queue database's active sessions wait on (wait_event_type: "Lock" includes the database-wide lock a
# notifying transaction takes at commit, "LWLock" the WAL and buffer locks; NULL is running on a CPU).
SAMPLE_WAITS = (
    "SELECT wait_event_type, count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid() GROUP BY 1"
)


def producer_rates(counts: list[int], seconds: float) -> None:
    """Enqueue/s of N concurrent producers by wake-up mode (trigger, waker thread per publish, waker thread on
    demand with no consumer asleep and with one asleep, none, and none beside a consumer), and wake-up latency."""
    import multiprocessing
    import threading

    import psycopg

    from common.broker import sql
    from common.broker.options import TransportOptions
    from common.broker.transport import RECHECK_AFTER_ARM, WAKE_HOLD_MARGIN
    from common.broker.waker import Waker

    polling_interval = TransportOptions.parse({}).polling_interval
    hold = 2 * polling_interval + WAKE_HOLD_MARGIN  # as Transport._wake_hold

    url = PG + QUEUE_DB
    with psycopg.connect(url, autocommit=True) as db:
        queue_id = db.execute(sql.QUEUE_ID, {"name": QUEUE}).fetchone()[0]

    def connect() -> psycopg.Connection:
        return psycopg.connect(url, autocommit=True)

    @contextlib.contextmanager
    def publisher(conn: psycopg.Connection, mode: str, shared: Waker | None = None):
        if mode in ("in transaction", "none", "consuming"):
            yield lambda: conn.execute(PLAIN_INSERT, ("{}", queue_id))
            return
        conn.execute(sql.SESSION_SETUP)  # the insert trigger leaves the wake-up to us
        waker = shared or Waker()  # one per process, as in the transport
        lock = threading.Lock()  # as a channel's: the waker sends on the connection of the latest publisher

        def send(queues: list[int]) -> None:
            with lock:
                conn.execute(sql.WAKE_QUEUES, (queues,))

        def publish_and_mark() -> None:  # this transport before migration 0008: a wake-up for every publish
            with lock:
                conn.execute(PLAIN_INSERT, ("{}", queue_id))
            waker.wake(queue_id, send)

        def publish_on_demand() -> None:  # Channel._put now: a wake-up only if the INSERT says someone sleeps
            with lock:
                asleep = conn.execute(sql.INSERT_MESSAGE, {"payload": "{}", "queue": queue_id}).fetchone()[0]
            if asleep:
                waker.wake(queue_id, send)

        yield publish_and_mark if mode == "waker thread" else publish_on_demand
        waker.flush(timeout=5)

    # Producers are processes (forked: the closures above need no pickling), each with its own waker, or
    # threads of this process sharing its waker (a threaded web or worker process).
    context = multiprocessing.get_context("fork")
    shared = Waker()

    def produce(mode: str, done, index: int, start, stop, shared: Waker | None) -> None:
        with connect() as conn, publisher(conn, mode, shared) as publish:
            start.wait()
            count = 0
            while not stop.is_set():
                publish()
                count += 1
            done[index] = count

    def sleeper(armed, stop, wakeups, notified: bool) -> None:
        """A consumer asleep on the queue, as Transport.drain_events: it LISTENs on a connection of its own; woken
        by a NOTIFY (or at its poll), it takes every ready row (as claims that find work, with none of the work),
        arms the flag with sql.ARM_WAKE before it sleeps again, and if the arm found the flag unset (its last
        wake-up cleared it) takes again at once and RECHECK_AFTER_ARM later. Counts its wake-ups by NOTIFY. Unless
        `notified` (the "consuming" mode: no NOTIFY comes), it takes the ready rows every RECHECK_AFTER_ARM instead,
        so producers work beside the same DELETEs with no wake-up at all."""
        with connect() as listener, connect() as db:
            listener.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
            while not stop.is_set():
                db.execute(sql.PURGE_QUEUE, (queue_id,))
                if not notified:
                    armed.set()
                    time.sleep(RECHECK_AFTER_ARM)
                    continue
                [(_queue, _ahead, was_unset)] = db.execute(
                    sql.ARM_WAKE, {"queues": [queue_id], "hold": hold}
                ).fetchall()
                armed.set()
                if was_unset:
                    db.execute(sql.PURGE_QUEUE, (queue_id,))
                    time.sleep(RECHECK_AFTER_ARM)
                    db.execute(sql.PURGE_QUEUE, (queue_id,))
                poll_at = time.monotonic() + polling_interval
                while not stop.is_set() and (remaining := poll_at - time.monotonic()) > 0:
                    if list(listener.notifies(timeout=min(0.1, remaining), stop_after=1)):
                        with wakeups.get_lock():
                            wakeups.value += 1
                        break

    def sample_waits(stop: threading.Event, waits: collections.Counter) -> None:
        """Every 10 ms until `stop`: count the active sessions by what they wait on."""
        with connect() as db:
            while not stop.wait(0.01):
                for kind, count in db.execute(SAMPLE_WAITS).fetchall():
                    waits[kind or "CPU"] += count

    def run(n: int, mode: str, seconds: float, layout: str, waits: collections.Counter) -> tuple[int, float]:
        done = context.Array("q", n)
        start, stop = context.Barrier(n + 1), context.Event()
        consumer = None
        if mode in ("asleep", "consuming"):  # a process of its own in both layouts: no GIL shared with producers
            armed = context.Event()
            consumer = context.Process(target=sleeper, args=(armed, stop, wakeups, mode == "asleep"))
            consumer.start()
            if not armed.wait(timeout=30):
                raise SystemExit("the asleep mode's consumer did not arm its flag")
        if layout == "processes":
            producers = [context.Process(target=produce, args=(mode, done, i, start, stop, None)) for i in range(n)]
        else:
            producers = [threading.Thread(target=produce, args=(mode, done, i, start, stop, shared)) for i in range(n)]
        for producer in producers:
            producer.start()
        start.wait()
        began = time.perf_counter()
        sampling = threading.Event()
        sampler = threading.Thread(target=sample_waits, args=(sampling, waits))
        sampler.start()
        time.sleep(seconds)
        stop.set()
        elapsed = time.perf_counter() - began  # a publish under way when stop is set still counts: negligible
        sampling.set()
        sampler.join()
        for producer in [*producers, *([consumer] if consumer else [])]:
            producer.join()
            if getattr(producer, "exitcode", 0):
                raise SystemExit(f"a producer (or the consumer) process failed in mode {mode!r}")
        with connect() as db:
            db.execute("TRUNCATE kombu_message")
        return sum(done), elapsed

    def prepare(mode: str) -> None:
        with connect() as db:
            action = "DISABLE" if mode in ("none", "consuming") else "ENABLE"
            db.execute(f"ALTER TABLE kombu_message {action} TRIGGER kombu_message_ready_insert")
            db.execute(SET_WAKE_WANTED, {"armed": mode == "asleep", "queue": queue_id})

    def wake_latency(mode: str, samples: int = 300) -> list[float]:
        latencies = []
        prepare(mode)
        with connect() as listener, connect() as consumer, connect() as producer, publisher(producer, mode) as publish:
            listener.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
            for _ in range(samples):
                publish()
                published = time.perf_counter()
                next(listener.notifies(timeout=5, stop_after=1))
                latencies.append((time.perf_counter() - published) * 1000)
                if mode == "asleep":  # the wake-up cleared the flag: the woken consumer arms it before it sleeps
                    consumer.execute(sql.ARM_WAKE, {"queues": [queue_id], "hold": hold})
                time.sleep(0.005)
        return latencies

    modes = ("in transaction", "waker thread", "no sleeper", "asleep", "none", "consuming")
    wakeups = context.Value("q", 0)  # NOTIFYs that woke the asleep mode's consumer
    rounds = 5  # the modes take turns, 1/rounds of --seconds each time, so a shared machine's load hits all alike
    print(f"enqueue/s of concurrent producers, {seconds:g} s each in {rounds} turns, by wake-up NOTIFY: in the")
    print("publishing transaction (insert trigger); by the process's waker thread for every publish (before")
    print("migration 0008); by the waker thread on demand (the INSERT disarms a sleeping consumer's flag and")
    print("returns whether it did) with no consumer asleep (wake_wanted_until unset) and with one asleep (armed);")
    print("none (trigger disabled, bare INSERT); loss is against none. Producers are processes (one waker each) or")
    print("threads of one process (sharing its waker). In asleep mode a consumer process sleeps on LISTEN; the")
    print("first publish that finds the flag armed clears it, and the consumer takes the ready rows (DELETE) and")
    print("arms it again before it sleeps again, as the transport does. Consuming: as none, beside a consumer")
    print("taking the ready rows every 50 ms, the baseline of asleep (the same DELETEs, no wake-up); the last loss")
    print("is asleep against it.")
    print(f"{'producers':>15} " + " ".join(f"{m:>14}" for m in modes) + "  loss: " + " / ".join(modes[:4])
          + " / asleep vs consuming")  # fmt: skip
    try:
        for layout in ("processes", "threads"):
            for n in counts:
                totals = {mode: [0, 0.0] for mode in modes}
                waits = {mode: collections.Counter() for mode in modes}
                wakeups.value = 0
                for _ in range(rounds):
                    for mode in modes:
                        prepare(mode)
                        published, elapsed = run(n, mode, seconds / rounds, layout, waits[mode])
                        totals[mode][0] += published
                        totals[mode][1] += elapsed
                rates = {mode: published / elapsed for mode, (published, elapsed) in totals.items()}
                loss = {mode: 100 * (1 - rates[mode] / rates["none"]) for mode in modes}
                print(
                    f"{f'{n} {layout}':>15} " + " ".join(f"{rates[m]:>14.0f}" for m in modes) + "  "
                    + " / ".join(f"{loss[m]:.1f}%" for m in modes[:4])
                    + f" / {100 * (1 - rates['asleep'] / rates['consuming']):.1f}%  (goal: loss <= 10%)"
                    + f"; asleep consumer woken {wakeups.value / totals['asleep'][1]:.1f}/s",
                    flush=True,
                )  # fmt: skip
                shares = {mode: {kind: 100 * count / max(1, waits[mode].total()) for kind, count in waits[mode].items()}
                          for mode in modes}  # fmt: skip
                print(f"{'':>15} " + " ".join(f"{shares[m].get('Lock', 0):>5.1f}/{shares[m].get('LWLock', 0):>4.1f}/"
                                              f"{shares[m].get('CPU', 0):>3.0f}" for m in modes)
                      + "  % of active sessions waiting on a Lock / an LWLock / on a CPU", flush=True)  # fmt: skip
        for mode in ("in transaction", "waker thread", "asleep"):
            latencies = wake_latency(mode)
            print(
                f"wake-up latency, NOTIFY {mode}: p50 {percentile(latencies, 0.5):.2f} ms, "
                f"p99 {percentile(latencies, 0.99):.2f} ms (goal p99 <= 10 ms)"
            )
    finally:
        prepare("in transaction")  # trigger on, flag unset
        with connect() as db:
            db.execute("TRUNCATE kombu_message")


# --- pressure mode ---------------------------------------------------------------------------------------------
PROCRASTINATE_VERSION = "3.10.0"
PROCRASTINATE_DB = "doorito_bench_broker_procrastinate" + SUFFIX
BENCH_ENVS = PROJECT_DIR / ".bench"  # git-ignored: the baselines' own virtualenvs
PRESSURE_TABLES = {
    "doorito": ("kombu_message",),
    "procrastinate": ("procrastinate_jobs", "procrastinate_events"),
    "redis": (),  # nothing in PostgreSQL: its rows read as 0
}
LATENCY_TABLE = "CREATE TABLE IF NOT EXISTS bench_pressure (sent_at double precision, started_at double precision)"
# Dead tuples (the statistics collector's count) and on-disk bytes of the job tables and their indexes.
STORAGE = (
    "SELECT coalesce(sum(n_dead_tup), 0), coalesce(sum(pg_table_size(relid)), 0), "
    "coalesce(sum(pg_indexes_size(relid)), 0) FROM pg_stat_user_tables WHERE relname = ANY(%s)"
)


def baseline_env() -> dict:
    """The environment of a baseline's processes: none of the project's (its venv must not see the project)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DJANGO", "CELERY_", "VIRTUAL_ENV"))}


def procrastinate_python() -> Path:
    """The Python of the Procrastinate baseline's own virtualenv (created and pinned on first use)."""
    venv = BENCH_ENVS / f"procrastinate-{PROCRASTINATE_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, env=baseline_env())
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"procrastinate=={PROCRASTINATE_VERSION}",
                        "psycopg[binary]==3.3.9"], check=True, env=baseline_env())  # fmt: skip
        (venv / ".installed").touch()
    return python


class CeleryProducer:
    """Publishes the pressure task at a fixed rate through `broker` from `processes` forked processes (one
    Python process cannot publish much more than 600/s here), each offering rate / processes."""

    def __init__(self, rate: float, broker: str, processes: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self.sent = context.Value("q", 0)
        self._processes = [context.Process(target=self._run, args=(rate / processes, broker), daemon=True)
                           for _ in range(processes)]  # fmt: skip
        for process in self._processes:
            process.start()

    def _run(self, rate: float, broker: str) -> None:
        import logging

        from boot.celery import app

        # At the workers' level (--loglevel WARNING): no task_enqueued line per publish on the benchmark's terminal.
        logging.getLogger().setLevel(logging.WARNING)
        from tests.benchmarks.broker_tasks import pressure

        conn = producer_connection(broker)
        producer = app.amqp.Producer(conn)
        started, sent = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * rate) + 1
                while sent < due:  # late (a slow publish): catch up, the offered rate stays fixed
                    pressure.apply_async((time.time(),), producer=producer)
                    sent += 1
                    with self.sent.get_lock():
                        self.sent.value += 1
                self._stop.wait(max(0.0, started + sent / rate - time.monotonic()))
        finally:
            conn.release()

    def stop(self) -> None:
        self._stop.set()
        for process in self._processes:
            process.join()


class Runs:
    """Where the pressure task records (sent_at, started_at): the app database's bench_pressure table, or in the peak
    mode files in a directory (one per worker process), so that each task's own work is a line, not a transaction."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.env = {"BENCH_RUNS_DIR": str(directory)} if directory else {}
        if directory:
            directory.mkdir()

    def any(self, db) -> bool:
        if self.directory:
            return any(path.stat().st_size for path in self.directory.iterdir())
        return bool(db.execute("SELECT count(*) FROM bench_pressure").fetchone()[0])

    def all(self, db) -> list[tuple[float, float]]:
        if self.directory:
            lines = [line.split() for path in self.directory.iterdir() for line in path.read_text().splitlines()]
            return [(float(sent), float(started)) for sent, started in lines]
        return db.execute("SELECT sent_at, started_at FROM bench_pressure").fetchall()


def start_pressure_system(name: str, args: argparse.Namespace, log_dir: Path, runs: Runs) -> list:
    """Start `name`'s worker and its producer at `args.rate` jobs/s; returns what to stop (producer first)."""
    if name in ("doorito", "redis"):
        env = base_env(**BROKERS[name], BENCH_CLAIM_LOG=str(log_dir / "claims.log"), **runs.env)
        worker = Worker(env, log_dir, f"pressure-{name}", args.concurrency)
        return [CeleryProducer(args.rate, name, args.producer_processes), worker]
    rate, concurrency = args.rate, args.concurrency
    python = str(procrastinate_python())
    script = str(Path(__file__).with_name("procrastinate_bench.py"))
    queue_url = PG + PROCRASTINATE_DB
    env = {**baseline_env(), **runs.env}
    worker = Subprocess([python, script, "worker", "--queue-url", queue_url, "--latency-url", PG + APP_DB,
                         "--concurrency", str(concurrency)], log_dir / "procrastinate-worker.log", env)  # fmt: skip
    producer = Subprocess([python, script, "produce", "--queue-url", queue_url, "--rate", str(rate),
                           "--seconds", "86400"], log_dir / "procrastinate-producer.log", env)  # fmt: skip
    return [producer, worker]


def prepare_pressure_database(name: str) -> str:
    """Recreate the job database of `name` (migrated, or Procrastinate's schema); returns its name."""
    if name == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        return APP_DB  # no job table in PostgreSQL: the storage columns read 0
    if name == "doorito":
        recreate(QUEUE_DB)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR,
                       env=base_env(DATABASE_URL=PG + QUEUE_DB), check=True)  # fmt: skip
        return QUEUE_DB
    recreate(PROCRASTINATE_DB)
    subprocess.run([str(procrastinate_python()), str(Path(__file__).with_name("procrastinate_bench.py")), "schema",
                    "--queue-url", PG + PROCRASTINATE_DB], check=True, env=baseline_env())  # fmt: skip
    return PROCRASTINATE_DB


def run_pressure(name: str, args: argparse.Namespace, log_dir: Path) -> dict:
    """One system through the clean, held-xmin and recovery phases; returns its raw samples."""
    import psycopg

    database = prepare_pressure_database(name)
    with psycopg.connect(PG + APP_DB, autocommit=True) as db:
        db.execute(LATENCY_TABLE)
        db.execute("TRUNCATE bench_pressure")
    stats = psycopg.connect(PG + database, autocommit=True)
    latency_db = psycopg.connect(PG + APP_DB, autocommit=True)
    held = None
    runs = Runs(log_dir / f"runs-{name}" if args.peak else None)
    running = start_pressure_system(name, args, log_dir, runs)
    try:
        deadline = time.monotonic() + 120  # the worker starts; the clock starts a warm-up after its first job
        while not runs.any(latency_db):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: no job ran within 120 s; logs in {log_dir}")
            time.sleep(0.2)
        # The backlog published while the worker started is drained before the clock starts.
        time.sleep(args.warmup_seconds)
        start = time.time()
        offered_from = published(running[0], stats)
        ends = (start + args.clean_seconds, start + args.clean_seconds + args.held_seconds,
                start + args.clean_seconds + args.held_seconds + args.recovery_seconds)  # fmt: skip
        samples: list[tuple[float, int, int, int]] = []
        print(f"{name}: clean from {time.strftime('%H:%M:%S')}", flush=True)
        while (now := time.time()) < ends[2]:
            if held is None and ends[0] <= now < ends[1]:
                held = psycopg.connect(PG + database)
                held.execute("SELECT txid_current()")  # the transaction stays open: the xmin horizon stops
                print(f"{name}: xmin held from {time.strftime('%H:%M:%S')}", flush=True)
            if held is not None and now >= ends[1]:
                held.commit()
                held.close()
                held = None
                print(f"{name}: xmin released at {time.strftime('%H:%M:%S')}", flush=True)
            dead, table, indexes = stats.execute(STORAGE, [list(PRESSURE_TABLES[name])]).fetchone()
            samples.append((now - start, int(dead), int(table), int(indexes)))
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        offered = (published(running[0], stats) - offered_from) / (time.time() - start)
    finally:
        if held is not None:
            held.rollback()
            held.close()
        for process in running:
            process.stop()
        stats.close()
    started = [(s - start, r - start) for s, r in runs.all(latency_db)]
    latency_db.close()
    claims = []  # (seconds since start, claim statement ms): our transport's claims, timed in the worker
    claim_log = log_dir / "claims.log"
    if claim_log.exists():
        for line in claim_log.read_text().splitlines():
            at, ms, _rows = line.split()
            claims.append((float(at) - start, float(ms)))
        claim_log.unlink()
    return {
        "samples": samples,
        "runs": started,
        "claims": claims,
        "ends": [end - start for end in ends],
        "offered": offered,
    }


def published(producer: CeleryProducer | Subprocess, stats) -> int:
    """Jobs published so far: the Celery producers' count, or Procrastinate's job id sequence."""
    if isinstance(producer, CeleryProducer):
        return producer.sent.value
    return stats.execute("SELECT last_value FROM procrastinate_jobs_id_seq").fetchone()[0]


def summarize(label: str, lo: float, hi: float, result: dict) -> dict:
    """done/s, pickup latency percentiles (ms), dead tuples (median, max) and MB of jobs started in [lo, hi)."""
    pickups = [started - sent for sent, started in result["runs"] if lo <= started < hi]
    claims = [ms for at, ms in result["claims"] if lo <= at < hi]
    window = [s for s in result["samples"] if lo <= s[0] < hi] or result["samples"][-1:]
    dead = sorted(s[1] for s in window)
    sizes = [(s[2] + s[3]) / 2**20 for s in window]
    return {
        "label": label,
        "done": len(pickups) / (hi - lo),
        "p": [percentile(pickups, q) * 1000 if pickups else float("nan") for q in (0.5, 0.95, 0.99)],
        "claim_p99": percentile(claims, 0.99) if claims else float("nan"),
        "dead_median": dead[len(dead) // 2],
        "dead_max": dead[-1],
        "mb_end": sizes[-1],
        "mb_max": max(sizes),
        "table_mb": window[-1][2] / 2**20,
        "index_mb": window[-1][3] / 2**20,
    }


def print_pressure(name: str, result: dict, args: argparse.Namespace) -> None:
    clean_end, held_end, end = result["ends"]
    header = (f"{'':<16} {'done/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>9} {'dead med':>9} {'dead max':>9} "
              f"{'table MB':>9} {'index MB':>9} {'max MB':>7} {'claim p99':>9}")  # fmt: skip

    def row(r: dict) -> str:
        p50, p95, p99 = r["p"]
        return (f"{r['label']:<16} {r['done']:>7.1f} {p50:>8.1f} {p95:>8.1f} {p99:>9.1f} {r['dead_median']:>9} "
                f"{r['dead_max']:>9} {r['table_mb']:>9.1f} {r['index_mb']:>9.1f} {r['mb_max']:>7.1f} "
                f"{r['claim_p99']:>9.1f}")  # fmt: skip

    phases = [summarize("clean", 0, clean_end, result), summarize("held xmin", clean_end, held_end, result),
              summarize("recovery", held_end, end, result)]  # fmt: skip
    print(f"\n{name}: {args.rate:g} jobs/s offered, {args.concurrency} workers; per phase (p50-p99: pickup latency, "
          f"enqueue -> task start; sizes at its end; max MB = table + indexes at peak; claim p99: the claim "
          f"statement's ms, timed in the worker)")  # fmt: skip
    print(header)
    for phase in phases:
        print(row(phase))
    print(f"{name}: per {args.window_seconds:g} s window (seconds since the clean phase began; xmin held "
          f"{clean_end:.0f}-{held_end:.0f} s)")  # fmt: skip
    print(header)
    lo = 0.0
    while lo < end:
        hi = min(end, lo + args.window_seconds)
        print(row(summarize(f"{lo:.0f}-{hi:.0f} s", lo, hi, result)))
        lo = hi
    steady = sorted((s[2] + s[3]) for s in result["samples"] if s[0] < clean_end)
    steady_bytes = steady[len(steady) // 2] if steady else 0
    back = next((s[0] - held_end for s in result["samples"] if s[0] >= held_end and s[2] + s[3] < 2 * steady_bytes),
                None)  # fmt: skip
    clean, held, _ = phases
    verdicts = [
        (f"clean claim (pickup) p99 {clean['p'][2]:.1f} ms", clean["p"][2] <= 25, "<= 25 ms"),
        (f"held-xmin pickup p99 {held['p'][2]:.1f} ms", held["p"][2] <= 50, "<= 50 ms"),
        (f"held-xmin done/s {held['done']:.1f}", held["done"] >= 0.98 * args.rate, f">= 98% of {args.rate:g}"),
        (f"clean median dead tuples {clean['dead_median']}", clean["dead_median"] < 2000, "< 2,000"),
        (
            f"size back under 2x steady ({2 * steady_bytes / 2**20:.1f} MB) "
            + (f"after {back:.0f} s" if back is not None else "not within the recovery phase"),
            back is not None and back <= 120,
            "within 120 s",
        ),
    ]
    if result["claims"]:
        verdicts += [
            (f"clean claim statement p99 {clean['claim_p99']:.1f} ms", clean["claim_p99"] <= 25, "<= 25 ms"),
            (f"held-xmin claim statement p99 {held['claim_p99']:.1f} ms", held["claim_p99"] <= 50, "<= 50 ms"),
        ]
    for text, ok, goal in verdicts:
        print(f"{name}: {text} (goal {goal}: {'met' if ok else 'MISSED'})")


def print_peak(results: dict[str, dict], args: argparse.Namespace) -> None:
    """Peak mode: done/s per window and at best for each system, all measured in this run."""
    end, width = args.clean_seconds, args.window_seconds
    edges = [lo * width for lo in range(int(end // width))]
    windows = {
        name: [summarize("", lo, lo + width, result)["done"] for lo in edges] for name, result in results.items()
    }
    print(f"\npeak: {args.rate:g} jobs/s offered for {end:g} s, {args.concurrency} workers; done/s per {width:g} s "
          "window (seconds since the warm-up ended)")  # fmt: skip
    print(f"{'':<14}" + "".join(f"{f'{lo:g}-{lo + width:g} s':>11}" for lo in edges))
    for name, rates in windows.items():
        print(f"{name:<14}" + "".join(f"{rate:>11.0f}" for rate in rates))
    print(f"{'':<14} {'offered/s':>10} {'median done/s':>14} {'peak done/s':>12} {'pickup p50 ms':>14} "
          f"{'claim p99 ms':>13}")  # fmt: skip
    medians = {}
    for name, result in results.items():
        rates = sorted(windows[name])
        medians[name] = rates[len(rates) // 2]
        whole = summarize("", 0, end, result)
        print(f"{name:<14} {result['offered']:>10.0f} {medians[name]:>14.0f} {rates[-1]:>12.0f} "
              f"{whole['p'][0]:>14.1f} {whole['claim_p99']:>13.1f}")  # fmt: skip
    if "doorito" in medians:
        verdict = "met" if medians["doorito"] >= 1000 else "MISSED"
        print(f"doorito median done/s {medians['doorito']:.0f} (goal >= 1,000: {verdict})")


def held_statement_costs(consumed: int) -> None:
    """ms per statement of common.broker.sql after `consumed` messages went through under a held xmin."""
    import psycopg

    from common.broker import sql

    db = psycopg.connect(PG + QUEUE_DB, autocommit=True)
    db.execute("TRUNCATE kombu_message")
    queue_id = db.execute(sql.QUEUE_ID, {"name": QUEUE}).fetchone()[0]
    pid, started, _ = db.execute(sql.SESSION_SETUP).fetchone()
    claimer = {"pid": pid, "started": started, "queue": queue_id, "limit": 4, "acks": []}
    rescue = {**claimer, "held": [], "acks": [], "grace": 2.0, "restart_grace": 30.0}
    payload = '{"headers": {"id": "x"}, "body": "' + "x" * 600 + '"}'
    insert = (
        "INSERT INTO kombu_message (id, visible, timestamp, payload, version, queue_id) SELECT "
        "nextval('message_id_sequence'), true, now() AT TIME ZONE 'UTC', %s, 1, %s FROM generate_series(1, %s)"
    )
    holder = psycopg.connect(PG + QUEUE_DB)
    holder.execute("SELECT txid_current()")  # held from here on: nothing consumed below can be removed
    try:
        cursor = 0
        for _ in range(consumed // 100):  # publish, claim and ack in batches of 100, as a busy queue does
            db.execute(insert, (payload, queue_id, 100))
            ids = [row[0] for row in db.execute(sql.CLAIM, {**claimer, "limit": 100, "after": cursor}).fetchall()]
            cursor = max(ids)
            db.execute(sql.DELETE_ROWS, (ids,))
        db.execute(insert, (payload, queue_id, 1))  # one ready message
        statements = {
            "claim from the queue's start": (sql.CLAIM, {**claimer, "after": 0}),
            "claim after the cursor": (sql.CLAIM, {**claimer, "after": cursor}),
            "look-back": (sql.LOOK_BACK, {"queues": [queue_id], "afters": [cursor]}),
            "rescue pass": (sql.RESCUE, {**rescue, "sweep": False}),
            "rescue pass marking orphans": (sql.RESCUE, {**rescue, "sweep": True}),
        }
        print(f"{consumed} messages consumed while one transaction holds the xmin horizon; ms per statement:")
        for name, (statement, params) in statements.items():
            times = []
            for _ in range(5):
                with db.transaction(force_rollback=True):  # every run sees the same rows
                    began = time.perf_counter()
                    db.execute(statement, params)
                    times.append((time.perf_counter() - began) * 1000)
            print(f"  {name:<30} median {percentile(times, 0.5):7.1f}  max {max(times):7.1f}")
    finally:
        holder.rollback()
        holder.close()
        db.execute("TRUNCATE kombu_message")
        db.close()


def pressure(args: argparse.Namespace) -> None:
    """The pressure mode: each system in turn, same offered rate, worker count and phases."""
    import logging

    import psycopg

    # One INFO line per publish (django_structlog's task_enqueued) would bury the tables this prints.
    logging.getLogger("django_structlog").setLevel(logging.WARNING)

    with psycopg.connect(PG + APP_DB, autocommit=True) as db:
        db.execute(LATENCY_TABLE)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.systems:
            if name == "redis" and not reachable("127.0.0.1", 6379):
                print("redis: not reachable, skipped", flush=True)
                continue
            results[name] = run_pressure(name, args, Path(tmp))
            if not args.peak:
                print_pressure(name, results[name], args)
    if args.peak:
        print_peak(results, args)
        return
    if "doorito" in results and "procrastinate" in results:
        print("\nsummary, both systems in this run:")
        for name, result in results.items():
            held = summarize("held", result["ends"][0], result["ends"][1], result)
            print(
                f"  {name:<14} held-xmin done/s {held['done']:.1f}, pickup p99 {held['p'][2]:.1f} ms, "
                f"peak {held['mb_max']:.1f} MB, peak dead tuples {held['dead_max']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--latency-messages", type=int, default=200)
    parser.add_argument("--only", nargs="*", choices=list(BROKERS), default=list(BROKERS))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--producers", type=int, nargs="*")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pressure", action="store_true")
    parser.add_argument("--held-statements", type=int, metavar="CONSUMED")
    parser.add_argument("--systems", nargs="*", choices=("doorito", "redis", "procrastinate"))
    parser.add_argument("--peak", action="store_true")
    parser.add_argument("--producer-processes", type=int)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--clean-seconds", type=float, default=180.0)
    parser.add_argument("--held-seconds", type=float, default=900.0)
    parser.add_argument("--recovery-seconds", type=float, default=120.0)
    parser.add_argument("--window-seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=20.0)
    parser.add_argument("--waiting", type=int)
    args = parser.parse_args()
    if args.peak:  # one phase at a high offered rate, for every system: peak throughput, not the held xmin
        args.pressure = True
        args.rate = args.rate if args.rate != 200.0 else 1000.0
        args.clean_seconds = args.clean_seconds if args.clean_seconds != 180.0 else 60.0
        args.held_seconds = args.recovery_seconds = 0.0
        args.window_seconds = 10.0
    args.systems = args.systems or (
        ["doorito", "redis", "procrastinate"] if args.peak else ["doorito", "procrastinate"]
    )
    args.producer_processes = args.producer_processes or max(1, round(args.rate / 400))

    for name in (APP_DB, QUEUE_DB):
        recreate(name)
    for name in (APP_DB, QUEUE_DB):
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR,
                       env=base_env(DATABASE_URL=PG + name), check=True)  # fmt: skip
    import psycopg

    with psycopg.connect(PG + APP_DB, autocommit=True) as db:
        db.execute("CREATE TABLE bench_broker_latency (seconds double precision NOT NULL)")

    os.environ.update(base_env(CELERY_BROKER_URL=SQLA_URL))
    import configurations

    configurations.setup()
    if args.producers:
        producer_rates(args.producers, args.seconds)
        return
    if args.pressure:
        pressure(args)
        return
    if args.held_statements:
        held_statement_costs(args.held_statements)
        return
    if args.waiting:
        with tempfile.TemporaryDirectory() as tmp:
            waiting_cost(args.waiting, Path(tmp), args.concurrency)
        return

    available = {
        "stock sqla": True,
        "doorito": True,
        "redis": reachable("127.0.0.1", 6379),
        "rabbitmq": reachable("127.0.0.1", 5672),
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            if not available[name]:
                print(f"{name}: not reachable, skipped", flush=True)
                continue
            print(f"measuring {name} ...", flush=True)
            results[name] = measure(name, args.messages, args.latency_messages, Path(tmp),
                                    concurrency=args.concurrency, profile=args.profile)  # fmt: skip

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    print()
    print(
        f"{args.messages} no-op tasks; prefork worker -c {args.concurrency}; "
        f"latency at ~20 tasks/s ({args.latency_messages} tasks)"
    )
    print(
        f"{'broker':<12} {'enqueue/s':>10} {'drain/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'idle q/s':>9} {'rows left':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<12} {fmt(r['enqueue'], '.0f'):>10} {fmt(r['drain'], '.0f'):>10} {fmt(r['p50'], '.1f'):>10} "
            f"{fmt(r['p99'], '.1f'):>10} {fmt(r['idle'], '.2f'):>10} {fmt(r['rows_left'], 'd'):>10}"
        )
    for name, r in results.items():
        for what, lines in r["profiles"].items():
            print(f"\npy-spy, {name}, {what}:")
            print("\n".join(lines))
    print()
    ours = results.get("doorito")
    if ours:
        for other, key, goal in (("redis", "drain", 1.0), ("stock sqla", "enqueue", 2.0), ("stock sqla", "drain", 2.0)):
            if other in results:
                ratio = ours[key] / results[other][key]
                verdict = "met" if ratio >= goal else "MISSED"
                print(f"doorito / {other} {key}: {ratio:.2f}x (goal >= {goal}x: {verdict})")
        for key, goal in (("p50", 5.0), ("p99", 25.0)):
            value = ours[key]
            verdict = "met" if value is not None and value <= goal else "MISSED"
            print(f"doorito latency {key}: {fmt(value, '.1f')} ms (goal <= {goal} ms: {verdict})")
        verdict = "met" if ours["rows_left"] == 0 else "MISSED"
        print(f"doorito rows left after drain: {ours['rows_left']} (goal 0: {verdict})")


if __name__ == "__main__":
    main()
