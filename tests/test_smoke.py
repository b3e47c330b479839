"""The seed's core examples, sent with an admin key, answer with the seed's shapes."""


def test_seed_examples(client, admin, queue_name, amqp):
    name = queue_name()
    assert client.post("/createQueue", json={"queueName": name}, headers=admin).json == {
        "message": "Queue has been created successfully."
    }
    queues = client.get("/getQueues", headers=admin).json
    assert {"queueName": name} in [{"queueName": q["queueName"]} for q in queues]
    published = client.post(
        "/messagePublish", json={"queueName": name, "message": "Hello, World!"}, headers=admin
    )
    assert published.status_code == 200
    assert published.json == {"message": "Message has been published successfully."}
    method, _, body = amqp.basic_get(name, auto_ack=True)
    assert method is not None and body == b"Hello, World!"
