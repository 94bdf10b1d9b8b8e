"""``aiflow split``: choose where to cut MODEL for a device, server and link; export matched ONNX pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from aiflow_cli.cli.common import cli_errors, console, fmt_bytes, progress_bar, show
from aiflow_cli.cli.options import (
    JsonOpt,
    OutFileOpt,
    TrustRemoteCodeOpt,
    TrustSourceOpt,
)
from aiflow_cli.errors import InputError

__all__ = ["app", "split_cmd", "verify_cmd", "speculative_cmd"]


class SplitGroup(TyperGroup):
    """``aiflow split MODEL ...`` plans and exports (the ``plan`` command, the default);
    ``aiflow split verify DIR`` checks an export; ``aiflow split speculative`` exports a draft / target pair. A first argument that names no sub-command is a MODEL."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["plan", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=SplitGroup, no_args_is_help=True, add_completion=False,
                  help="Choose where to cut MODEL for a device, a server and a link, and export the halves "
                       "(aiflow split MODEL ...); check an export (aiflow split verify DIR); export a draft on the device and "
                       "a target on the server for speculative decoding (aiflow split speculative).")


@app.command("plan")
@cli_errors
def split_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A model (as for profile).")],
    device: Annotated[Optional[Path], typer.Option(
        "--device", help="Device: profile JSON measured there (aiflow profile --out), or hardware YAML (projected).")] = None,
    server: Annotated[Optional[Path], typer.Option("--server", help="Server: profile JSON or hardware YAML.")] = None,
    link: Annotated[Optional[list[Path]], typer.Option("--link", help="Link YAML (profiles/links); repeatable.")] = None,
    bandwidth: Annotated[Optional[str], typer.Option(
        "--bandwidth", help="Comma-separated link rates instead of YAML, e.g. 0.5MB/s,1MB/s,2MB/s (or Mbit/s).")] = None,
    rtt: Annotated[Optional[str], typer.Option("--rtt", help="Round-trip time for --bandwidth links, e.g. 20ms.")] = None,
    codec: Annotated[str, typer.Option(
        "--codec", help="Activation codec at the cut: fp32, fp16, int8-tensor, int8-channel; append +zstd to compress.")] = "fp32",
    profile: Annotated[Optional[Path], typer.Option(
        "--profile", help="This machine's profile of MODEL, used to project hardware YAML (else measured now).")] = None,
    device_runtime: Annotated[Optional[str], typer.Option(
        "--device-runtime", help="Runtime projected on a hardware-YAML device: eager, cuda-graph, onnxruntime-cuda, "
                                 "tensorrt or cpu, as the YAML declares (default: its default_runtime).")] = None,
    server_runtime: Annotated[Optional[str], typer.Option(
        "--server-runtime", help="Runtime projected on a hardware-YAML server (as --device-runtime).")] = None,
    server_batch: Annotated[Optional[str], typer.Option(
        "--server-batch", help="Comma-separated batch sizes, e.g. 1,8,32,128,512: project the server half of each best "
                               "cut (or --cut) at each, and how many devices one server sustains.")] = None,
    requests_per_device: Annotated[float, typer.Option(
        "--requests-per-device", help="With --server-batch: requests per second each device sends (30: a 30 fps "
                                      "camera).")] = 30.0,
    sensitivity: Annotated[bool, typer.Option(
        "--sensitivity", help="For each side whose per-kernel figures are assumed: the best cut per link and the plan "
                              "table with them x0.25 .. x4.")] = False,
    cut: Annotated[Optional[list[str]], typer.Option("--cut", help="Cut to export (repeatable); default: each link's best.")] = None,
    export: Annotated[Optional[Path], typer.Option(
        "--export", help="Write device.onnx/server.onnx per cut, manifest.json and a Triton repository here.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a non-empty --export directory, and use profiles flagged unstable.")] = False,
    exporter: Annotated[str, typer.Option(
        "--exporter", help="ONNX exporter for the pair: dynamo (torch.export; default) or torchscript (7-27x "
                           "faster to export, docs/benchmarks.md). Where dynamo fails on a graph, TorchScript writes it, with a warning "
                           "and a note in manifest.json.")] = "dynamo",
    triton: Annotated[bool, typer.Option("--triton/--no-triton", help="Also write triton/ for the server halves.")] = True,
    verify_count: Annotated[int, typer.Option("--verify-count", help="Real inputs to verify each pair on (1 or more).")] = 50,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: stacked device/transfer/server bars per link (with --bottleneck: rate-accuracy curves).")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows per link in the ranked table.")] = 8,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column of the tables (needs a wide terminal).")] = False,
    bottleneck: Annotated[bool, typer.Option(
        "--bottleneck", help="Train a learned, entropy-coded bottleneck at --cut (image classifiers; causal LMs and "
                             "sentence encoders per token, on WikiText-2).")] = False,
    beta: Annotated[Optional[str], typer.Option(
        "--beta", help="With --bottleneck: rate weights to train, comma-separated (larger = fewer bytes). Default: "
                       "7e-6,1e-5,1.5e-5,2e-5 for images, 1e-6,3e-6,6e-6,1e-5 for causal LMs, 3e-6,1e-5,2e-5,4e-5 for "
                       "sentence encoders.")] = None,
    min_fidelity: Annotated[Optional[float], typer.Option(
        "--min-fidelity", help="With --bottleneck on a text model: the fidelity the operating point keeps on "
                               "validation (next-token agreement for causal LMs, default 0.95; embedding cosine for "
                               "sentence encoders, default 0.99).")] = None,
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", help="With --bottleneck / --exit: image folder with labels.csv and images/ (repeatable; default: "
                       "imagenet-sample and imagenet-val under ../shared/data). Split by class: class_index % 5 == 0 "
                       "test, == 1 validation, else train.")] = None,
    auto: Annotated[bool, typer.Option(
        "--auto", help="With --bottleneck: search every --cut x --beta (x --exit) for the fastest plan per link.")] = False,
    max_drop: Annotated[float, typer.Option(
        "--max-drop", help="With --bottleneck: allowed top-1 drop in points: the operating point is the fewest "
                           "validation bytes whose drop on the training images and validation together, one "
                           "standard error up, is within it (never test); "
                           "exits and --auto keep within it too.")] = 1.0,
    exit_cut: Annotated[Optional[list[str]], typer.Option(
        "--exit", help="Early-exit head at this cut (repeatable). Alone: measure exits (image classifiers on "
                       "--data, causal LMs on WikiText-2); with --bottleneck: plan and export them too.")] = None,
    jpeg_quality: Annotated[str, typer.Option(
        "--jpeg-quality", help="With --bottleneck: JPEG upload qualities to compare against, comma-separated "
                               "(1-95).")] = "10,20,30,40,50,60,70,80,90,95",
    finetune_server: Annotated[bool, typer.Option(
        "--finetune-server", help="With --bottleneck: also tune the server half (default: frozen).")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="With --bottleneck: training epochs per beta.")] = 4,
    augment: Annotated[int, typer.Option(
        "--augment", help="With --bottleneck: augmented views (random resized crops, flips) per training image "
                          "added to the codec's training data (0: none, the default: at block13 4 views cost 2-3x the training "
                          "time and did not lower the test drop).")] = 0,
    target_bytes: Annotated[Optional[float], typer.Option(
        "--target-bytes", help="With --bottleneck: bytes per image to aim for; beta is searched on validation "
                               "(--refine extra trainings per cut) and the most accurate point within it is "
                               "the operating point.")] = None,
    refine: Annotated[Optional[int], typer.Option(
        "--refine", help="With --bottleneck: extra trainings per cut that move beta toward --target-bytes, or "
                         "without it toward the largest beta within --max-drop (training images and validation) (default: 2 with "
                         "--target-bytes, else 0).")] = None,
    patch: Annotated[int, typer.Option(
        "--patch", help="With --bottleneck: transform p x p blocks of the activation, so the codec uses "
                        "neighbouring positions' correlation (blocks over an odd edge get their own transform). "
                        "3 (default): at EfficientNet-Lite0 blocks 12-14, beta 2e-5, a 3-4% lower validation loss "
                        "than 2, which itself sent 0.73-0.78x the bytes of 1 (each position on its own).")] = 3,
    shrinkage: Annotated[float, typer.Option(
        "--shrinkage", help="With --bottleneck on images: pull the transform's covariance and Fisher estimates "
                            "toward their diagonals (0-1), so the codec fits the training images less. 0.2 "
                            "(default): 3% lower validation loss than 0 at block12.")] = 0.2,
    out: OutFileOpt = None,
    as_json: JsonOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    trust_source: TrustSourceOpt = False,
) -> None:
    """Choose where to cut MODEL for a device, a server and a link, and export the halves.

    Ranks every cut (and device-only / server-only) by predicted latency per request:
    device time + encode + bytes / rate + RTT + server time + decode + result / rate.
    Prints the best cut per link and a plan table of the link rates at which the best cut
    changes. With --export, writes verified device.onnx / server.onnx pairs and manifest.json.

    Check an export directory later with:  aiflow split verify DIR

    With --bottleneck: train a learned bottleneck (task-aware transform, learned density, real
    range coding) at --cut for each --beta on the training split of --data, and print its
    rate-accuracy table against JPEG upload and the non-learned codecs on the evaluation split;
    --plot draws the rate-accuracy curves, --export writes the pair of the best point. For a
    causal LM or a sentence encoder (e.g. zoo:smollm2-135m --cut layer15), the bottleneck codes
    each token's hidden state and is compared, in bytes per token, with fp16, int8+zstd and a
    uniform quantiser on WikiText-2.
    """
    from aiflow_cli.atomic import check_writable, write_text_atomic
    from aiflow_cli.jobs.split import run_split
    from aiflow_cli.split.links import resolve_links

    if bottleneck:
        from aiflow_cli.cli.bottleneck import bottleneck_cmd

        return bottleneck_cmd(model, cuts=cut or [], beta=beta, data=data, auto=auto, max_drop=max_drop,
                              exits=exit_cut or [], finetune_server=finetune_server, epochs=epochs, patch=patch,
                              shrinkage=shrinkage,
                              jpeg_quality=jpeg_quality, wide=wide, device=device,
                              server=server, link=link or [], bandwidth=bandwidth, rtt=rtt, profile=profile,
                              export=export, force=force, plot=plot, out=out, as_json=as_json, augment=augment,
                              target_bytes=target_bytes, refine=refine, min_fidelity=min_fidelity,
                              exporter=exporter)
    if exit_cut:
        from aiflow_cli.cli.bottleneck import exits_cmd

        if export is not None or device is not None:
            raise InputError("--exit without --bottleneck only measures exits",
                             "add --bottleneck to plan and export a pair that carries them")
        return exits_cmd(model, exit_cut, max_drop, data, out, as_json)

    links = resolve_links(link or [], bandwidth, rtt) if (link or bandwidth or device) else []
    for path in (out, plot):
        if path is not None:
            check_writable(path)
    with progress_bar() as progress:
        outcome = run_split(model, device, server, links, codec=codec, host_profile=profile, cuts=cut,
                            export_dir=export, force=force, triton=triton, verify_count=verify_count,
                            trust_remote_code=trust_remote_code, progress=progress, accept_unstable=force,
                            device_runtime=device_runtime, server_runtime=server_runtime,
                            server_batches=_batches(server_batch), requests_per_device=requests_per_device,
                            sensitivity=sensitivity, exporter=exporter)
    plan = outcome.result.plan if outcome.result else None
    if plan is not None:
        text = plan.model_dump_json(indent=2)
        if out is not None:
            write_text_atomic(out, text + "\n")
        if plot is not None:
            from aiflow_cli.split.plot import plot_plan

            plot_plan(plan, plot)
    if as_json:
        import json

        payload = {"plan": plan.model_dump(mode="json") if plan else None,
                   "manifest": outcome.manifest.model_dump(mode="json") if outcome.manifest else None}
        typer.echo(json.dumps(payload, indent=2))
        return
    if outcome.result is not None:
        _render_plan(outcome.result, top, wide)
    if outcome.manifest is not None:
        _render_manifest(outcome.manifest, export)
    for path in (out, plot):
        if path is not None and plan is not None:
            console.print(f"wrote {path}")


