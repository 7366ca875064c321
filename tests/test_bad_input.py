"""Bad input gets one clear line and loses no data: every case is a real command line run through
`flow2one.cli.main`; each must exit non-zero with exactly one line on stderr (no traceback) and leave every
input file byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from flow2one.cli import main as cli_main
from tests.test_convert_bags import make_bag


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs the bad commands point at: a good bag, broken bags, a dataset-less folder, a model dir."""
    from tests.test_runtime import exported_student

    root = tmp_path_factory.mktemp("inputs")
    good = make_bag(root / "bags" / "episode_00000.mcap", seconds=1.0)
    data = good.read_bytes()
    (root / "garbage.mcap.part").write_bytes(b"this is not an mcap file at all" * 10)
    (root / "cut.mcap").write_bytes(data[: len(data) // 2])
    (root / "empty_folder" / "nested").mkdir(parents=True)
    (root / "corrupt_model").mkdir()
    (root / "corrupt_model" / "config.yaml").write_text("kind: [unclosed\n")
    student = exported_student(tmp_path_factory)
    shutil.copytree(student, root / "truncated_onnx")
    onnx = root / "truncated_onnx" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:500])
    (root / "trained").mkdir()
    (root / "trained" / "model.safetensors").write_bytes(b"weights")
    (root / "images").mkdir()
    (root / "params.yaml").write_text("policy: {ros__parameters: {rate_hz: [}\n")
    return root


