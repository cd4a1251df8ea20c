"""Credentials on the device links (issue 11 item 4): the MicroPython link sends the
account in CONNECT, the same bytes in the real VM as on CPython; against a mosquitto
with accounts the umqtt and paho links log in with the right password and are
refused with a wrong one; firmware.main builds its link from the config's username,
password_file and tls_* keys."""

from __future__ import annotations

import io
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from test_device_mpy import BROKER_SCRIPT

import firmware.main as fmain
from firmware.net import protocol
from firmware.net.links.paho import PahoLink
from firmware.net.links.umqtt import UmqttLink
from host.broker.launch import Broker, registry_accounts
from host.services import accounts
from host.services.store import Store

PLAIN = ('link = UmqttLink("broker.invalid", 1883, "dev-mpy-2", '
         'sock_factory=lambda host, port: peer)')
WITH_USER = ('link = UmqttLink("broker.invalid", 1883, "dev-mpy-2", user="dev-mpy-2", '
             'password="pw-1234", sock_factory=lambda host, port: peer)')


def test_umqtt_link_sends_the_account_on_micropython(micropython) -> None:
    assert PLAIN in BROKER_SCRIPT
    script = BROKER_SCRIPT.replace(PLAIN, WITH_USER)
    vm_out = micropython(script)
    buf = io.StringIO()
    with redirect_stdout(buf):
        exec(compile(script, "broker_script", "exec"), {"__name__": "__main__"})
    assert vm_out == buf.getvalue()
    connect = bytes.fromhex(vm_out.splitlines()[0])
    assert connect[0] == 0x10
    flags = connect[connect.index(b"MQTT") + 5]
    assert flags & 0xC0 == 0xC0  # user name and password flags (3.1.2.8, 3.1.2.9)
    assert connect.endswith(b"\x00\x09dev-mpy-2\x00\x07pw-1234")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("links")
    db = tmp / "r.db"
    with Store(db) as store:
        password = accounts.add(store, "bed-5", "device", actor="test")[1]
    with Broker("mosquitto", data_dir=tmp / "b", accounts=registry_accounts(db)) as broker:
        yield broker, password


def test_umqtt_and_paho_links_log_in(secured) -> None:
    broker, password = secured
    will = protocol.topic("bed-5", "status")
    for make in (lambda pw: UmqttLink(broker.host, broker.port, "bed-5", user="bed-5",
                                      password=pw),
                 lambda pw: PahoLink(broker.host, broker.port, "bed-5", username="bed-5",
                                     password=pw, connect_timeout_s=2)):
        link = make("wrong")
        with pytest.raises(OSError):
            link.connect(will, b"{}")
        link = make(password)
        link.connect(will, b"{}")
        token = link.publish(protocol.topic("bed-5", "vitals"), b"{}", False)
        for _ in range(1000):  # up to 10 s on a loaded machine
            if token in link.poll():
                break
            time.sleep(0.01)
        else:
            raise AssertionError("no PUBACK")
        link.disconnect()


def test_the_device_config_builds_a_logged_in_link(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = {"device_id": "bed-5", "sample_rate_hz": 250, "broker_host": "h",
           "source": {"kind": "file", "path": "x"}, "username": "bed-5",
           "password_file": str(secret), "tls_ca_file": "/ca.pem",
           "tls_cert_file": "/c.pem", "tls_key_file": "/c.key"}
    fmain.check_config(cfg)
    link = fmain.make_link(cfg, fmain.load_credentials(cfg))
    assert isinstance(link, PahoLink) and link.username == "bed-5"
    assert link.tls == {"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/c.key"}
    with pytest.raises(ValueError, match="go together"):
        fmain.check_config({k: v for k, v in cfg.items() if k != "tls_key_file"})
    with pytest.raises(ValueError, match="needs tls_ca_file"):
        fmain.check_config({k: v for k, v in cfg.items() if k != "tls_ca_file"})
