"""Serving latency and throughput through `resnet-mlops serve`, against in-process prediction in the same run.

Run:  .venv/bin/python bench/serving_bench.py [--archive PATH] [--repeats 3] [--requests 300]
                                              [--load-seconds 60] [--clients 8] [--json PATH]

Set-up (bench/support/serving.py): a ResNet-20 (the default model; random weights, as speed
does not depend on them) for 32x32x3 and the CIFAR-10 classes, saved as `train` saves it,
logged with `serving.pyfunc.log_classifier` and registered in a temporary store, served by `resnet-mlops serve` on 127.0.0.1
(one worker). Inputs: the first 64 test JPEGs of the CIFAR-10 JPEG archive.

Each repeat measures, on the same inputs:
  single image   `--requests` sequential requests of one base64 JPEG each (and of its
                 raw pixels), over one keep-alive connection -> p50, p99;
                 in-process: the same one-image requests to the loaded pyfunc's
                 `predict` (decode + model, no HTTP), and Keras `model.predict` on the
                 decoded pixels (the network alone, through Keras's own loop).
  batch of 64    the 64 JPEGs in one request -> images/s; the same in-process.
Then once: `--clients` threads, each on its own connection, sending single-JPEG
requests for `--load-seconds`: requests, errors, throughput, p50, p99.
Prints the medians over the repeats and the server's cost over in-process.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from support.scratch import CIFAR_ARCHIVE
from support.serving import CIFAR_CLASSES, cifar_test_jpegs, free_port, register_classifier, serving_process

MODEL = "models:/bench-cifar@champion"


class Client:
    """One keep-alive HTTP connection to the scoring server."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()


def timings(call, inputs: list, repeat_over: int) -> list[float]:
    """Seconds per call, cycling through `inputs` for `repeat_over` calls (after one warm-up call)."""
    call(inputs[0])
    seconds = []
    for i in range(repeat_over):
        start = time.perf_counter()
        call(inputs[i % len(inputs)])
        seconds.append(time.perf_counter() - start)
    return seconds


