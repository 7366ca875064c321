"""The point-cloud crop as a contract: recorded with the demos (sim and teleop), carried by training to the model
card, and refused where a model would be fed clouds of another crop (policy node, preflight, sim evaluations)."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flow2one import cli
from flow2one.data.bags import read_summary
from flow2one.data.convert_bags import CLOUD_DEFAULTS, convert_directory
from flow2one.data.distill_set import load_distill_set
from flow2one.data.episodes import Episode, EpisodeMeta, dataset_crop, read_episode, write_episode
from flow2one.data.recording import EpisodeRecorder, RecorderConfig
from flow2one.graph import linked_params, load_params
from flow2one.launch_graph import node_descriptions
from flow2one.perception.crop import CloudCrop, common_crop
from flow2one.preflight import _model
from flow2one.ros.runner import GraphRunner, with_links
from flow2one.runtime.card import CardError, ModelCard, load_card, save_card
from flow2one.sim.cameras import sim_cloud_crop
from flow2one.sim.evaluate import open_policy_step
from tests.test_convert_bags import make_bag
from tests.test_runtime import exported_student

SIM_BOX = CloudCrop.from_params(load_params("sim")["pointcloud"])  # what the sim graph's pointcloud node applies
# the table left out: the box floor 5 mm above the table top (results/replan/'s cropped students)
TABLE_OUT = replace(SIM_BOX, workspace_min=(*SIM_BOX.workspace_min[:2], 0.005))
FAST = ["--preset", "tiny", "--batch-size", "4", "--threads", "1", "--no-progress", "--steps", "2"]


def with_crop(src: Path, dst: Path, crop: CloudCrop | None) -> Path:
    shutil.copytree(src, dst)
    save_card(dst, replace(load_card(dst), cloud_crop=crop.to_dict() if crop else {}))
    return dst


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_student(tmp_path_factory)


def episodes(directory: Path, crops: list[CloudCrop | None]) -> Path:
    rng = np.random.default_rng(0)
    for i, crop in enumerate(crops):
        T = 10
        action = np.cumsum(rng.normal(0, 0.01, (T, 10)), 0).astype(np.float32)
        meta = EpisodeMeta(task="t", source="unit", success=True, cloud_crop=crop.to_dict() if crop else None)
        write_episode(directory, i, Episode(meta=meta, t=np.arange(T) * 0.05, proprio=action + 0.001, action=action,
                                            points=rng.uniform(-0.5, 0.5, (T, 4096, 3)).astype(np.float32)))
    return directory


def test_crops_compare_by_value_and_floor() -> None:
    assert SIM_BOX.same(CloudCrop.from_params(SIM_BOX.to_dict())) and not SIM_BOX.same(TABLE_OUT)
    assert not SIM_BOX.same(replace(SIM_BOX, voxel_size=0.005))
    assert SIM_BOX.same(replace(SIM_BOX, voxel_size=SIM_BOX.voxel_size + 1e-9))  # a YAML round trip's noise
    with pytest.raises(ValueError, match="max > min"):
        CloudCrop((0.0, 0.0, 0.5), (1.0, 1.0, 0.4), 0.01)
    with pytest.raises(ValueError, match="lacks voxel_size"):
        CloudCrop.from_params({"workspace_min": [0, 0, 0], "workspace_max": [1, 1, 1]})
    assert common_crop([SIM_BOX, SIM_BOX], "x") == SIM_BOX and common_crop([SIM_BOX, None], "x") is None
    with pytest.raises(ValueError, match="different point-cloud crops"):
        common_crop([SIM_BOX, TABLE_OUT], "x")


def test_card_records_the_crop_and_refuses_another(student_dir: Path, tmp_path: Path) -> None:
    d = with_crop(student_dir, tmp_path / "m", TABLE_OUT)
    card = load_card(d)
    assert card.crop == TABLE_OUT and ModelCard.from_dict(card.to_dict()) == card
    card.check(crop=TABLE_OUT)
    with pytest.raises(CardError, match=r"cropped to box \[0.1, -0.5, 0.005\].*crops to box \[0.1, -0.5, -0.01\]"):
        card.check(crop=SIM_BOX)
    load_card(student_dir).check(crop=SIM_BOX)  # a card that records no crop cannot be checked, and passes
    with pytest.raises(CardError, match="max > min"):
        ModelCard.from_dict({**card.to_dict(), "cloud_crop": {**TABLE_OUT.to_dict(), "workspace_max": [0, 0, 0]}})


def test_training_carries_the_episodes_crop_to_every_card(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = episodes(tmp_path / "eps", [TABLE_OUT] * 3)
    assert dataset_crop(data) == TABLE_OUT
    teacher, dset, student = tmp_path / "teacher", tmp_path / "set.safetensors", tmp_path / "student"
    assert cli.main(["train-teacher", "--data", str(data), "--out", str(teacher), *FAST]) == 0
    assert load_card(teacher).crop == TABLE_OUT
    assert cli.main(["distill", "--teacher", str(teacher), "--data", str(data), "--out", str(dset), "--k", "2",
                     "--steps", "2", "--max-obs", "4", "--threads", "1", "--no-progress"]) == 0
    assert CloudCrop.from_params(load_distill_set(dset)[2]["cloud_crop"]) == TABLE_OUT
    assert cli.main(["train-student", "--data", str(dset), "--out", str(student), "--steps", "2", "--hypotheses", "2",
                     "--batch-size", "2", "--threads", "1", "--no-progress"]) == 0
    assert load_card(student).crop == TABLE_OUT
    assert cli.main(["export", str(student)]) == 0  # `flow2one export` completes the card and keeps the crop
    assert load_card(student).crop == TABLE_OUT
    assert cli.main(["train-l1flow", "--data", str(data), "--out", str(tmp_path / "l1"), *FAST]) == 0
    assert load_card(tmp_path / "l1").crop == TABLE_OUT

    # a teacher of one crop labelling clouds of another is refused; so is a dataset of two crops
    # (one line each, and nothing written)
    other = episodes(tmp_path / "other", [SIM_BOX] * 2)
    capsys.readouterr()
    assert cli.main(["distill", "--teacher", str(teacher), "--data", str(other), "--out", str(tmp_path / "x.st"),
                     "--k", "2", "--steps", "2", "--max-obs", "4", "--threads", "1", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(r"trained on clouds cropped to box .*0\.005.* the episodes of .* to box", err)
    mixed = episodes(tmp_path / "mixed", [SIM_BOX, TABLE_OUT])
    assert cli.main(["train-teacher", "--data", str(mixed), "--out", str(tmp_path / "t2"), *FAST]) != 0
    assert "different point-cloud crops" in capsys.readouterr().err
    assert not (tmp_path / "x.st").exists() and not (tmp_path / "t2" / "model.safetensors").exists()
    # episodes recorded before the crop was: the card says nothing of it rather than guess
    old = episodes(tmp_path / "old", [None, TABLE_OUT])
    assert cli.main(["train-regression", "--data", str(old), "--out", str(tmp_path / "reg"), *FAST]) == 0
    assert load_card(tmp_path / "reg").crop is None


def test_teleop_episodes_record_the_crop(tmp_path: Path) -> None:
    rec = EpisodeRecorder(RecorderConfig(str(tmp_path / "rec"), task="push", cloud_crop=TABLE_OUT.to_dict()))
    rec.handle_event("start", 10)
    assert CloudCrop.from_params(read_summary(rec.stop(True)).episode.cloud_crop) == TABLE_OUT
    # the converter keeps the recorder's record of a recorded cloud ...
    make_bag(tmp_path / "bags" / "episode_00000.mcap", cloud_crop=TABLE_OUT.to_dict())
    make_bag(tmp_path / "bags" / "episode_00001.mcap")  # recorded before the crop was
    reports = convert_directory(tmp_path / "bags", tmp_path / "data", progress=False)
    eps = [read_episode(tmp_path / "data" / r.episode) for r in reports]
    assert eps[0].meta.crop() == TABLE_OUT and eps[1].meta.crop() is None
    # ... and a cloud it builds from depth (no cloud in the bag) has the recording graph's crop
    assert CloudCrop.from_params(CLOUD_DEFAULTS) == CloudCrop.from_params(load_params("teleop_record")["pointcloud"])


@pytest.mark.parametrize(("record", "run"), [("sim_teleop_record", "sim"), ("teleop_record", "deploy"),
                                             ("teleop_record", "replay")])
def test_demos_are_recorded_with_the_crop_the_models_run_on(record: str, run: str) -> None:
    """A model trained on a graph's recordings must pass the check of the graph it is deployed in."""
    assert CloudCrop.from_params(load_params(record)["pointcloud"]) == CloudCrop.from_params(load_params(run)["pointcloud"])


