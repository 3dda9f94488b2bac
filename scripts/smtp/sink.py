"""A real SMTP server (aiosmtpd) that keeps every message it receives as a file, for the
alert tests: each message is written to DIR/<n>.eml once the DATA command completes. With
--starttls-port, a second listener requires STARTTLS with --cert/--key."""
import argparse
import asyncio
import itertools
import pathlib
import ssl

from aiosmtpd.controller import Controller


class Keep:
    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        tmp = self.directory / f".{n}.tmp"
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.rename(self.directory / f"{n}.eml")
        return "250 Message accepted for delivery"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--starttls-port", type=int)
    p.add_argument("--cert")
    p.add_argument("--key")
    a = p.parse_args()
    directory = pathlib.Path(a.dir)
    directory.mkdir(parents=True, exist_ok=True)
    keep = Keep(directory)
    controllers = [Controller(keep, hostname=a.host, port=a.port)]
    if a.starttls_port:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
        controllers.append(
            Controller(keep, hostname=a.host, port=a.starttls_port, tls_context=context, require_starttls=True)
        )
    for c in controllers:
        c.start()
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        for c in controllers:
            c.stop()


if __name__ == "__main__":
    main()
