#!/usr/bin/env python3
"""The official tutorial programs of rabbitmq-tutorials (python/: send.py, receive.py,
new_task.py, worker.py, 2026), as one script for rmqlab's interoperability tests: the same
declarations (durable, x-queue-type quorum), the same messages and printed lines. Only the broker
URL and the queue name come from the arguments, and the receivers stop after one message (or
fail after 30 s without one) so that a test can run them.

Usage: official_tutorials.py send|receive|new_task|worker URL QUEUE [WORDS...]
"""

import sys
import time

import pika

mode, url, queue = sys.argv[1:4]
words = sys.argv[4:]

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})

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
else:
    sys.exit(f"unknown mode {mode}")
connection.close()
