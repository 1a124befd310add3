#!/usr/bin/env python3
"""The official tutorial programs of rabbitmq-tutorials (python/: send.py, receive.py,
new_task.py, worker.py, emit_log_direct.py, receive_logs_direct.py, emit_log_topic.py,
receive_logs_topic.py, 2026), as one script for rmqlab's interoperability tests: the same
declarations (queues durable, x-queue-type quorum; exchanges non-durable), the same messages and
printed lines. Only the broker URL and the queue or exchange name come from the arguments; the
queue receivers stop after one message and the log receivers after COUNT, and both fail after
30 s without one, so that a test can run them.

Usage: official_tutorials.py send|receive|new_task|worker URL QUEUE [WORDS...]
       official_tutorials.py emit_log_direct|emit_log_topic URL EXCHANGE [KEY [WORDS...]]
       official_tutorials.py receive_logs_direct|receive_logs_topic URL EXCHANGE COUNT KEY...
"""

import sys
import time

import pika

mode, url, name = sys.argv[1:4]
words = sys.argv[4:]

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
exchange_type = {
    "emit_log_direct": "direct",
    "receive_logs_direct": "direct",
    "emit_log_topic": "topic",
    "receive_logs_topic": "topic",
}.get(mode)

if exchange_type is None:
    queue = name
    channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
else:
    exchange = name
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)

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
elif mode in ("emit_log_direct", "emit_log_topic"):
    # As the official emitters: the first word is the key only when a message follows it.
    default_key = "info" if mode == "emit_log_direct" else "anonymous.info"
    key = words[0] if len(words) > 1 else default_key
    message = " ".join(words[1:]) or "Hello World!"
    channel.basic_publish(exchange=exchange, routing_key=key, body=message)
    print(f" [x] Sent {key}:{message}")
elif mode in ("receive_logs_direct", "receive_logs_topic"):
    count, keys = int(words[0]), words[1:]
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    for key in keys:
        channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=key)
    print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
    received = 0
    for method, _properties, body in channel.consume(
        queue_name, auto_ack=True, inactivity_timeout=30
    ):
        if method is None:
            sys.exit(f"no message within 30 s after {received}")
        print(f" [x] {method.routing_key}:{body.decode()}", flush=True)
        received += 1
        if received == count:
            break
    channel.cancel()
else:
    sys.exit(f"unknown mode {mode}")
connection.close()
