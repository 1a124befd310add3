#!/usr/bin/env python3
"""The official tutorial programs of rabbitmq-tutorials (python/: send.py, receive.py,
new_task.py, worker.py, emit_log_direct.py, receive_logs_direct.py, emit_log_topic.py,
receive_logs_topic.py, rpc_server.py, rpc_client.py, 2026), as one script for rmqlab's interoperability tests: the same
declarations (queues durable, x-queue-type quorum; exchanges non-durable), the same messages and
printed lines. Only the broker URL and the queue or exchange name come from the arguments; the
queue receivers stop after one message and the log receivers after COUNT, and both fail after
30 s without one, so that a test can run them.

Usage: official_tutorials.py send|receive|new_task|worker URL QUEUE [WORDS...]
       official_tutorials.py emit_log_direct|emit_log_topic URL EXCHANGE [KEY [WORDS...]]
       official_tutorials.py receive_logs_direct|receive_logs_topic URL EXCHANGE COUNT KEY...
       official_tutorials.py rpc_server URL QUEUE [N]    (answers N requests, default 1)
       official_tutorials.py rpc_client URL QUEUE [N]    (requests fib(N), default 30)
"""

import sys
import time
import uuid

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
    # The official RPC client does not declare the request queue; every other program does.
    if mode != "rpc_client":
        channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
else:
    exchange = name
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)

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
