"""A tessera-channel client written from docs/channel.md alone, with `noiseprotocol` and `websockets`.

Usage: channel_client.py URL SERVER_PUBLIC_KEY_HEX [VERSION]
VERSION is the protocol version (section 3): 1 (ChaChaPoly, the default) or 2 (AESGCM).
Runs the handshake, checks the server key, sends messages (one that needs fragmenting), checks the echo,
closes normally, and prints one JSON line describing the session for the Rust test to compare.
"""

import json
import os
import struct
import sys

from noise.connection import Keypair, NoiseConnection
from websockets.sync.client import connect

PROTOCOLS = {1: b"Noise_XX_25519_ChaChaPoly_SHA256", 2: b"Noise_XX_25519_AESGCM_SHA256"}  # section 3
CLIENT_HELLO, SERVER_HELLO, CLIENT_AUTH, TRANSPORT = 0x01, 0x02, 0x03, 0x04  # section 2
T_ESTABLISHED, T_DATA, T_DATA_MORE = 0x01, 0x02, 0x03  # section 5
MAX_BODY = 65518  # section 5


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def frame(kind, noise_message):
    return bytes([kind]) + bytes(noise_message)


def recv_frame(ws, expected_kind):
    data = ws.recv()
    if not isinstance(data, bytes) or len(data) < 2 or data[0] != expected_kind:
        fail("unexpected frame: %r" % (data[:8],))
    return data[1:]


def send_message(ws, noise, message):
    """Section 5: zero or more 0x03 fragments, then one 0x02 fragment."""
    chunks = [message[i:i + MAX_BODY] for i in range(0, len(message), MAX_BODY)] or [b""]
    for i, chunk in enumerate(chunks):
        kind = T_DATA if i == len(chunks) - 1 else T_DATA_MORE
        ws.send(frame(TRANSPORT, noise.encrypt(bytes([kind]) + chunk)))


def recv_message(ws, noise):
    parts = []
    while True:
        plaintext = noise.decrypt(recv_frame(ws, TRANSPORT))
        kind, body = plaintext[0], plaintext[1:]
        if kind not in (T_DATA, T_DATA_MORE):
            fail("unexpected transport type %d" % kind)
        parts.append(bytes(body))
        if kind == T_DATA:
            return b"".join(parts)


def main():
    url, server_key_hex = sys.argv[1], sys.argv[2]
    version = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    private = os.urandom(32)

    noise = NoiseConnection.from_name(PROTOCOLS[version])
    noise.set_as_initiator()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, private)
    noise.set_prologue(b"tessera-channel" + struct.pack(">H", version))  # section 3
    noise.start_handshake()
    my_public = noise.noise_protocol.keypairs["s"].public_bytes

    # Section 1: frames are at most 65,536 bytes.
    with connect(url, max_size=65536) as ws:
        # 4.1 client_hello: the version and a client nonce, in clear.
        ws.send(frame(CLIENT_HELLO, noise.write_message(struct.pack(">H", version) + os.urandom(32))))

        # 4.2 server_hello: the payload is the server nonce; then check the server's key.
        server_nonce = noise.read_message(recv_frame(ws, SERVER_HELLO))
        if len(server_nonce) != 32:
            fail("bad server_hello payload")
        server_key = noise.noise_protocol.handshake_state.rs.public_bytes
        if server_key.hex() != server_key_hex:
            ws.close(4004, "server key not trusted")
            fail("server key mismatch")

        # 4.3 client_auth with an application auth payload.
        ws.send(frame(CLIENT_AUTH, noise.write_message(b"python-auth")))
        assert noise.handshake_finished

        # 4.4 session_established: the server's first transport message.
        plaintext = noise.decrypt(recv_frame(ws, TRANSPORT))
        if plaintext[0] != T_ESTABLISHED or len(plaintext) < 25:
            fail("expected session_established")
        session_id = bytes(plaintext[1:17])
        (expires_at,) = struct.unpack(">Q", plaintext[17:25])
        welcome = bytes(plaintext[25:])

        # Section 5: encrypted echo, including a message that takes three fragments.
        messages = [b"hello from python", b"", bytes(range(256)) * 600]
        for message in messages:
            send_message(ws, noise, message)
            echoed = recv_message(ws, noise)
            if echoed != message:
                fail("echo mismatch for a %d-byte message" % len(message))

        ws.close(1000)

    print(json.dumps({
        "client_public": my_public.hex(),
        "channel_binding": noise.get_handshake_hash().hex(),
        "session_id": session_id.hex(),
        "expires_at": expires_at,
        "welcome": welcome.decode(),
        "echoed": len(messages),
        "version": version,
    }))


if __name__ == "__main__":
    main()
