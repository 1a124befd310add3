#!/usr/bin/env python3
"""The official tutorial programs of rabbitmq-tutorials (python/: send.py, receive.py,
new_task.py, worker.py, rpc_server.py, rpc_client.py, 2026), as one script for rmqlab's
interoperability tests: the same declarations (durable, x-queue-type quorum), the same messages
and printed lines. Only the broker URL and the queue name come from the arguments, and the
receivers stop after one message (rpc_server: after N requests), or fail after 30 s without
one, so that a test can run them.

Usage: official_tutorials.py send|receive|new_task|worker URL QUEUE [WORDS...]
       official_tutorials.py rpc_server URL QUEUE [N]    (answers N requests, default 1)
       official_tutorials.py rpc_client URL QUEUE [N]    (requests fib(N), default 30)
"""

import sys
import time
import uuid

import pika

mode, url, queue = sys.argv[1:4]
words = sys.argv[4:]

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
# The official RPC client does not declare the request queue; every other program does.
if mode != "rpc_client":
    channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if mode == "send":
    channel.basic_publish(exchange="", routing_key=queue, body="Hello World!")
    print(" [x] Sent 'Hello World!'")
elif mode == "new_task":
    message = " ".join(words) or "Hello World!"
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=message,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )
    print(f" [x] Sent {message}")
elif mode in ("receive", "worker"):
    if mode == "worker":
        channel.basic_qos(prefetch_count=1)
    print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
    auto_ack = mode == "receive"
    for method, _properties, body in channel.consume(
        queue, auto_ack=auto_ack, inactivity_timeout=30
    ):
        if method is None:
            sys.exit("no message within 30 s")
        print(f" [x] Received {body.decode()}")
        if mode == "worker":
            time.sleep(body.count(b"."))
            print(" [x] Done")
            channel.basic_ack(delivery_tag=method.delivery_tag)
        break
    channel.cancel()
elif mode == "rpc_server":
    requests = int(words[0]) if words else 1
    answered = 0

    def on_request(ch, method, props, body):
        global answered
        n = int(body)

        print(f" [.] fib({n})", flush=True)
        response = fib(n)

        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(response),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)
        answered += 1
        if answered == requests:
            ch.stop_consuming()

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=queue, on_message_callback=on_request)
    connection.call_later(30, lambda: sys.exit("no request within 30 s"))
    print(" [x] Awaiting RPC requests", flush=True)
    channel.start_consuming()
elif mode == "rpc_client":
    n = int(words[0]) if words else 30
    result = channel.queue_declare(queue="", exclusive=True)
    callback_queue = result.method.queue
    response = None
    corr_id = str(uuid.uuid4())

    def on_response(ch, method, props, body):
        global response
        if corr_id == props.correlation_id:
            response = body

    channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
    print(f" [x] Requesting fib({n})")
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id),
        body=str(n),
    )
    deadline = time.monotonic() + 30
    while response is None and time.monotonic() < deadline:
        connection.process_data_events(time_limit=1)
    if response is None:
        sys.exit("no reply within 30 s")
    print(f" [.] Got {int(response)}")
else:
    sys.exit(f"unknown mode {mode}")
connection.close()
