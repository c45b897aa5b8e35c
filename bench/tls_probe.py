#!/usr/bin/env python3
"""TLS probes for bench/run (standard library only).

  tls_probe.py first-valid ADDR CAFILE NAME...
      For every NAME at once (one thread each), handshake with SNI=NAME and GET / until the
      server presents a certificate for NAME that chains to CAFILE and answers 200. Prints
      "NAME MS ATTEMPTS" per name, MS from the first handshake to that answer (-1: gave up).

  tls_probe.py handshakes ADDR CAFILE NAME...
      One full handshake per NAME, in order, each verified against CAFILE (so the default
      certificate counts as a failure). Prints one JSON object: ok, failed, and latency
      percentiles in ms (TCP connect + TLS handshake, as the client sees it).

Every handshake is a new TCP connection and a new TLS session: nothing is resumed.
"""
import json
import socket
import ssl
import statistics
import sys
import threading
import time


def parse_addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def connect(addr, name, ctx):
    sock = socket.create_connection(addr, timeout=30)
    try:
        return ctx.wrap_socket(sock, server_hostname=name)
    except BaseException:
        sock.close()
        raise


def get_status(tls, name):
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            break
        head += chunk
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def first_valid(addr, ctx, names, interval=0.02, give_up=120.0):
    results = {}
    start = threading.Barrier(len(names))
    errors = []

    def probe(name):
        start.wait()
        t0 = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                with connect(addr, name, ctx) as tls:
                    if get_status(tls, name) == 200:
                        results[name] = ((time.monotonic() - t0) * 1000, attempts)
                        return
            except ssl.SSLCertVerificationError:
                pass  # the default certificate: not issued yet
            except (OSError, ssl.SSLError) as e:
                errors.append(f"{name}: {e}")
            if time.monotonic() - t0 > give_up:
                results[name] = (-1, attempts)
                return
            time.sleep(interval)

    threads = [threading.Thread(target=probe, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in names:
        ms, attempts = results[name]
        print(f"{name} {ms:.0f} {attempts}")
    for e in errors[:10]:
        print(f"# error: {e}", file=sys.stderr)


def handshakes(addr, ctx, names):
    times, failed, first_error = [], 0, None
    for name in names:
        t0 = time.perf_counter()
        try:
            with connect(addr, name, ctx):
                times.append((time.perf_counter() - t0) * 1000)
        except (OSError, ssl.SSLError) as e:
            failed += 1
            first_error = first_error or f"{name}: {e}"
    times.sort()

    def pct(p):
        return round(times[min(len(times) - 1, int(p * len(times)))], 2) if times else None

    print(json.dumps({
        "ok": len(times), "failed": failed, "first_error": first_error,
        "median_ms": round(statistics.median(times), 2) if times else None,
        "p90_ms": pct(0.9), "max_ms": round(times[-1], 2) if times else None,
    }))


def main():
    if len(sys.argv) < 5 or sys.argv[1] not in ("first-valid", "handshakes"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, addr, cafile, names = sys.argv[1], parse_addr(sys.argv[2]), sys.argv[3], sys.argv[4:]
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if mode == "first-valid":
        first_valid(addr, ctx, names)
    else:
        handshakes(addr, ctx, names)


if __name__ == "__main__":
    main()
