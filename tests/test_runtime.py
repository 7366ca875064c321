"""Runtime: model card, ONNX export + parity (real ONNX Runtime), backends, hand-off, observation assembly."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flow2one import spec
from flow2one.geometry import matrix_to_quat, rot6d_to_matrix
from flow2one.runtime.backends import BackendUnavailable, open_backend
from flow2one.runtime.card import CardError, ModelCard, load_card, save_card
from flow2one.runtime.export import example_inputs, torch_reference
from flow2one.runtime.handoff import agrees_with_plan, resample_tail, select_candidate
from flow2one.runtime.observation import InputRejected, Observation, ObservationAssembler
from flow2one.runtime.policy_step import PolicyStep
from flow2one.runtime.tensorrt_engine import PARITY_TOL, engine_path, profile_shapes

torch.set_num_threads(1)
HAS_CUDA = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def exported_student(tmp_path_factory: pytest.TempPathFactory, preset: str = "tiny", history_steps: int = 0,
                     motion_steps: int = 0) -> Path:
    """A randomly initialised student checkpoint exported with `flow2one export`, once per session."""
    from flow2one.cli import main as cli_main
    from flow2one.policy.checkpoint import save_policy
    from flow2one.policy.config import preset as make_preset
    from flow2one.policy.factory import build_policy

    d = tmp_path_factory.getbasetemp() / f"student_{preset}_h{history_steps}_m{motion_steps}"
    if (d / "model.onnx").is_file():
        return d
    torch.manual_seed(0)
    policy = build_policy(make_preset(preset, kind="student", history_steps=history_steps, motion_steps=motion_steps))
    # non-trivial normaliser statistics, so parity also covers the (un)normalisation inside the graph
    proprio = torch.randn(8, policy.cfg.encoder.proprio_in)
    policy.fit_normalizers({"points": torch.rand(4, spec.N_POINTS, 3), "proprio": proprio},
                           torch.randn(64, spec.HORIZON, spec.ACTION_DIM) * 0.2 + 0.4)
    save_policy(d, policy, card={"name": f"{preset}_student", "trained_on": "random weights (tests)"})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli_main(["export", str(d)])
    report = json.loads(out.getvalue())
    assert rc == 0 and report["ok"], report
    return d


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_student(tmp_path_factory)


# --- export + backends --------------------------------------------------------------------------------

def test_export_parity_and_card(student_dir: Path) -> None:
    import onnx

    onnx.checker.check_model(str(student_dir / "model.onnx"), full_check=True)
    card = load_card(student_dir)
    assert card.kind == "student" and card.inputs == {"points": (4096, 3), "proprio": (10,), "noise": (32, 10)}
    assert card.export["parity_max_abs_err"] < 1e-4
    assert card.normalizer["action_norm"]["center"] != [0.0] * 10  # statistics copied from the weights
    assert card.parameters > 0 and card.extra == {}
    assert "created_utc" in yaml.safe_load((student_dir / "card.yaml").read_text())

    from flow2one.policy.checkpoint import load_policy

    policy, _ = load_policy(student_dir)
    ort = open_backend("onnxruntime", student_dir)
    tb = open_backend("torch", student_dir)
    inputs = example_inputs(card, batch=2, candidates=5, seed=7)
    ref = torch_reference(policy, inputs)
    out = ort(inputs)
    assert out.shape == (2, 5, 32, 10) and out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-4
    assert np.abs(tb(inputs) - ref).max() < 1e-5
    # M candidates of one observation = the policy's export_forward on M copies of it
    with torch.inference_mode():
        one = policy.export_forward(torch.from_numpy(inputs["points"][:1]).expand(5, -1, -1),
                                    torch.from_numpy(inputs["proprio"][:1]).expand(5, -1),
                                    torch.from_numpy(inputs["noise"][0])).numpy()
    assert np.abs(out[0] - one).max() < 1e-4
    # noise is a real input: other noise, other chunk; same noise, same chunk
    other = dict(inputs, noise=np.random.default_rng(1).standard_normal((2, 5, 32, 10), dtype=np.float32))
    assert np.abs(ort(other) - out).max() > 1e-3
    np.testing.assert_array_equal(ort(inputs), out)


def machine_paths() -> list[str]:
    """Absolute paths of this machine that a model file must not name: checkout, venv, home, site-packages."""
    import site
    import sys

    roots = {"/work/", str(Path.home()), sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[1]),
             *site.getsitepackages(), site.getusersitepackages(), "site-packages"}
    return sorted(r for r in roots if r and r != "/")


def test_export_writes_no_machine_paths(student_dir: Path) -> None:
    """torch's exporter annotates every node with its Python stack trace (absolute file paths): the export
    strips its debug info, and the shipped models carry none either."""
    import onnx

    names = machine_paths()
    shipped = sorted((Path(__file__).resolve().parents[1] / "models").glob("*/model.onnx"))
    assert len(shipped) >= 3
    for path in [student_dir / "model.onnx", *shipped]:
        data = path.read_bytes()
        assert not [n for n in names if n.encode() in data], (path, [n for n in names if n.encode() in data])
        model = onnx.load(str(path))
        nodes = list(model.graph.node)
        assert nodes and not any(n.doc_string or n.metadata_props for n in nodes), path
        assert not model.graph.doc_string and not model.graph.metadata_props, path


def test_cloud_history_model_exports_and_reads_points_prev(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = exported_student(tmp_path_factory, history_steps=4)
    card = load_card(d)
    assert card.history_steps == 4 and card.input_names() == ("points", "points_prev", "proprio", "noise")
    assert card.export["parity_max_abs_err"] < 1e-4
    ort = open_backend("onnxruntime", d)
    inputs = example_inputs(card, batch=1, candidates=2, seed=3)
    moved = dict(inputs, points_prev=inputs["points"] + np.float32(0.02))  # the scene moved 2 cm in 0.2 s
    assert np.abs(ort(moved) - ort(dict(inputs, points_prev=inputs["points"]))).max() > 1e-4
    with pytest.raises(CardError, match="points_prev"):
        ModelCard.from_dict({**card.to_dict(), "history_steps": 0})


def test_motion_model_exports_and_reads_the_arms_motion(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = exported_student(tmp_path_factory, motion_steps=4)
    card = load_card(d)
    assert card.motion_steps == 4 and card.inputs["proprio"] == (2 * spec.PROPRIO_DIM,)
    assert card.export["parity_max_abs_err"] < 1e-4
    ort = open_backend("onnxruntime", d)
    inputs = example_inputs(card, batch=1, candidates=2, seed=3)
    still, moving = inputs["proprio"].copy(), inputs["proprio"].copy()
    still[:, spec.PROPRIO_DIM:] = 0
    moving[:, spec.PROPRIO_DIM:] = 1.0  # of the order of the (random) normaliser's range: an input that counts
    assert np.abs(ort(dict(inputs, proprio=moving)) - ort(dict(inputs, proprio=still))).max() > 1e-4
    with pytest.raises(CardError, match="motion_steps"):
        ModelCard.from_dict({**card.to_dict(), "motion_steps": 0})


def test_backend_refuses_wrong_inputs(student_dir: Path) -> None:
    ort = open_backend("onnxruntime", student_dir)
    good = example_inputs(ort.card, batch=2, candidates=3)
    with pytest.raises(ValueError, match=r"input 'points' has shape \(2, 1000, 3\).*\(B, 4096, 3\)"):
        ort(dict(good, points=good["points"][:, :1000]))
    with pytest.raises(ValueError, match="one B for all inputs"):
        ort(dict(good, noise=good["noise"][:1]))
    with pytest.raises(ValueError, match=r"input 'noise' has shape \(2, 32, 10\).*\(B, M, 32, 10\)"):
        ort(dict(good, noise=good["noise"][:, 0]))
    with pytest.raises(ValueError, match=r"missing \['noise'\]"):
        ort({k: v for k, v in good.items() if k != "noise"})


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message without it")
def test_missing_backend_names_the_package(student_dir: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"needs the Python package 'tensorrt'.*pip install 'tensorrt-cu12"):
        open_backend("tensorrt", student_dir)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA present; this checks the CPU-only messages")
def test_gpu_devices_fail_clearly_without_a_gpu(student_dir: Path) -> None:
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        open_backend("onnxruntime", student_dir, device="cuda")
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        open_backend("torch", student_dir, device="cuda")


def test_unexported_or_unknown(tmp_path: Path, student_dir: Path) -> None:
    save_card(tmp_path, load_card(student_dir))
    with pytest.raises(BackendUnavailable, match="flow2one export"):
        open_backend("onnxruntime", tmp_path)
    with pytest.raises(ValueError, match="unknown inference backend 'tflite'"):
        open_backend("tflite", student_dir)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_torch_cuda_graphs_match_cpu(student_dir: Path) -> None:
    cpu = open_backend("torch", student_dir)
    gpu = open_backend("torch", student_dir, device="cuda", fp16=False)
    inputs = example_inputs(cpu.card, batch=1, candidates=4)
    for _ in range(2):  # first call captures the graph, the second replays it
        assert np.abs(gpu(inputs) - cpu(inputs)).max() < 1e-3


@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs TensorRT and CUDA")
def test_tensorrt_engine_matches_onnxruntime(student_dir: Path) -> None:
    ort = open_backend("onnxruntime", student_dir)
    trt = open_backend("tensorrt", student_dir, fp16=True, max_batch=4)
    assert trt.engine_file.is_file() and ("fp16" in trt.engine_file.name) == trt.fp16
    assert any("TensorRT vs ONNX Runtime" in n for n in trt.notes)  # the start-up parity check ran and passed
    inputs = example_inputs(ort.card, batch=1, candidates=4)
    assert np.abs(trt(inputs) - ort(inputs)).max() < PARITY_TOL["fp16" if trt.fp16 else "fp32"]


def test_tensorrt_engine_naming_and_profile(student_dir: Path) -> None:
    card = load_card(student_dir)
    p = engine_path(student_dir / "model.onnx", "NVIDIA H100 80GB HBM3", "10.8.0.43", True, 16)
    assert p.parent == student_dir
    assert p.name == "model.NVIDIA-H100-80GB-HBM3.trt10.8.0.43.fp16.b16.engine"
    assert engine_path(p.with_name("model.onnx"), "NVIDIA H100 80GB HBM3", "10.9.0", True, 16) != p
    shapes = profile_shapes(card, 8)
    assert shapes["points"] == ((1, 4096, 3), (1, 4096, 3), (8, 4096, 3))
    assert shapes["noise"] == ((1, 1, 32, 10), (1, 8, 32, 10), (8, 8, 32, 10))
    assert set(shapes) == {"points", "proprio", "noise"}
    with pytest.raises(ValueError, match="max_batch"):
        profile_shapes(card, 0)


# --- model card ---------------------------------------------------------------------------------------

def test_card_checks_configuration(student_dir: Path) -> None:
    card = load_card(student_dir)
    card.check()  # the spec's configuration
    with pytest.raises(CardError) as err:
        card.check(base_frame="world", n_points=2048, dt=0.1)
    msg = str(err.value)
    assert "base_frame 'panda_link0' != configured 'world'" in msg and "2048" in msg and "dt 0.05 != 0.1" in msg
    img = replace(card, inputs={**card.inputs, "rgb": (1, 32, 32, 3)}, cameras=("front",))
    with pytest.raises(CardError, match="cameras"):
        img.check(cameras=())
    img.check(cameras=("front",))


def test_card_rejects_malformed(tmp_path: Path, student_dir: Path) -> None:
    d = load_card(student_dir).to_dict()
    with pytest.raises(CardError, match="outputs.actions"):
        ModelCard.from_dict({**d, "horizon": 16})
    with pytest.raises(CardError, match="missing field 'trained_on'"):
        ModelCard.from_dict({k: v for k, v in d.items() if k != "trained_on"})
    with pytest.raises(CardError, match="kind 'diffusion'"):
        ModelCard.from_dict({**d, "kind": "diffusion"})
    (tmp_path / "card.yaml").write_text(yaml.safe_dump({"kind": "student", "inputs": ["points", "noise"]}))
    with pytest.raises(CardError, match="flow2one export"):
        load_card(tmp_path)
    with pytest.raises(CardError, match="no model card"):
        load_card(tmp_path / "nowhere")
    # unknown keys survive a load/save round trip
    save_card(tmp_path, ModelCard.from_dict({**d, "robot": "panda-lab-2"}))
    assert load_card(tmp_path).to_dict()["robot"] == "panda-lab-2"
    assert load_card(tmp_path) == ModelCard.from_dict({**d, "robot": "panda-lab-2"})


# --- chunk hand-off -----------------------------------------------------------------------------------

def test_handoff_keeps_the_continuing_candidate() -> None:
    rng = np.random.default_rng(0)
    h, dt = spec.HORIZON, spec.STEP_DT
    t = np.arange(h + 10) * dt
    left = np.zeros((h + 10, 10), np.float32)
    left[:, 1] = 0.1 * t  # moving +y
    right = left.copy()
    right[:, 1] *= -1  # moving -y
    prev = left[:h]
    stamp0 = 1_000_000_000
    later = stamp0 + int(3 * dt * 1e9)  # 3 steps into the executing chunk
    cands = np.stack([right[3:3 + h], left[3:3 + h] + rng.normal(0, 1e-3, (h, 10)), right[3:3 + h] * 2])
    best, costs = select_candidate(cands, later, dt, prev, stamp0, dt)
    assert best == 1 and costs[1] < 1e-4 < costs[0]
    assert select_candidate(cands, later, dt)[0] == 0  # nothing executing: an unbiased sample
    far = stamp0 + int(10 * 1e9)
    assert select_candidate(cands, far, dt, prev, stamp0, dt)[1].tolist() == [0, 0, 0]  # no overlap
    with pytest.raises(ValueError, match="candidates must be"):
        select_candidate(cands[0], later, dt)


def test_handoff_window_scores_only_the_committed_prefix() -> None:
    """Two candidates: one continues the executing plan for its first 0.2 s and then turns, the other
    follows the plan's far tail but jumps at the hand-off. The whole overlap prefers the tail-follower;
    a 0.2 s window keeps the one that continues where the arm is going now."""
    h, dt = spec.HORIZON, spec.STEP_DT
    t = np.arange(h) * dt
    prev = np.zeros((h, 10), np.float32)
    prev[:, 0] = 0.2 * t  # +x at 0.2 m/s
    turns = prev.copy()
    turns[5:, 0] = turns[4, 0]  # continues for 4 steps (0.2 s), then stops
    turns[5:, 1] = 0.05 * (t[5:] - t[4])
    jumps = prev.copy()
    jumps[:5, 0] += 0.03  # 3 cm off at the hand-off, on the plan afterwards
    cands = np.stack([jumps, turns])
    assert select_candidate(cands, 0, dt, prev, 0, dt)[0] == 0
    best, costs = select_candidate(cands, 0, dt, prev, 0, dt, window_s=0.2)
    assert best == 1 and costs[1] < 1e-12 < costs[0]
    # the window counts from the new chunk's start: steps of the plan already executed are never scored
    later = int(0.1e9)
    _, costs_later = select_candidate(cands[:, 2:], later, dt, prev, 0, dt, window_s=0.1)
    np.testing.assert_allclose(costs_later[1], 0.0, atol=1e-10)


def test_policy_step_scores_continuity_on_its_handoff_window(student_dir: Path) -> None:
    """The node's step (and so every evaluation) keeps the candidate its hand-off window picks."""
    h, dt = spec.HORIZON, spec.STEP_DT
    t = np.arange(h) * dt
    prev = np.zeros((h, 10), np.float32)
    prev[:, 0] = 0.2 * t
    turns, jumps = prev.copy(), prev.copy()
    turns[5:, 0], turns[5:, 1] = turns[4, 0], 0.05 * (t[5:] - t[4])
    jumps[:5, 0] += 0.03
    card = replace(load_card(student_dir), dt=dt)

    def backend(inputs: dict) -> np.ndarray:  # a fixed pair of samples (batch 1) in place of the network
        return np.stack([jumps, turns])[None]

    obs = Observation({}, 0, 1, 0)
    chosen = []
    for window in (0.0, 0.2):
        step = PolicyStep(card, backend, n_candidates=2, handoff_window_s=window)
        step.prev = (prev, 0, dt)
        chosen.append(step.infer(obs).best)
    assert chosen == [0, 1]
    with pytest.raises(ValueError, match="handoff_window_s"):
        PolicyStep(card, backend, n_candidates=2, handoff_window_s=-0.1)