def _batches(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"--server-batch: cannot read '{text}'", "for example --server-batch 1,8,32,128,512") from None


def _node(node) -> str:  # noqa: ANN001 - NodeInfo
    assumed = ", [yellow]assumed figures[/]" if node.runtime_assumed else ""
    return f"{node.name} ([italic]{node.source}[/], {node.runtime}{assumed})"


def _render_plan(result, top: int, wide: bool) -> None:  # noqa: ANN001
    plan = result.plan
    codecs = {c.cut: c for c in result.codecs}
    console.print(f"[bold]{plan.model}[/]  device: {_node(plan.device)}  server: {_node(plan.server)}  "
                  f"codec: {plan.codec}", highlight=False)
    for lp in plan.links:
        table = Table(title=f"{lp.name}: {fmt_bytes(lp.rate_bytes_per_s)}/s up, RTT {lp.rtt_ms:g} ms", title_style="bold",
                      caption=None if wide else "link = encode + transfer + RTT + decode; --wide shows each")
        cols = (("#", "cut", "device ms", "enc ms", "transfer ms", "RTT ms", "server ms", "dec ms", "total ms", "bytes",
                 "agreement") if wide else ("#", "cut", "device ms", "link ms", "server ms", "total ms", "bytes"))
        for col in cols:
            table.add_column(col, justify="left" if col == "cut" else "right")
        shown = [c for i, c in enumerate(lp.candidates) if i < top or c.cut in ("device-only", "server-only")]
        for c in shown:
            rank = lp.candidates.index(c) + 1
            agreement = codecs[c.cut].agreement if c.cut in codecs else None
            if wide:
                cells = [f"{c.device_ms:.2f}", f"{c.encode_ms:.2f}", f"{c.transfer_ms:.2f}", f"{c.rtt_ms:g}",
                         f"{c.server_ms:.2f}", f"{c.decode_ms:.2f}", f"{c.total_ms:.2f}", fmt_bytes(c.bytes),
                         "-" if agreement is None else f"{agreement:.3f}"]
            else:
                link = c.encode_ms + c.transfer_ms + c.rtt_ms + c.decode_ms
                cells = [f"{c.device_ms:.2f}", f"{link:.2f}", f"{c.server_ms:.2f}", f"{c.total_ms:.2f}",
                         fmt_bytes(c.bytes)]
            table.add_row(str(rank), c.cut, *cells, style="bold green" if rank == 1 else None)
        show(table)
    summary = Table(title="best cut per link", title_style="bold")
    for col in ("link", "best", "total ms", "vs device-only", "vs server-only"):
        summary.add_column(col)
    for lp in plan.links:
        by = {c.cut: c.total_ms for c in lp.candidates}
        best = lp.candidates[0].total_ms
        summary.add_row(lp.name, lp.best_cut, f"{best:.2f}", f"{by['device-only'] / best:.2f}x",
                        f"{by['server-only'] / best:.2f}x")
    show(summary)
    rows = Table(title=f"plan table (RTT {plan.plan_table_rtt_ms:g} ms): switch cuts as the link changes",
                 title_style="bold")
    for col in ("from rate", "to rate", "cut"):
        rows.add_column(col)
    for r in plan.plan_table:
        rows.add_row(f"{fmt_bytes(r.min_rate_bytes_per_s)}/s", f"{fmt_bytes(r.max_rate_bytes_per_s)}/s", r.cut)
    show(rows)
    for cap in plan.capacity:
        _render_capacity(cap, plan.server.name)
    for sens in plan.sensitivity:
        _render_sensitivity(sens, plan)
    if plan.sensitivity == [] and (plan.device.runtime_assumed or plan.server.runtime_assumed):
        console.print("[yellow]note:[/] some per-kernel figures are assumed; --sensitivity shows the cut choice if "
                      "they are off by up to 4x", highlight=False)


