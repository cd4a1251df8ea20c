"""The ``medge`` commands, one module per command group.

Each module has ``add_parser(sub)`` (its options, help and an example; cheap:
no numpy, scipy, wfdb or amqtt at import or parser build) and ``run(args) ->
int`` (imports what it needs, calls the library, returns the exit code).
``host/cli.py`` only assembles them; ``common`` holds the shared argument
types and options.

=========== ===================================================================
``demo``    broker + ingest + simulated devices + live monitor, and a verdict
``sim``     simulated devices against a broker (faults, ground truth)
``broker``  an MQTT broker (mosquitto if installed, else the embedded one)
``ingest``  MQTT -> validate -> de-duplicate -> store
``monitor`` live table of the fleet
``fleet``   the device fleet and its broker accounts: ``fleet list|show|add|remove|passwd``,
            ``fleet ca init``
``audit``   the audit log: ``audit list|verify``
``ecg``     WFDB records through the device's code: ``ecg analyze``
=========== ===================================================================
"""
