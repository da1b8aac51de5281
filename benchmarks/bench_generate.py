"""Throughput of ``OpenAIBackend`` against a loopback chat-completions server with a fixed latency.

The server (``medcurric.testing.chat_server``, asyncio, stdlib only) runs in a
separate process and answers every request after exactly ``--latency`` seconds
(200 ms), so the ideal throughput at concurrency c is c / latency requests per
second. The backend (aiohttp) is measured at concurrency 1, 8 and 64; beside it,
in the same run, a plain sequential loop (one ``http.client`` keep-alive request
after another), a bare asyncio HTTP/1.1 client at concurrency 64 (no library: the
ceiling of the machine itself; its runs alternate with the backend's), and the
whole generator (prompting, parsing, validation, JSONL writing) at concurrency 64.
Client CPU time per request is ``time.process_time()`` of this process (all its
threads) divided by the requests; the server's CPU is not counted in it but is
reported beside it (``server_cpu_ms_per_req``, from ``/proc`` on Linux; 10 ms clock
ticks, so a coarse figure), since both share the machine.

Target: at concurrency 64, at least 0.9x the requests/s of the bare asyncio client.

Usage: python benchmarks/bench_generate.py [--quick] [--latency 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import medcurric.testing
from medcurric.cot import CoTGenerator, GenerationRequest, OpenAIBackend
from medcurric.cot.templates import QuestionType
from medcurric.seeds.records import FactualSeed
from medcurric.stage import Stage


def _start_server(latency: float) -> tuple[subprocess.Popen, str]:
    # Run the stdlib-only server file as a script: no package import, fast start.
    script = Path(medcurric.testing.__file__).parent / "chat_server.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def _row(
    n: int, runs: list[tuple[float, float]], ideal: float, server: list[float] | None = None
) -> dict:
    """Throughput, efficiency and CPU per request of ``runs`` (wall, client CPU) of n requests.

    ``server`` holds the server's CPU seconds of each run (default: the last ``len(runs)``
    figures that :func:`_time` recorded).
    """
    server = _SERVER_CPU[-len(runs) :] if server is None else server
    walls = [w for w, _ in runs]
    rate = n / statistics.median(walls)
    return {
        "requests": n,
        "req_per_s": round(rate, 2),
        "req_per_s_min": round(n / max(walls), 2),
        "req_per_s_max": round(n / min(walls), 2),
        "ideal_req_per_s": round(ideal, 2),
        "efficiency": round(rate / ideal, 4),
        "client_cpu_ms_per_req": round(1000 * statistics.median(c for _, c in runs) / n, 3),
        "server_cpu_ms_per_req": round(1000 * statistics.median(server) / n, 3),
    }


def _requests(n: int, image: Path, tag: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"{tag}-{i}",
            "You are a radiologist.",
            f"Write a question about image {i}. Question: ... | Reasoning: ... | Answer: ...",
            Stage.MEDIUM,
            QuestionType.OPEN,
            "bench",
            {},
            image_path=image,
        )
        for i in range(n)
    ]


_SERVER_PID: list[int] = []


def _server_cpu() -> float:
    """CPU seconds the server process has used (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{_SERVER_PID[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, OSError, ValueError):
        return float("nan")


_SERVER_CPU: list[float] = []  # server CPU seconds of each timed call, in order


def _time(fn) -> tuple[float, float]:
    s0 = _server_cpu()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _SERVER_CPU.append(_server_cpu() - s0)
    return wall, cpu


def _sequential(url: str, requests: list[GenerationRequest]) -> None:
    """One request after another over one keep-alive ``http.client`` connection."""
    backend = OpenAIBackend("bench", base_url=url)
    host_port, _, path = url.split("//", 1)[1].partition("/")
    conn = http.client.HTTPConnection(host_port, timeout=30.0)
    try:
        for r in requests:
            body = json.dumps(backend._payload(r)).encode()
            conn.request(
                "POST", f"/{path}/chat/completions", body, {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            json.loads(data)["choices"][0]["message"]["content"]
    finally:
        conn.close()


def _concurrent(url: str, requests: list[GenerationRequest], concurrency: int) -> None:
    backend = OpenAIBackend("bench", base_url=url, concurrency=concurrency, timeout=30.0)
    done = [c for c in backend.complete(requests) if c.error is None]
    if len(done) != len(requests):
        raise RuntimeError(f"{len(requests) - len(done)} requests failed")


def _raw_asyncio(url: str, requests: list[GenerationRequest], concurrency: int) -> None:
    """Environment ceiling: bare HTTP/1.1 over asyncio streams, keep-alive, no client library."""
    import asyncio

    backend = OpenAIBackend("bench", base_url=url)
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1] + "/chat/completions"
    bodies = [json.dumps(backend._payload(r)).encode() for r in requests]

    async def worker(mine: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for body in mine:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
            )
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            json.loads(await reader.readexactly(length))["choices"][0]["message"]["content"]
        writer.close()

    async def run_all() -> None:
        await asyncio.gather(*(worker(bodies[i::concurrency]) for i in range(concurrency)))

    asyncio.run(run_all())


def _seeds(n: int) -> list[FactualSeed]:
    organs = ["liver", "spleen", "kidney_left", "pancreas"]
    return [
        FactualSeed(
            id=f"b{i}",
            text=f"a lesion in the {organs[i % 4]}",
            lesion_type="lesion",
            organ=organs[i % 4],
            organ_label=1,
            outcome="inside",
            score=0.9,
            criterion="ioa",
            image="img.png",
            box=(10.0, 10.0, 40.0, 40.0),
        )
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    latency = args.latency
    repeats = 1 if args.quick else args.repeats
    waves = 1 if args.quick else 10
    levels = [1, 8, 64]
    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8), mode="L").save(
        work / "img.png"
    )
    proc, url = _start_server(latency)
    _SERVER_PID[:] = [proc.pid]
    try:
        warm = _requests(8, work / "img.png", "warm")
        _concurrent(url, warm, 8)  # warm-up: imports, connection setup, image cache
        _sequential(url, warm[:2])
        result: dict = {
            "benchmark": "generate",
            "latency_s": latency,
            "repeats": repeats,
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "aiohttp": importlib.metadata.version("aiohttp"),
        }
        n_seq = waves * 2
        runs = [
            _time(lambda: _sequential(url, _requests(n_seq, work / "img.png", "s")))
            for _ in range(repeats)
        ]
        wall = statistics.median(w for w, _ in runs)
        result["sequential"] = {
            "requests": n_seq,
            "req_per_s": round(n_seq / wall, 2),
            "client_cpu_ms_per_req": round(1000 * statistics.median(c for _, c in runs) / n_seq, 3),
        }
        for c in levels[:-1]:
            n = c * waves if c > 1 else waves * 2
            runs = []
            for k in range(repeats):
                reqs = _requests(n, work / "img.png", f"c{c}-{k}")
                runs.append(_time(lambda reqs=reqs, c=c: _concurrent(url, reqs, c)))
            result[f"concurrency_{c}"] = _row(n, runs, c / latency)
        # Concurrency 64 against what this machine allows at all (a bare asyncio client with
        # no HTTP library), timed alternately so that both see the same load from outside.
        n = 64 * waves
        ours: list[tuple[float, float]] = []
        bare: list[tuple[float, float]] = []
        ours_server: list[float] = []
        bare_server: list[float] = []
        for k in range(repeats):
            reqs = _requests(n, work / "img.png", f"c64-{k}")
            ours.append(_time(lambda reqs=reqs: _concurrent(url, reqs, 64)))
            ours_server.append(_SERVER_CPU[-1])
            reqs = _requests(n, work / "img.png", f"raw-{k}")
            bare.append(_time(lambda reqs=reqs: _raw_asyncio(url, reqs, 64)))
            bare_server.append(_SERVER_CPU[-1])
        result["concurrency_64"] = _row(n, ours, 64 / latency, ours_server)
        result["raw_asyncio_concurrency_64"] = _row(n, bare, 64 / latency, bare_server)
        # The whole generator: prompts, parsing, validation and JSONL writing at concurrency 64.
        n_seeds = 4 if args.quick else 110
        seeds = _seeds(n_seeds)
        backend = OpenAIBackend("bench", base_url=url, concurrency=64, timeout=30.0)
        gen = CoTGenerator(
            backend,
            image_root=work,
            vocabulary={"liver": [], "spleen": [], "kidney_left": [], "pancreas": []},
        )
        out = work / "samples.jsonl"
        wall, cpu = _time(lambda: gen.run(seeds, out, progress=False))
        summary = gen.run(seeds, out, progress=False)  # a rerun: everything is skipped
        n = n_seeds * 6
        result["generator_concurrency_64"] = {
            "samples": n,
            "samples_per_s": round(n / wall, 2),
            "efficiency": round(n / wall / (64 / latency), 4),
            "client_cpu_ms_per_sample": round(1000 * cpu / n, 3),
            "rerun_skipped": summary.skipped,
        }
        raw_rate = result["raw_asyncio_concurrency_64"]["req_per_s"]
        ratio = result["concurrency_64"]["req_per_s"] / raw_rate
        result["ratio_64_vs_raw_asyncio"] = round(ratio, 4)
        result["target_met"] = ratio >= 0.9
        result["speedup_64_vs_sequential"] = round(
            result["concurrency_64"]["req_per_s"] / result["sequential"]["req_per_s"], 2
        )
    finally:
        proc.terminate()
        proc.wait(10)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
