"""Projections onto GPUs: kernels x per-kernel overhead by runtime, batch, and CUDA profiles.

The H100 figures below were measured on an NVIDIA H100 80GB HBM3 (PyTorch 2.11, fp32 with TF32,
cudnn.benchmark, batch 1, 224x224, the zoo EfficientNet-Lite0 weights, median of 200 runs) and
filed in aiflow issue 12; they are not produced by this code.
"""

from __future__ import annotations

import json

import pytest
from conftest import PROFILES

from aiflow_cli.cli.main import app
from aiflow_cli.errors import ConfigError
from aiflow_cli.profiling.roofline import HostRoofline, project
from aiflow_cli.schemas.hardware import ComputeProfile, load_compute

H100 = PROFILES / "servers" / "h100-sxm.yaml"
JETSON = PROFILES / "devices" / "jetson-orin-nano.yaml"
A100 = PROFILES / "servers" / "a100-edge.yaml"
WIFI6 = PROFILES / "links" / "wifi6.yaml"
ANY_HOST = HostRoofline(1e9, 1e9)  # the H100 profile states its efficiency: nothing is calibrated on this host

MEASURED_H100_US = {  # segment -> (CUDA graph, eager), microseconds
    "stem": (25, 115), "block0": (36, 174), "block5": (32, 259), "block12": (37, 178), "block15": (35, 167),
    "head": (25, 110), "whole": (490, 2900),
}


@pytest.mark.parametrize("runtime,column", [("cuda-graph", 0), ("eager", 1)])
def test_h100_projection_is_within_30_percent_of_the_measured_table(efficientnet_profile, runtime, column):
    proj = project(efficientnet_profile, load_compute(H100), ANY_HOST, runtime=runtime)
    by_name = {s.name: s for s in proj.segments}
    for name, measured in MEASURED_H100_US.items():
        # one segment timed alone is one call: its kernels plus one per-call overhead
        projected = proj.total_latency_ms if name == "whole" else by_name[name].latency_ms + proj.call_overhead_ms
        assert projected * 1e3 == pytest.approx(measured[column], rel=0.30), (runtime, name)


def test_kernel_counts_follow_the_architecture(efficientnet_profile):
    """By hand from EfficientNet-Lite0: the stem is conv-BN-ReLU6; an MBConv block is 1x1 conv-BN-ReLU6
    (absent in block0), depthwise conv-BN-ReLU6, 1x1 conv-BN, plus the skip add where shapes allow;
    the head is conv-BN-ReLU6, average pool and the classifier."""
    kernels = {s.name: s.kernels for s in efficientnet_profile.segments}
    assert {n: kernels[n].ops for n in ("stem", "block0", "block5", "block12", "block15", "head")} == {
        "stem": 3, "block0": 5, "block5": 8, "block12": 9, "block15": 8, "head": 5}
    assert (kernels["block12"].normalization, kernels["block12"].pointwise) == (3, 3)  # 3 BN; 2 ReLU6 + the skip add
    assert sum(k.ops for k in kernels.values()) == 142
    # fusing norms and pointwise ops leaves the convolutions, the pool and the classifier
    assert sum(k.launched(("normalization", "pointwise")) for k in kernels.values()) == 1 + 2 + 15 * 3 + 3


def test_fusing_removes_the_traffic_of_what_it_fuses(efficientnet_profile):
    block = next(s for s in efficientnet_profile.segments if s.name == "block12").kernels
    unfused, fused = block.traffic(), block.traffic(("normalization", "pointwise"))
    # the expanded 1152-channel 7x7 activation (225 KB) is read and written by each norm and activation
    assert unfused - fused == block.normalization_traffic_bytes + block.pointwise_traffic_bytes
    assert fused < unfused / 2


def test_the_server_half_is_launch_bound_at_batch_1_and_memory_bound_at_512(efficientnet_profile):
    """Physical, not fitted: weights are read once per batch, activations per request, kernels per call."""
    hw = load_compute(H100)
    server = {b: project(efficientnet_profile, hw, ANY_HOST, runtime="cuda-graph", batch=b) for b in (1, 8, 32, 128, 512)}
    first = efficientnet_profile.cuts.index("block12") + 1

    def half_ms(p):  # noqa: ANN001, ANN202
        return sum(s.latency_ms for s in p.segments[first:]) + p.call_overhead_ms

    assert {s.bound for s in server[1].segments[first:]} == {"launch"}
    assert {s.bound for s in server[512].segments[first:]} <= {"memory", "compute"}
    assert half_ms(server[8]) < 2 * half_ms(server[1])  # eight requests for under the price of two
    assert 3.5 < half_ms(server[512]) / half_ms(server[128]) < 4.01  # 4x the work, a fixed part amortised
    assert all(p.fits_memory for p in server.values())


