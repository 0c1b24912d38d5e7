"""ICE server settings: YAML and --ice-server map onto one list, bad entries are clear errors that
never show a credential, the page gets the servers in ``hello``, logs never get the credential.
(TURN through Debian's coturn end to end: tests/test_webrtc.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from streamer.cli import parse_args
from streamer.config import ServerConfig
from streamer.config.values import ice_config, parse_ice_url
from streamer.serve.webrtc import rtc_configuration

from ..oracle_server import oracle_server

TURN = "turn:cam%40home:p%3Ass@turn.example.net:3478?transport=udp"


def test_command_line_turn_url_becomes_an_ice_server() -> None:
    assert parse_ice_url(TURN) == {
        "urls": "turn:turn.example.net:3478?transport=udp",
        "username": "cam@home",
        "credential": "p:ss",
    }
    assert parse_ice_url("stun:stun.example.net:3478") == {"urls": "stun:stun.example.net:3478"}
    ice = ice_config([parse_ice_url(TURN), {"urls": ["stun:stun.example.net"]}], "relay")
    assert ice.for_page() == {
        "ice_servers": [
            {"urls": ["turn:turn.example.net:3478?transport=udp"], "username": "cam@home", "credential": "p:ss"},
            {"urls": ["stun:stun.example.net"]},
        ],
        "ice_transport_policy": "relay",
    }
    assert "p:ss" not in ice.describe() and "user cam@home" in ice.describe()
    configuration = rtc_configuration(ice)
    assert configuration.iceServers[0].username == "cam@home"


@pytest.mark.parametrize(
    ("servers", "policy", "message"),
    [
        ([{"urls": "http://turn.example.net"}], "all", r"ice_servers\[0\]: http://turn.example.net is not a stun"),
        ([{"urls": "turn:u:secret@turn.example.net"}], "all", r"ice_servers\[0\]: \(not shown\) is not"),
        ([{"urls": "turn:turn.example.net"}], "all", "a TURN server needs a username and a credential"),
        ([{"urls": "stun:s.example.net", "password": "x"}], "all", r"ice_servers\[0\] must be"),
        ([{"urls": "stun:s.example.net"}], "relay", "relay needs a TURN server"),
        ([], "sometimes", "ice_transport_policy must be all or relay"),
    ],
)
def test_bad_ice_settings_are_clear_errors(servers, policy, message) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        ice_config(servers, policy)
    assert "secret" not in str(caught.value)


def test_yaml_and_flags_are_one_list(tmp_path, capsys) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "server:\n  ice_servers:\n    - {urls: 'stun:stun.example.net:3478'}\n  ice_transport_policy: all\n"
    )
    args = parse_args(["--config", str(path), "--source", "synthetic", "--ice-server", TURN])
    assert [s.urls for s in args.config_data.server.ice.servers] == [
        ("stun:stun.example.net:3478",),
        ("turn:turn.example.net:3478?transport=udp",),
    ]
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--ice-server", "turn:turn.example.net"])
    assert "a TURN server needs a username" in capsys.readouterr().err


def test_the_page_gets_the_ice_servers_in_hello() -> None:
    async def main() -> dict:
        async with (
            oracle_server(ice_servers=[parse_ice_url(TURN)], ice_transport_policy="relay") as server,
            connect(f"ws://127.0.0.1:{server.port}/ws") as ws,
        ):
            return json.loads(await ws.recv())

    hello = asyncio.run(main())
    assert hello["ice_transport_policy"] == "relay"
    relay = ice_config([parse_ice_url(TURN)], "relay")
    assert hello["ice_servers"] == relay.for_page()["ice_servers"]
    assert ServerConfig().ice.for_page() == {"ice_servers": [], "ice_transport_policy": "all"}
