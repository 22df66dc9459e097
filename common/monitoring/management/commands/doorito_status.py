"""Print the operations status screen (or --json), exiting 1 when any alarm is raised."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from common.monitoring.services.status import build_status_report


class Command(BaseCommand):
    help = "Workers, beat, queues, outbox and last hour's task outcomes, with alarms. Exit code 1 if any alarm."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the report as JSON (same as the endpoint)")

    def handle(self, *args: Any, **options: Any) -> None:
        report = build_status_report()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(render_status_screen(report))
        if report["alarms"]:
            raise SystemExit(1)


def render_status_screen(report: dict) -> str:
    lines = [f"Doorito status at {report['generated_at']}", ""]
    lines.append("ALARMS" if report["alarms"] else "ALARMS: none")
    lines += [f"  {a['code']}: {a['message']}" for a in report["alarms"]]
    lines += ["", "WORKERS"]
    if not report["workers"]:
        lines.append("  (no worker has ever reported)")
    for w in report["workers"]:
        lines.append(
            f"  {w['state']:<8} {w['hostname']} pid={w['pid']} queues={','.join(w['queues'])} "
            f"last_seen={w['last_seen_age_seconds']}s ago tasks_done={w['tasks_done']}"
        )
    beat = report["beat"]
    lines += ["", f"BEAT: {beat['state']}"]
    if beat["leader"]:
        leader = beat["leader"]
        lines.append(
            f"  leader   {leader['hostname']} pid={leader['pid']} last_tick={leader['last_tick_age_seconds']}s ago "
            f"since {leader['leader_since']}"
        )
    for standby in beat["standbys"]:
        lines.append(
            f"  standby  {standby['hostname']} pid={standby['pid']} last_tick={standby['last_tick_age_seconds']}s ago"
        )
    lines += ["", "QUEUES"]
    if not report["queues"]["available"]:
        lines.append(f"  unavailable: {report['queues']['error']}")
    for q in report["queues"]["queues"]:
        age = q.get("oldest_ready_age_seconds")
        lines.append(
            f"  {q['queue']:<10} ready={q['ready']} claimed={q['claimed']} "
            f"oldest_ready={'-' if age is None else f'{age:.1f}s'}"
        )
    lines += ["", "XMIN HORIZON (oldest first)"]
    horizon = report["xmin_horizon"]
    if not horizon["available"]:
        lines.append(f"  unavailable: {horizon['error']}")
    elif not horizon["holders"]:
        lines.append("  (nothing holds it back)")
    for h in horizon["holders"]:
        held = "-" if h["age_seconds"] is None else f"{h['age_seconds']:.1f}s"
        lines.append(
            f"  {h['kind']:<10} pid={h['pid']} application_name={h['application_name']!r} state={h['state']} "
            f"held={held} xid_age={h['xid_age']}"
        )
    lines += ["", "OUTBOX"]
    outbox = report["outbox"]
    if not outbox["available"]:
        lines.append(f"  unavailable: {outbox['error']}")
    else:
        lines += [f"  {key}={value}" for key, value in outbox.items() if key != "available"]
    tasks = report["tasks_last_hour"]
    lines += [
        "",
        f"TASKS (last hour): succeeded={tasks['succeeded']} failed={tasks['failed']} retried={tasks['retried']}",
    ]
    return "\n".join(lines) + "\n"
