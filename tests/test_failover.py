"""RABBITMQ_URL lists several brokers: API and workers move to the next when one goes down.

Two TCP proxies in front of the one test broker stand in for two cluster nodes;
cutting a proxy for good is a node that went down.
"""

from __future__ import annotations

from tests.support import TcpProxy, wait_for


def _node_url(base: str, port: int) -> str:
    return base.replace(":5672/", f":{port}/")


def test_api_and_worker_fail_over_to_the_next_broker(
    make_settings, make_app, queue_name, endpoint, start_engine, amqp
):
    with TcpProxy("127.0.0.1", 5672) as first, TcpProxy("127.0.0.1", 5672) as second:
        base = make_settings().rabbitmq_url
        urls = f"{_node_url(base, first.port)},{_node_url(base, second.port)}"
        settings = make_settings(rabbitmq_url=urls)
        client, headers = make_app(settings)
        queue = queue_name("failover")
        client.post("/api/v1/queues", json={"name": queue}, headers=headers)
        consumer = client.post(
            "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=headers
        ).json
        worker = start_engine(settings)
        worker.runner(consumer["id"])
        assert (
            client.post(f"/api/v1/queues/{queue}/messages", json={"body": "one"}, headers=headers).status_code
            == 201
        )
        wait_for(lambda: endpoint.bodies() == [b"one"], what="delivery through the first node")
        assert first.connections >= 2 and second.connections == 0

        first.cut()  # the first node is gone and stays gone

        wait_for(
            lambda: (
                client.post(
                    f"/api/v1/queues/{queue}/messages", json={"body": "two"}, headers=headers
                ).status_code
                == 201
            ),
            timeout=20,
            what="the API publishing through the second node",
        )
        wait_for(
            lambda: b"two" in endpoint.bodies(),
            timeout=30,
            what="the worker consuming through the second node",
        )
        assert second.connections >= 2  # both the API and the worker moved over
        assert amqp.queue_declare(queue, passive=True).method.consumer_count == 1