def test_a_chunk_that_restates_the_plan_keeps_it_and_one_that_departs_replaces_it(student_dir: Path) -> None:
    h, dt = spec.HORIZON, spec.STEP_DT
    plan = np.zeros((h, 10), np.float32)
    plan[:, 0] = 0.3 * np.arange(h) * dt  # 0.3 m/s along x
    later = int(4 * dt * 1e9)  # re-planned 4 steps into the plan
    restated = np.zeros_like(plan)
    restated[:, 0] = 0.3 * (np.arange(h) + 4) * dt + 0.01  # the same path, 1 cm off
    assert agrees_with_plan(restated, later, dt, plan, 0, dt, within_m=0.02)
    assert not agrees_with_plan(restated, later, dt, plan, 0, dt, within_m=0.005)  # the limit counts
    departs = restated.copy()
    departs[:, 1] = 0.05  # 5 cm to the side: the scene changed
    assert not agrees_with_plan(departs, later, dt, plan, 0, dt, within_m=0.02)
    assert not agrees_with_plan(restated, later, dt, plan, 0, dt, within_m=0.0)  # off
    assert not agrees_with_plan(restated, later, dt, None, 0, dt, within_m=0.02)  # nothing executing
    # the plan covers less than half of the new chunk: replaced however well they agree
    late = int((h // 2 + 1) * dt * 1e9)
    tail = np.zeros_like(plan)
    tail[:, 0] = 0.3 * (np.arange(h) + h // 2 + 1) * dt
    assert not agrees_with_plan(tail, late, dt, plan, 0, dt, within_m=1.0)
    # the step marks it; with keeping off the same chunk is marked for sending
    card = replace(load_card(student_dir), dt=dt)
    obs = Observation({}, later, 1, later)
    for within, keeps in ((0.02, True), (0.0, False)):
        step = PolicyStep(card, lambda inputs: restated[None, None], keep_plan_within_m=within)
        step.prev = (plan, 0, dt)
        assert step.infer(obs).keeps_plan is keeps
    with pytest.raises(ValueError, match="keep_plan_within_m"):
        PolicyStep(card, lambda inputs: restated[None, None], keep_plan_within_m=-1.0)


def test_policy_step_warm_up_runs_the_deployed_batch_and_leaves_the_step_as_it_was(student_dir: Path) -> None:
    """The node warms its backend before the first observation; the noise stream and the executing chunk are
    untouched, so chunk k is the same with or without a warm-up."""
    card = load_card(student_dir)
    ort = open_backend("onnxruntime", student_dir)
    calls: list[dict] = []

    def backend(inputs: dict) -> np.ndarray:
        calls.append(inputs)
        return ort(inputs)

    warmed, cold = PolicyStep(card, backend, n_candidates=3, seed=5), PolicyStep(card, ort, n_candidates=3, seed=5)
    assert warmed.warm_up(calls=2) > 0
    assert len(calls) == 2 and all(c["noise"].shape == (1, 3, *card.inputs["noise"]) for c in calls)
    assert set(calls[0]) == set(card.input_names()) and warmed.prev is None
    obs = Observation({k: v for k, v in example_inputs(card, 1, 1, seed=9).items() if k != "noise"}, 0, 1, 0)
    np.testing.assert_array_equal(warmed.infer(obs).actions, cold.infer(obs).actions)


def test_resample_tail_interpolates() -> None:
    prev = np.arange(8, dtype=np.float32)[:, None].repeat(10, 1)
    vals, valid = resample_tail(prev, 0, 0.1, int(0.05e9), 0.1, 8)
    np.testing.assert_allclose(vals[:7, 0], np.arange(7) + 0.5, atol=1e-5)
    assert valid.tolist() == [True] * 7 + [False]


# --- observation assembly -----------------------------------------------------------------------------

def test_observation_assembler(student_dir: Path) -> None:
    card = load_card(student_dir)
    asm = ObservationAssembler(card, spec.BASE_FRAME)
    now = 5_000_000_000
    assert asm.assemble(now, 0.2) == (None, "waiting for points, ee pose, gripper")
    pts = np.random.default_rng(0).uniform(size=(4096, 3)).astype(np.float32)
    with pytest.raises(InputRejected, match="1000 points.*exactly 4096"):
        asm.set_points(pts[:1000], now, spec.BASE_FRAME)
    with pytest.raises(InputRejected, match="frame 'camera_link'"):
        asm.set_points(pts, now, "camera_link")
    with pytest.raises(InputRejected, match="gripper_width"):
        asm.set_gripper(("j1",), np.zeros(1), now)
    asm.set_points(pts, now - 100_000_000, spec.BASE_FRAME)
    asm.set_pose(np.array([0.4, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0]), now - 10_000_000, spec.BASE_FRAME)
    asm.set_gripper(("panda_joint1", "gripper_width"), np.array([0.3, 0.04]), now)
    obs, why = asm.assemble(now, 0.2)
    assert why == "" and obs.stamp_ns == now - 100_000_000  # the oldest part's time
    np.testing.assert_allclose(obs.inputs["proprio"][0], [0.4, 0, 0.3, 1, 0, 0, 0, 1, 0, 0.04], atol=1e-6)
    assert obs.inputs["points"].shape == (1, 4096, 3)
    obs, why = asm.assemble(now + 150_000_000, 0.2)
    assert obs is None and why.startswith("stale observation: points is 250 ms old")


def test_observation_assembler_cloud_history(tmp_path_factory: pytest.TempPathFactory) -> None:
    card = load_card(exported_student(tmp_path_factory, history_steps=4))  # points_prev: 0.2 s back
    asm = ObservationAssembler(card, spec.BASE_FRAME)
    frame_ns = 66_666_667  # a 15 fps camera: clouds are not STEP_DT apart

    def cloud(i: int) -> None:
        t = 10**9 + i * frame_ns
        asm.set_points(np.full((4096, 3), i, np.float32), t, spec.BASE_FRAME)
        asm.set_pose(np.array([0.4, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0]), t, spec.BASE_FRAME)
        asm.set_gripper(("gripper_width",), np.array([0.04]), t)

    def prev(i: int) -> float:
        obs, why = asm.assemble(10**9 + i * frame_ns, 0.5)
        assert why == "" and obs.inputs["points_prev"].shape == (1, 4096, 3)
        assert obs.inputs["points"][0, 0, 0] == i
        return float(obs.inputs["points_prev"][0, 0, 0])

    cloud(0)
    assert prev(0) == 0  # no history yet: the oldest cloud, as training repeats an episode's first one
    cloud(1)
    assert prev(1) == 0
    for i in range(2, 40):
        cloud(i)
        assert prev(i) == max(i - 3, 0)  # 0.2 s at 15 fps = 3 frames
    assert len(asm._clouds._kept) <= 5  # old clouds are dropped, not kept for ever
    asm.set_points(np.full((4096, 3), 7, np.float32), 10**9, spec.BASE_FRAME)  # time went back: a bag restarted
    asm.set_pose(np.array([0.4, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0]), 10**9, spec.BASE_FRAME)
    obs, _ = asm.assemble(10**9, 0.5)
    assert obs.inputs["points_prev"][0, 0, 0] == 7


def _moving_episode(tmp_path: Path) -> Path:
    """A recorded episode of an arm that starts at rest, accelerates along x and y and opens its gripper."""
    from flow2one.data.episodes import Episode, EpisodeMeta, write_episode

    n = 40
    t = np.arange(n) * spec.STEP_DT
    proprio = np.tile(np.array([0.4, 0.0, 0.3, 1, 0, 0, 0, -1, 0, 0.02], np.float32), (n, 1))
    proprio[:, 0] += 0.3 * t**2
    proprio[:, 1] += 0.1 * np.sin(3 * t)
    proprio[:, 9] += 0.01 * t
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, (n, spec.N_POINTS, 3)).astype(np.float32)
    ep = Episode(EpisodeMeta(task="track", source="test", success=None), t, proprio, proprio.copy(), points)
    return write_episode(tmp_path, 0, ep)


def _feed_state(asm: ObservationAssembler, p: np.ndarray, stamp: int) -> None:
    quat = matrix_to_quat(rot6d_to_matrix(p[3:9]))
    asm.set_pose(p[:3], quat, stamp, spec.BASE_FRAME)
    asm.set_gripper(("gripper_width",), p[9:10], stamp)


def _states_at_100hz(ep) -> tuple[np.ndarray, np.ndarray]:
    """(times, proprio) of an episode's robot state as the node gets it: 100 Hz, interpolated here."""
    fine = np.arange(0, ep.t[-1] + 1e-9, 0.01)
    return fine, np.stack([np.interp(fine, ep.t, ep.proprio[:, k]) for k in range(spec.PROPRIO_DIM)], 1)


def test_motion_input_is_the_same_in_training_windows_and_at_run_time(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """One recorded episode, two ways: its training windows, and its stream fed to the ObservationAssembler
    (the one object the policy node and the evaluation loop assemble observations with) as the evaluation
    feeds it (every control step) and as the node gets it (robot state at 100 Hz, clouds at 15 fps)."""
    from flow2one.data.episodes import read_episode
    from flow2one.data.windows import episode_windows

    card = load_card(exported_student(tmp_path_factory, motion_steps=4))
    ep = read_episode(_moving_episode(tmp_path))
    windows = episode_windows(ep, modalities=("points", "proprio"), motion_steps=4)["proprio"]
    assert windows.shape == (len(ep), 2 * spec.PROPRIO_DIM)
    np.testing.assert_array_equal(windows[:4, spec.PROPRIO_DIM:][0], 0)  # at rest at the start

    asm = ObservationAssembler(card, spec.BASE_FRAME)  # the evaluation loop's feed: one sample per step
    for i, ti in enumerate(ep.t):
        stamp = round(ti * 1e9)
        asm.set_points(ep.points[i], stamp, spec.BASE_FRAME)
        _feed_state(asm, ep.proprio[i], stamp)
        obs, why = asm.assemble(stamp, 0.1)
        assert why == ""
        np.testing.assert_allclose(obs.inputs["proprio"][0], windows[i], atol=1e-6)

    asm = ObservationAssembler(card, spec.BASE_FRAME)  # the node's: state at 100 Hz
    fine, states = _states_at_100hz(ep)
    for j, tj in enumerate(fine):
        _feed_state(asm, states[j], round(tj * 1e9))
        i = int(round(tj / spec.STEP_DT))
        if abs(tj - ep.t[i]) < 1e-9 and i >= 4:
            asm.set_points(ep.points[i], round(tj * 1e9), spec.BASE_FRAME)
            obs, _ = asm.assemble(round(tj * 1e9), 0.1)
            np.testing.assert_allclose(obs.inputs["proprio"][0], windows[i], atol=1e-5)


def test_state_at_cloud_gives_a_late_cloud_the_state_of_its_instant(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """On the robot a cloud reaches the policy after newer robot states (perception, the inference slot).
    With state_at_cloud the model gets the proprio and motion of the cloud's instant, which is what that
    cloud's training window holds, and the chunk starts at that instant; without it, the newest state."""
    from flow2one.data.episodes import read_episode
    from flow2one.data.windows import episode_windows

    card = load_card(exported_student(tmp_path_factory, motion_steps=4))
    ep = read_episode(_moving_episode(tmp_path))
    windows = episode_windows(ep, modalities=("points", "proprio"), motion_steps=4)["proprio"]
    fine, states = _states_at_100hz(ep)
    late = 6  # state samples (10 ms each) newer than the cloud when it arrives
    for at_cloud in (True, False):
        asm = ObservationAssembler(card, spec.BASE_FRAME, state_at_cloud=at_cloud)
        checked = 0
        for j in range(len(fine)):
            _feed_state(asm, states[j], round(fine[j] * 1e9))
            if j < late or (j - late) % 5 or (j - late) // 5 < 4:
                continue
            i, cloud_ns = (j - late) // 5, round(fine[j - late] * 1e9)  # episode step i's cloud arrives now
            asm.set_points(ep.points[i], cloud_ns, spec.BASE_FRAME)
            obs, why = asm.assemble(round(fine[j] * 1e9), 0.1)
            assert why == "" and obs.stamp_ns == cloud_ns
            proprio = obs.inputs["proprio"][0]
            if at_cloud:
                assert obs.origin_ns == cloud_ns
                np.testing.assert_allclose(proprio, windows[i], atol=1e-5)
            else:
                assert obs.origin_ns == round(fine[j] * 1e9)
                np.testing.assert_allclose(proprio[:spec.PROPRIO_DIM], states[j], atol=1e-5)
                assert not np.allclose(proprio, windows[i], atol=1e-4)  # the arm moved since the cloud
            checked += 1
        assert checked >= 25
    asm = ObservationAssembler(load_card(exported_student(tmp_path_factory)), spec.BASE_FRAME, state_at_cloud=True)
    _feed_state(asm, states[0], 10**9)
    asm.set_points(ep.points[0], 10**9 - 400_000_000, spec.BASE_FRAME)  # the state is fresh, the cloud is not
    assert asm.assemble(10**9, 0.25)[1].startswith("stale observation: points is 400 ms old")


def test_observation_assembler_images(student_dir: Path) -> None:
    base = load_card(student_dir)
    card = replace(base, inputs={"points": (4096, 3), "rgb": (2, 24, 32, 3), "depth": (2, 24, 32), "noise": (32, 10)},
                   cameras=("front", "wrist"))
    asm = ObservationAssembler(card, spec.BASE_FRAME)
    now = 1_000_000_000
    asm.set_points(np.zeros((4096, 3), np.float32), now, spec.BASE_FRAME)
    with pytest.raises(InputRejected, match=r"rgb image of camera 'wrist' has shape \(48, 64, 3\).*\(24, 32, 3\)"):
        asm.set_image("rgb", "wrist", np.zeros((48, 64, 3), np.uint8), now)
    with pytest.raises(InputRejected, match="no depth image from camera 'side'"):
        asm.set_image("depth", "side", np.zeros((24, 32), np.float32), now)
    for i, cam in enumerate(card.cameras):
        asm.set_image("rgb", cam, np.full((24, 32, 3), i, np.uint8), now)
    assert asm.assemble(now, 0.1) == (None, "waiting for depth front, depth wrist")
    for cam in card.cameras:
        asm.set_image("depth", cam, np.ones((24, 32), np.float32), now)
    obs, _ = asm.assemble(now, 0.1)
    assert set(obs.inputs) == {"points", "rgb", "depth"}  # no proprio: this model does not take it
    assert obs.inputs["rgb"].shape == (1, 2, 24, 32, 3) and obs.inputs["rgb"][0, 1].max() == 1
    assert obs.inputs["depth"].shape == (1, 2, 24, 32)
