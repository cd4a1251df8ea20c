"""The on-device beat model: checks, runtime choice, the LiteRT adapter and the int8 engine."""