def ok(port: int):
    """Requests on a new connection (the server closes one idle for 5 s); anything but a 200 stops the run."""
    client = Client(port)

    def call(body: bytes) -> None:
        status, answer = client.post(body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
    return call


def percentiles(seconds: list[float]) -> dict:
    return {"p50_ms": 1000 * float(np.percentile(seconds, 50)), "p99_ms": 1000 * float(np.percentile(seconds, 99))}


def one_repeat(port: int, local, keras_model, jpegs: list[str], pixels: np.ndarray, requests: int) -> dict:
    single_jpeg = [json.dumps({"dataframe_records": [{"image": j}]}).encode() for j in jpegs]
    single_pixels = [json.dumps({"inputs": pixels[i:i + 1].tolist()}).encode() for i in range(len(pixels))]
    batch = json.dumps({"dataframe_records": [{"image": j} for j in jpegs]}).encode()
    frames = [pd.DataFrame({"image": [j]}) for j in jpegs]
    one_pixel_batches = [pixels[i:i + 1] for i in range(len(pixels))]
    result = {
        "server_jpeg": percentiles(timings(ok(port), single_jpeg, requests)),
        "server_pixels": percentiles(timings(ok(port), single_pixels, requests)),
        "inprocess_pyfunc": percentiles(timings(local.predict, frames, requests)),
        "inprocess_keras_predict": percentiles(timings(lambda x: keras_model.predict(x, verbose=0),
                                                       one_pixel_batches, requests)),
    }
    rounds = max(5, requests // 20)
    count = len(jpegs)
    result["batch_images_per_s"] = {
        "server_jpeg": count / statistics.median(timings(ok(port), [batch], rounds)),
        "inprocess_pyfunc": count / statistics.median(timings(local.predict, [pd.DataFrame({"image": jpegs})], rounds)),
        "inprocess_keras_predict": count / statistics.median(
            timings(lambda x: keras_model.predict(x, verbose=0), [pixels], rounds)),
    }
    return result


def load(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads, each with its own connection, sending for `seconds`; every answer must be a 200."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        client = Client(port)
        i = index
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                status, answer = client.post(bodies[i % len(bodies)])
                if status != 200:
                    errors.append(f"HTTP {status}: {answer[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                client = Client(port)
            latencies[index].append(time.perf_counter() - start)
            i += clients

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [s for per_client in latencies for s in per_client]
    return {"clients": clients, "seconds": elapsed, "requests": len(every), "errors": len(errors),
            "first_errors": errors[:3], "requests_per_s": len(every) / elapsed, **percentiles(every)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", type=Path, help="CIFAR-10 JPEG archive (default: ../shared/datasets/...)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="single-image requests per repeat and path")
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import mlflow

    from resnet_mlops.dataset import images

    archive = args.archive or CIFAR_ARCHIVE
    if not archive.exists():
        sys.exit(f"{archive} is absent: pass --archive PATH (the CIFAR-10 JPEG archive)")
    files = cifar_test_jpegs(archive, per_class=7)[:64]
    pixels = np.stack([images.decode(data, 32, 3).pixels for _, data in files])
    jpegs = [base64.b64encode(data).decode() for _, data in files]

    with tempfile.TemporaryDirectory() as tmp:
        uri = register_classifier(Path(tmp), "bench-cifar", (32, 32, 3), CIFAR_CLASSES, architecture="resnet20")
        mlflow.set_tracking_uri(uri)
        local = mlflow.pyfunc.load_model(MODEL)
        keras_model = local.unwrap_python_model().model
        port = free_port()
        started = time.perf_counter()
        with serving_process(["--model", MODEL], Path(tmp), {"MLFLOW_TRACKING_URI": uri}, port):
            print(f"server answering {time.perf_counter() - started:.1f} s after `resnet-mlops serve` started",
                  flush=True)
            repeats = []
            for repeat in range(args.repeats):
                repeats.append(one_repeat(port, local, keras_model, jpegs, pixels, args.requests))
                row = repeats[-1]
                print(f"repeat {repeat + 1}: " + ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms p99 {v['p99_ms']:.2f} ms"
                                                           for k, v in row.items() if "p50_ms" in v), flush=True)
            loaded = load(port, [json.dumps({"dataframe_records": [{"image": j}]}).encode() for j in jpegs],
                          args.clients, args.load_seconds)

    median = lambda path: statistics.median(r[path[0]][path[1]] for r in repeats)
    single = {key: {m: median((key, m)) for m in ("p50_ms", "p99_ms")} for key in repeats[0] if "p50_ms" in repeats[0][key]}
    batch = {key: median(("batch_images_per_s", key)) for key in repeats[0]["batch_images_per_s"]}
    print(f"\nmedian of {args.repeats} repeats, {args.requests} single-image requests each, ResNet-20 32x32x3")
    print(f"{'single image':<34}{'p50 ms':>10}{'p99 ms':>10}")
    for key, value in single.items():
        print(f"  {key:<32}{value['p50_ms']:>10.2f}{value['p99_ms']:>10.2f}")
    print("batch of 64 (images/s)")
    for key, value in batch.items():
        print(f"  {key:<32}{value:>10,.0f}")
    added = single["server_jpeg"]["p50_ms"] - single["inprocess_pyfunc"]["p50_ms"]
    print(f"server p50 - in-process pyfunc p50: {added:+.2f} ms (target <= +10 ms); "
          f"server p50 / Keras model.predict p50: "
          f"{single['server_jpeg']['p50_ms'] / single['inprocess_keras_predict']['p50_ms']:.2f}x")
    print(f"batch of 64, server / in-process pyfunc: {batch['server_jpeg'] / batch['inprocess_pyfunc']:.2f}x")
    print(f"load: {loaded['clients']} clients for {loaded['seconds']:.1f} s: {loaded['requests']:,} requests, "
          f"{loaded['errors']} errors, {loaded['requests_per_s']:.1f} requests/s, p50 {loaded['p50_ms']:.1f} ms, "
          f"p99 {loaded['p99_ms']:.1f} ms" + (f"; first errors: {loaded['first_errors']}" if loaded["errors"] else ""))
    if args.json:
        args.json.write_text(json.dumps({"single": single, "batch64": batch, "load": loaded, "repeats": repeats},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
