"""Broker launch: mosquitto with a generated config, or the embedded amqtt broker."""