def test_plan_reports_devices_per_server_and_sensitivity_to_assumed_figures(runner, host_profile_file):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(JETSON), "--server", str(A100),
                                 "--link", str(WIFI6), "--profile", str(host_profile_file), "--server-batch",
                                 "1,32,512", "--requests-per-device", "10", "--sensitivity", "--cut", "block12", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert plan["schema_version"] == "aiflow.plan/2"
    assert plan["device"]["runtime"] == "onnxruntime-cuda" and plan["device"]["runtime_assumed"]
    (cap,) = plan["capacity"]
    assert cap["cut"] == "block12" and [p["batch"] for p in cap["points"]] == [1, 32, 512]
    for p in cap["points"]:
        assert p["requests_per_s"] == pytest.approx(p["batch"] / p["server_ms"] * 1e3, rel=1e-3)
        assert p["devices"] == int(p["requests_per_s"] // 10)
    assert [s["side"] for s in plan["sensitivity"]] == ["device", "server"]
    for sens in plan["sensitivity"]:
        assert [r["factor"] for r in sens["rows"]] == [0.25, 0.5, 1.0, 2.0, 4.0]
        unchanged = next(r for r in sens["rows"] if r["factor"] == 1.0)
        assert unchanged["best_cut"] == {lp["name"]: lp["best_cut"] for lp in plan["links"]}
    # a slower device launch makes offloading pay at lower link rates, never at higher ones
    device_rows = plan["sensitivity"][0]["rows"]
    offload_from = [next((r["max_rate_bytes_per_s"] for r in row["plan_table"] if r["cut"] == "device-only"), 0)
                    for row in device_rows]
    assert offload_from == sorted(offload_from, reverse=True) and offload_from[0] > offload_from[-1]


def test_a_runtime_the_profile_does_not_declare_is_refused_with_the_choices(runner, host_profile_file):
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(PROFILES / "devices" / "raspberry-pi-5.yaml"),
                                 "--server", str(A100), "--link", str(WIFI6), "--profile", str(host_profile_file),
                                 "--device-runtime", "tensorrt"])
    assert result.exit_code == 2
    assert "runtime 'tensorrt' is not declared for Raspberry Pi 5" in result.output and "cpu" in result.output


def test_a_default_runtime_must_be_declared(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("kind: server\nname: g\npeak_macs_per_s: 1e12\nmemory_bandwidth_bytes_per_s: 1e11\nsource: s\n"
                    "default_runtime: tensorrt\nruntimes:\n  eager:\n    per_kernel_us: 2\n    source: s\n    assumed: true\n")
    with pytest.raises(ConfigError, match="default_runtime 'tensorrt' is not one of the declared runtimes"):
        load_compute(path)


def test_a_profile_without_runtimes_projects_the_roofline_alone(efficientnet_profile):
    bare = ComputeProfile(kind="server", name="bare", peak_macs_per_s=1e12, memory_bandwidth_bytes_per_s=1e11,
                          efficiency=1.0, source="test")
    proj = project(efficientnet_profile, bare, ANY_HOST)
    assert proj.runtime == "roofline" and proj.runtime_assumed and proj.call_overhead_ms == 0
    assert all(s.launch_ms == 0 and s.latency_ms == s.compute_ms for s in proj.segments)


def test_profile_on_cuda_without_a_gpu_exits_2_with_a_clear_line(runner):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU-only refusal does not apply")
    result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--on", "cuda"])
    assert result.exit_code == 2
    assert "--on cuda: no CUDA device is available here" in result.output
    result = runner.invoke(app, ["profile", "zoo:efficientnet-lite0", "--runtime", "cuda-graph"])
    assert result.exit_code == 2 and "--runtime cuda-graph needs --on cuda" in result.output


def test_a_profile_measured_on_a_gpu_loads_as_the_server(runner, efficientnet_profile, host_profile_file, tmp_path):
    """What aiflow profile --on cuda --runtime cuda-graph writes (here: the table's figures in that format)."""
    gpu = efficientnet_profile.model_copy(deep=True)
    gpu.settings.on, gpu.settings.runtime, gpu.host.accelerator = "cuda", "cuda-graph", "NVIDIA H100 80GB HBM3"
    for seg in gpu.segments:
        seg.latency_ms = seg.latency_ms.model_copy(update={"median": 0.035, "p90": 0.04})
    gpu.total.call_overhead_ms = 0.012
    path = tmp_path / "h100-measured.json"
    path.write_text(gpu.model_dump_json())
    result = runner.invoke(app, ["split", "zoo:efficientnet-lite0", "--device", str(JETSON), "--server", str(path),
                                 "--link", str(WIFI6), "--profile", str(host_profile_file), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert plan["server"] == {"name": "NVIDIA H100 80GB HBM3 (cuda-graph)", "kind": "server", "source": "measured",
                              "file": str(path), "runtime": "cuda-graph on cuda", "runtime_assumed": False}
    server_only = next(c for c in plan["links"][0]["candidates"] if c["cut"] == "server-only")
    assert server_only["server_ms"] == pytest.approx(18 * (0.035 - 0.012) + 0.012, abs=1e-3)