CASES = {  # name: (argv with {d} for the inputs folder, expected exit code, words the line must hold)
    "set_misspelled": (["run", "sim", "--set", "policy.rat_hz=2"], 1, "rate_hz"),
    "set_wrong_type": (["run", "sim", "--set", "policy.rate_hz=fast"], 1, "must be float"),
    "set_malformed": (["run", "sim", "--set", "policy.rate_hz"], 2, "NODE.PARAM=VALUE"),
    "params_file_missing": (["run", "sim", "--params-file", "{d}/nope.yaml"], 1, "nope.yaml"),
    "params_file_broken": (["run", "sim", "--params-file", "{d}/params.yaml"], 1, "params.yaml"),
    "unknown_node": (["run", "sim", "--nodes", "camra"], 2, "unknown node"),
    "model_dir_missing": (["export", "{d}/no_model"], 1, "no_model"),
    "model_dir_corrupt": (["export", "{d}/corrupt_model"], 1, "corrupt_model"),
    "onnx_truncated": (["run", "deploy", "--nodes", "policy", "--set", "policy.model_dir={d}/truncated_onnx",
                        "--set", "policy.backend=onnxruntime", "--set", "policy.device=cpu"], 1, "model.onnx"),
    "dataset_missing": (["train-teacher", "--data", "{d}/no_data", "--out", "{d}/new_model", "--steps", "2"], 1,
                        "no_data"),
    "steps_zero": (["train-teacher", "--data", "{d}/bags", "--out", "{d}/new_model", "--steps", "0"], 1, "--steps"),
    "dagger_without_lead": (["sim-demos", "--task", "track", "--out", "{d}/new_demos", "--dagger-policy",
                             "{d}/truncated_onnx"], 2, "--expert-lead"),
    "dagger_not_a_model": (["sim-demos", "--task", "track", "--out", "{d}/new_demos", "--expert-lead", "0.18",
                            "--dagger-policy", "{d}/empty_folder"], 2, "card.yaml"),
    "clean_grasp_without_dart": (["sim-demos", "--task", "pick_place", "--out", "{d}/new_demos",
                                  "--dart-clean-grasp"], 2, "--dart-noise"),
    "wide_floor_above_box": (["sim-demos", "--task", "track", "--out", "{d}/new_demos", "--wide-floor-z", "0.7"], 2,
                             "--wide-floor-z must be below"),
    "wide_floor_nan": (["sim-demos", "--task", "track", "--out", "{d}/new_demos", "--wide-floor-z", "nan"], 2,
                       "--wide-floor-z must be below"),
    "train_over_model": (["train-teacher", "--data", "{d}/bags", "--out", "{d}/trained"], 1, "--resume"),
    "calibrate_missing": (["calibrate", "--camera", "front", "--images", "{d}/no_images"], 1, "no_images"),
    "calibrate_no_images": (["calibrate", "--camera", "front", "--images", "{d}/images"], 2, "no .png"),
    "sim_eval_typo": (["sim-eval", "--policy", "exprt"], 1, "exprt"),
    "recover_garbage": (["recover-bag", "{d}/garbage.mcap.part"], 1, "nothing to recover"),
    "recover_missing": (["recover-bag", "{d}/none.mcap.part"], 1, "no such file"),
    "convert_no_bags": (["convert", "{d}/empty_folder", "{d}/out_data"], 1, "no bags found"),
    "convert_bad_profile": (["convert", "{d}/bags", "{d}/out_data", "--profile", "realsens"], 1, "realsense_franka"),
    "replay_truncated": (["replay", "{d}/cut.mcap"], 1, "recover-bag"),
    "replay_missing_cameras": (["replay", "{d}/bags/episode_00000.mcap", "--set",
                                "pointcloud.calibration_file=calibration/lab_d435.yaml"], 1, "side"),
    "replay_own_process_typo": (["replay", "{d}/bags/episode_00000.mcap", "--own-process", "pointclod"], 1,
                                "pointclod"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line_and_changes_nothing(name: str, inputs: Path, capsys) -> None:
    argv, code, words = CASES[name]
    before = _checksums(inputs)
    capsys.readouterr()
    rc = cli_main([a.replace("{d}", str(inputs)) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"flow2one {argv[0]}: error: ") or ": NOT recovered: " in lines[0], lines[0]
    assert words in lines[0], lines[0]
    after = _checksums(inputs)
    assert {k: v for k, v in after.items() if k in before} == before  # no input changed or vanished


def test_recover_bag_keeps_its_input_and_says_when_there_is_nothing_to_do(inputs: Path, tmp_path: Path,
                                                                        capsys) -> None:
    from tests.test_bags import _write_bag

    full = _write_bag(tmp_path / "full.mcap", n=40, flush=0.0).close()  # a chunk per message pair
    cut = tmp_path / "episode_00003.mcap"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    before = cut.read_bytes()
    assert cli_main(["recover-bag", str(cut)]) == 0
    assert cut.read_bytes() == before and (tmp_path / "episode_00003.recovered.mcap").is_file()
    assert "episode_00003.recovered.mcap" in capsys.readouterr().out
    assert cli_main(["recover-bag", str(cut)]) == 1  # the output exists: refused, not overwritten
    assert "exists" in capsys.readouterr().err
    assert cli_main(["recover-bag", str(cut), "--out", str(tmp_path / "again.mcap")]) == 0
    assert cli_main(["recover-bag", str(inputs / "bags" / "episode_00000.mcap")]) == 0
    assert "already complete" in capsys.readouterr().out
    assert not (inputs / "bags" / "episode_00000.recovered.mcap").exists()


def test_debug_shows_the_traceback(inputs: Path) -> None:
    with pytest.raises(ValueError, match="rat_hz"):
        cli_main(["run", "sim", "--set", "policy.rat_hz=2", "--debug"])


def test_main_returns_to_its_caller_even_after_a_sim_abandoned_a_robot_client(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Only the `flow2one` executable may leave without interpreter teardown; main() called from a test run
    must return, or the run would end there with whatever status that command had (0 hides every test
    after it)."""
    from flow2one.sim import rig

    monkeypatch.setattr(rig, "ABANDONED", [object()])
    assert cli_main(["recover-bag", str(tmp_path / "missing.mcap")]) != 0
    assert "error" in capsys.readouterr().err