def _render_capacity(cap, server: str) -> None:  # noqa: ANN001 - ServerCapacity
    table = Table(title=f"{server}, server half after {cap.cut} ({cap.runtime}, projected): devices at "
                        f"{cap.requests_per_device_per_s:g} requests/s each", title_style="bold",
                  caption="server ms: one batch through the server half, not counting the wait to fill it")
    for col in ("batch", "server ms", "requests/s", "devices", "fits memory"):
        table.add_column(col, justify="right")
    for p in cap.points:
        fits = "-" if p.fits_memory is None else ("yes" if p.fits_memory else "[red]no[/]")
        table.add_row(str(p.batch), f"{p.server_ms:.3f}", f"{p.requests_per_s:,.0f}", f"{p.devices:,}", fits)
    show(table)


def _render_sensitivity(sens, plan) -> None:  # noqa: ANN001 - Sensitivity, SplitPlan
    node = plan.device if sens.side == "device" else plan.server
    table = Table(title=f"sensitivity: {node.name}'s {sens.runtime} per-kernel figures (assumed) x factor",
                  title_style="bold", caption=f"plan: best cut by uplink rate at RTT {plan.plan_table_rtt_ms:g} ms")
    table.add_column("x", justify="right")
    for lp in plan.links:
        table.add_column(lp.name)
    table.add_column("plan")
    for row in sens.rows:
        steps = [row.plan_table[0].cut] + [f"{fmt_bytes(r.min_rate_bytes_per_s)}/s {r.cut}" for r in row.plan_table[1:]]
        table.add_row(f"{row.factor:g}", *[row.best_cut[lp.name] for lp in plan.links], " > ".join(steps))
    show(table)