def test_the_graph_links_the_pointcloud_crop_to_policy_and_recorder(tmp_path: Path) -> None:
    for graph_name, node in (("sim", "policy"), ("deploy", "policy"), ("replay", "policy"),
                             ("teleop_record", "recorder"), ("sim_teleop_record", "recorder")):
        (desc,) = [d for d in node_descriptions(graph_name) if d["name"] == node]
        linked = desc["parameters"][-1]
        box = load_params(graph_name)["pointcloud"]
        assert CloudCrop.from_params({k.removeprefix("cloud_"): v for k, v in linked.items()}) == \
            CloudCrop.from_params(box), graph_name
    # a later parameter file or an override of the pointcloud node moves the policy's copy with it
    extra = tmp_path / "lab.yaml"
    extra.write_text("pointcloud:\n  ros__parameters:\n    workspace_min: [0.1, -0.5, 0.005]\n")
    (desc,) = [d for d in node_descriptions("deploy", extra_params_files=(extra,)) if d["name"] == "policy"]
    assert desc["parameters"][-1]["cloud_workspace_min"] == [0.1, -0.5, 0.005]
    moved = with_links("sim", ["pointcloud", "policy"], {"pointcloud": {"voxel_size": 0.02}})
    assert moved["policy"]["cloud_voxel_size"] == 0.02 and moved["policy"]["cloud_workspace_max"] == [0.9, 0.5, 0.6]
    # a value set on the policy itself wins; a node not started gets nothing
    own = with_links("sim", ["policy"], {"policy": {"cloud_voxel_size": 0.03}})["policy"]
    assert own["cloud_voxel_size"] == 0.03 and own["cloud_workspace_min"] == [0.1, -0.5, -0.01]
    assert linked_params([load_params("sim")], ["executor"]) == {}


