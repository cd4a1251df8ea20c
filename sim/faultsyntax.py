"""The fault-spec syntax summary, for ``medge sim --help``.

Kept apart from :mod:`sim.faults` (which needs numpy) so that building the
``medge`` parser imports nothing heavy; :mod:`sim.faults` re-exports it.
"""

#: The syntax, for ``medge sim --help`` (the full reference: the sim.faults docstring).
FAULT_SYNTAX = """\
  FAULT[,FAULT...]  FAULT = KIND[:SELECT][:VALUE][@START[+DURATION]]
  times: 30s 500ms 2m 1h (simulated, from the start); no @: the whole run
  SELECT: all | N devices | N% of them | #1/4/7 (device numbers)
    outage@30s+10s           broker stopped for 10 s (needs --broker)
    partition:20%@60s+30s    network cut, reconnects refused for 30 s
    latency:2:300ms@10s+20s  publishes delayed 300 ms
    loss:10%:5%              5 % packet loss (TCP retransmits: shows as delay)
    sensor:1:leadoff@20s+5s  electrodes off (or sensor:1:nack: the part stops answering)
    reboot:#2@40s            clean reboot (seq continues, boot_id + 1)
    power:#3@50s+5s          abrupt power loss, power back after 5 s
    drift:#1:+500ppm         device clock 500 ppm fast (- slow)"""