def _render_manifest(manifest, export: Path | None, title: str = "exported to") -> None:  # noqa: ANN001
    table = Table(title=f"{title} {export}", title_style="bold")
    for col in ("cut", "codec", "device.onnx", "server.onnx", "crossing", "verified on", "against", "max diff",
                "agreement"):
        table.add_column(col)
    fallbacks = []
    for p in manifest.pairs:
        v = p.verification
        crossing = ", ".join(f"{d.name} {d.dtype}{d.shape}" for d in p.crossing)
        agreement = v.agreement if v.agreement is not None else v.mean_cosine
        table.add_row(p.cut, p.codec.name, fmt_bytes(p.device.size_bytes), fmt_bytes(p.server.size_bytes), crossing,
                      v.inputs, v.reference, f"{v.max_abs_diff:.2e}", "-" if agreement is None else f"{agreement:.4f}")
        fallbacks += [f"{p.cut} {side}.onnx: {art.exporter}" for side, art in (("device", p.device), ("server", p.server))
                      if art.exporter and art.exporter != "dynamo"]
    show(table)
    exporters = sorted({a.exporter for p in manifest.pairs for a in (p.device, p.server) if a.exporter})
    if exporters == ["dynamo"]:
        console.print("exported with torch.onnx's dynamo exporter")
    for line in fallbacks:
        console.print(f"[yellow]exported by {line}[/yellow]" if "dynamo failed" in line else f"exported by {line}")


