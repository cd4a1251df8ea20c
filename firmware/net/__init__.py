"""The wire: topics, messages, canonical JSON, outbox, reconnect policy, MQTT client, links."""
