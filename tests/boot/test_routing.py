"""Every task the project can send lands on a queue that `-Q high,default` consumes."""

from boot.celery import app

CONSUMED = {"high", "default"}


def test_every_registered_task_routes_to_a_consumed_queue():
    app.loader.import_default_modules()
    names = sorted(app.tasks)
    assert "common.tasks.heartbeat" in names
    assert "celery.backend_cleanup" in names
    routes = {name: app.amqp.router.route({}, name)["queue"].name for name in names}
    assert {name: q for name, q in routes.items() if q not in CONSUMED} == {}


def test_queues_do_not_share_a_binding():
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == CONSUMED
    bindings = {(q.exchange.name, q.routing_key) for q in queues.values()}
    assert len(bindings) == len(queues)
    assert app.conf.task_default_queue == "default"