@app.command("verify")
@cli_errors
def verify_cmd(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by aiflow split --export.")],
    count: Annotated[int, typer.Option("--verify-count", help="Real inputs to re-run each pair on (1 or more).")] = 50,
    trust_remote_code: TrustRemoteCodeOpt = False,
    trust_source: TrustSourceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an export: the manifest's schema, every path, size and sha256, every declared tensor against
    the ONNX graphs, the source model's weights and cuts, then every pair re-run against its reference.

    Exit 2 names the first field that does not match; exit 3 means a pair does not reproduce its
    reference (the unsplit model; for a learned bottleneck, its training graph).
    """
    from aiflow_cli.export.check import verify_export_dir

    with console.status(f"verifying {directory}"):
        manifest = verify_export_dir(directory, count=count, trust_remote_code=trust_remote_code,
                                     trust_source=trust_source)
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    _render_manifest(manifest, directory, "verified")
    against = "; ".join(dict.fromkeys(p.verification.reference for p in manifest.pairs))
    console.print(f"[green]ok[/]: {len(manifest.pairs)} pair(s) match the manifest's hashes and declarations, and "
                  f"reproduce {against}", highlight=False)


@app.command("speculative")
@cli_errors
def speculative_cmd(
    draft: Annotated[str, typer.Option("--draft", help="The device's draft model: a causal LM sharing the target's "
                                                       "tokenizer (zoo:..., hf:..., or a folder from aiflow compress).")],
    target: Annotated[str, typer.Option("--target", help="The server's target model (zoo:..., hf:..., a folder).")],
    export: Annotated[Path, typer.Option("--export", help="Write draft.onnx, target.onnx, the tokenizer and "
                                                          "manifest.json here (all or nothing).")],
    weights: Annotated[str, typer.Option("--weights", help="fp32 (the models' own weights), int4 (every MatMul "
                                                           "4-bit, MatMulNBits with int8 compute: needed for models "
                                                           "over 2 GB in fp32, e.g. the Qwen pair; k-token and "
                                                           "1-token passes can round apart and flip near-ties) or "
                                                           "int4-f32 (the same weights, fp32 compute: 2-3x slower "
                                                           "here, no such flips).")] = "fp32",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export folder.")] = False,
    exporter: Annotated[str, typer.Option(
        "--exporter", help="ONNX exporter: dynamo (default) or torchscript (7-27x faster to export).")] = "dynamo",
    trust_remote_code: TrustRemoteCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a draft / target pair for speculative decoding across the link: the device drafts k tokens,
    the server verifies them in one pass (aiflow serve-pair generate DIR runs it).

    Both get a KV cache. Refused when the vocabularies differ. Nothing is written unless speculative
    greedy decoding through both graphs reproduces the target's own greedy output token for token.
    """
    from aiflow_cli.export.speculative import export_speculative
    from aiflow_cli.models import load_model

    with progress_bar(not as_json) as progress:
        progress("load models", 0, 2)
        draft_model = load_model(draft, trust_remote_code=trust_remote_code)
        target_model = load_model(target, trust_remote_code=trust_remote_code)
        progress("load models", 2, 2)
        manifest = export_speculative(draft_model, target_model, export, force=force, progress=progress,
                                      weights=weights, exporter=exporter)
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    pair, info = manifest.pairs[0], manifest.speculative
    console.print(f"[green]exported[/] {export}: draft {fmt_bytes(pair.device.size_bytes)} (device), target "
                  f"{fmt_bytes(pair.server.size_bytes)} (server), {info.vocab_size:,} tokens, context "
                  f"{info.max_positions:,}; {pair.verification.inputs}: token-identical", highlight=False)