def test_policy_node_refuses_a_model_of_another_crop(student_dir: Path, tmp_path: Path, domain_id: int) -> None:
    cropped = with_crop(student_dir, tmp_path / "cropped", TABLE_OUT)
    with pytest.raises(CardError, match=r"cropped to box \[0.1, -0.5, 0.005\]"):
        with GraphRunner("sim", nodes=["policy"], overrides={"policy": {"model_dir": str(cropped)}},
                         domain_id=domain_id):
            pass
    # the same model starts where the pointcloud node crops its clouds alike
    same = with_crop(student_dir, tmp_path / "same", SIM_BOX)
    with GraphRunner("sim", nodes=["policy"], overrides={"policy": {"model_dir": str(same)}}, domain_id=domain_id) as g:
        assert g.nodes["policy"].p.cloud_crop == SIM_BOX


def test_preflight_and_sim_evaluations_refuse_a_model_of_another_crop(student_dir: Path, tmp_path: Path) -> None:
    cropped = with_crop(student_dir, tmp_path / "cropped", TABLE_OUT)
    def policy(box: dict) -> dict:  # the policy's parameters as the graph links them to a pointcloud section
        return {"model_dir": str(cropped), **linked_params([{"pointcloud": box}], ["policy"])["policy"]}

    check, _ = _model(policy(load_params("sim")["pointcloud"]))
    assert check.status == "FAIL" and "0.005" in check.detail
    check, _ = _model(policy(TABLE_OUT.to_dict()))
    assert check.status == "OK" and "pointcloud parameters" in check.detail
    check, _ = _model({"model_dir": str(cropped)})  # no crop known: not checked, and said so
    assert check.status == "OK" and "not checked" in check.detail
    assert sim_cloud_crop() == SIM_BOX
    with pytest.raises(CardError, match="crops to box"):
        open_policy_step(cropped, "onnxruntime")
    open_policy_step(with_crop(student_dir, tmp_path / "same", SIM_BOX), "onnxruntime").close()
