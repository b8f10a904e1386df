"""The deployment chosen on validation classes, written ready to serve, and served as the experiment searched."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from asymret.core.space import Embeddings
from asymret.index import ExactIndex
from asymret.pipeline.deploy import VALIDATION_METRIC, choose_deployment, deployment_paths, write_deployment
from asymret.pipeline.runner import RunConfig, experiment_of

CONFIG = {
    "name": "deploy-toy",
    "dataset": {"kind": "glyphs", "options": {"size": 32, "max_classes": 40}},
    "experiment": {
        "train_size": 0, "test_size": 0, "seeds": [0, 1], "embedding_dim": 16, "kd_epochs": 1, "validation_classes": 6,
        "instance_ks": [], "robust_ensemble": True, "psi": {"epochs": 3, "hidden_dim": 32},
        "query": {"name": "query:convnet-xs", "arch": "convnet-xs", "epochs": 2, "center": True},
        "gallery": [{"name": "gallery:convnet-s", "arch": "convnet-s", "epochs": 2, "center": True},
                    {"name": "gallery:resnet-tiny", "arch": "resnet-tiny", "epochs": 1, "center": True}],
    },
}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    experiment = experiment_of(RunConfig.from_dict(CONFIG), root / "work")
    rows, _ = experiment.run(root / "results")
    choice = choose_deployment(rows, experiment.complexity)
    folder = write_deployment(experiment, choice, root / "deployment")
    return experiment, rows, choice, folder


def test_the_choice_is_the_best_validation_row_and_names_its_test_figures(deployed):
    _, rows, choice, _ = deployed
    scored = {row.setting: row for row in rows if VALIDATION_METRIC in row.metrics}
    assert {"KD baseline", "CMCE ensemble", "CMCE robust ensemble", "CMCE single ψ", "symmetric"} <= {s.split(":")[0].split(" (")[0] for s in scored}
    assert choice["setting"] in scored and choice["candidates"].keys() == scored.keys()
    assert choice["validation_recall@1"] == max(np.mean(row.metrics[VALIDATION_METRIC]) for row in scored.values())
    assert choice["test_recall@1"] == pytest.approx(np.mean(scored[choice["setting"]].metrics["recall@1"]))
    assert not any(VALIDATION_METRIC in row.metrics for row in rows if row.setting.startswith("asymmetric, no transformation"))


def test_the_robust_ensemble_is_never_below_its_best_member_on_validation(deployed):
    _, rows, _, _ = deployed
    validation = {row.setting: row.metrics[VALIDATION_METRIC][0] for row in rows if VALIDATION_METRIC in row.metrics}
    robust = next(v for s, v in validation.items() if s.startswith("CMCE robust ensemble"))
    singles = [v for s, v in validation.items() if s.startswith("CMCE single ψ")]
    assert len(singles) == 2 and robust >= max(singles)


def test_the_robust_ensemble_is_one_row_whatever_members_each_seed_keeps(deployed):
    """Seeds may keep different members: one row (its values one per seed, the members of each in ``members``),
    so that its validation mean is over every seed as the other rows' are."""
    _, rows, _, _ = deployed
    robust = [row for row in rows if row.setting.startswith("CMCE robust ensemble (members chosen on validation)")]
    assert len(robust) == 1 and robust[0].setting.endswith("mean of the kept ψ's")
    assert len(robust[0].metrics["recall@1"]) == 2 and len(robust[0].extra["members"]) == 2
    assert all(set(kept.split("+")) <= {"convnet-s", "resnet-tiny"} for kept in robust[0].extra["members"])


def test_the_deployment_folder_serves_the_same_top_k_as_the_experiments_index(deployed):
    experiment, _, choice, folder = deployed
    _served_top_k_equals_the_experiments(experiment, folder, experiment.deployables[choice["setting"]]())


def _served_top_k_equals_the_experiments(experiment, folder, deployable, positions=(0, 7, 23)) -> None:
    from fastapi.testclient import TestClient

    from asymret.service import ServiceConfig, create_app
    from asymret.service.state import png_bytes

    index_dir, query_dir, _ = deployment_paths(folder)
    expected_index = ExactIndex.from_embeddings(deployable.gallery)
    with TestClient(create_app(ServiceConfig(index=str(index_dir), query_model=str(query_dir)))) as client:
        for row in positions:
            pixels = experiment.test_queries.load(row)
            answer = client.post("/search", files={"image": ("q.png", png_bytes(pixels), "image/png")}, data={"k": "5"})
            assert answer.status_code == 200, answer.text
            vector = deployable.query_model.embed_images([pixels])
            expected = expected_index.search(Embeddings(vector, np.array(["q"]), expected_index.space), k=5)
            assert [hit["id"] for hit in answer.json()["queries"][0]["results"]] == expected.ids[0].tolist()


def test_compare_rows_a_user_could_deploy_are_candidates_and_serve(deployed, tmp_path):
    """Every trained query model against its gallery and the combinations (CMCE on the distilled query model) carry a
    validation R@1 and are deployed like the experiment's rows; the symmetric and untrained rows are not candidates."""
    from asymret.pipeline.compare import CompareConfig, run_comparison

    experiment, _, _, _ = deployed
    compare = CompareConfig(methods=("distill-cos",), teacher="gallery:convnet-s", raml_gallery="", combination_method="distill-cos")
    rows, _ = run_comparison(experiment, compare, tmp_path / "compare")
    scored = {row.setting for row in rows if VALIDATION_METRIC in row.metrics}
    assert {setting.split(":")[0] for setting in scored} == {"distill-cos", "combination"} and len(scored) == 3
    combination = next(row for row in rows if row.setting.startswith("combination: CMCE ensemble"))
    assert len(combination.metrics[VALIDATION_METRIC]) == 2 and combination.extra["query_flops"][0] > 0
    folder = write_deployment(experiment, choose_deployment([combination]), tmp_path / "deployment")
    _served_top_k_equals_the_experiments(experiment, folder, experiment.deployables[combination.setting]())


def test_a_folder_that_is_not_a_deployment_is_refused(tmp_path, deployed):
    _, _, _, folder = deployed
    with pytest.raises(FileNotFoundError, match="manifest"):
        deployment_paths(tmp_path)
    with pytest.raises(ValueError, match="'deployment'"):
        deployment_paths(folder / "index")


RERANK = {"methods": ["maxsim", "ames"], "modes": ["symmetric", "asymmetric"], "storages": ["float16"], "budget": 8, "codec_dim": 16,
          "shortlist": 10, "ames": {"dim": 16, "layers": 1, "heads": 2, "ffn": 32, "query_budget": 8, "database_budget": 4,
                                    "shortlist": 8, "pairs_per_epoch": 512, "epochs": 1, "batch_size": 64}}


@pytest.fixture(scope="module")
def reranked(deployed, tmp_path_factory):
    from asymret.pipeline.rerank import RerankConfig, run_rerank

    experiment, rows, _, _ = deployed
    rerank_rows, _ = run_rerank(experiment, RerankConfig.from_dict(RERANK), tmp_path_factory.mktemp("rerank-results"))
    return experiment, rows, rerank_rows


def test_rerank_rows_are_deployment_candidates_scored_on_validation(reranked):
    _, rows, rerank_rows = reranked
    candidates = [row for row in rerank_rows if VALIDATION_METRIC in row.metrics]
    assert {row.setting.split(":")[0] for row in candidates} == {"symmetric", "asymmetric"}
    assert not any(VALIDATION_METRIC in row.metrics for row in rerank_rows if "global only" in row.setting)
    choice = choose_deployment([*rows, *rerank_rows])
    assert choice["candidates"].keys() >= {row.setting for row in candidates}
    chosen = next(row for row in [*rows, *rerank_rows] if row.setting == choice["setting"])
    assert ("rerank" in choice) == (chosen in rerank_rows)
    only_rerank = choose_deployment(candidates)
    assert only_rerank["rerank"]["shortlist"] == 10 and only_rerank["rerank"]["bytes_per_image"] > 0


@pytest.mark.parametrize("prefix", ["symmetric: + MaxSim", "asymmetric: + AMES"])
def test_a_reranking_deployment_serves_the_experiments_reranked_top_k(reranked, tmp_path, prefix):
    """The folder's re-ranking (codec, database descriptors, the query side's local layer in ONNX) answers an
    uploaded image as the experiment's re-ranker answers it from the torch model's descriptors."""
    from fastapi.testclient import TestClient

    from asymret.encoders.local import local_descriptors, local_space
    from asymret.rerank import LocalDescriptors, PairSide, Reranking
    from asymret.service import ServiceConfig, create_app
    from asymret.service.state import png_bytes

    experiment, _, rerank_rows = reranked
    row = next(row for row in rerank_rows if row.setting.startswith(prefix))
    folder = write_deployment(experiment, choose_deployment([row]), tmp_path / "deployment")
    paths = deployment_paths(folder)
    assert paths.rerank is not None
    deployable = experiment.deployables[row.setting]()
    query_model, spec, plan = deployable.query_model, deployable.rerank.query_spec, deployable.rerank
    database = PairSide.from_local(plan.gallery_local, plan.database_budget, codec=plan.codec, embeddings=plan.gallery_embeddings)
    expected_index = Reranking(plan.reranker, database, database).over(ExactIndex.from_embeddings(deployable.gallery), plan.shortlist)
    moved = 0
    with TestClient(create_app(ServiceConfig(index=str(paths.index), query_model=str(paths.query), rerank=str(paths.rerank)))) as client:
        assert client.get("/info").json()["rerank"]["method"] == plan.reranker.kind
        for position in (0, 5, 11, 17):
            pixels = experiment.test_queries.load(position)
            answer = client.post("/search", files={"image": ("q.png", png_bytes(pixels), "image/png")}, data={"k": "5"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["reranked"] is True
            vector = query_model.embed_images([pixels])
            queries = Embeddings(vector, np.array(["q"]), deployable.gallery.space)
            with torch.no_grad():
                rows = local_descriptors(query_model.eval(), query_model.preprocess([pixels]), spec).numpy()
            local = LocalDescriptors.from_embeddings(Embeddings(rows, np.array(["q"]), local_space(query_model, spec)), spec)
            side = PairSide.from_local(local, plan.query_budget, codec=plan.codec if plan.project_queries else None, stored=False,
                                       embeddings=queries)
            expected = expected_index.reranking.with_queries(side).over(expected_index.index, plan.shortlist).search(queries, k=5)
            served = [hit["id"] for hit in answer.json()["queries"][0]["results"]]
            assert served == expected.ids[0].tolist()
            moved += served != ExactIndex.from_embeddings(deployable.gallery).search(queries, k=5).ids[0].tolist()
        # an embedding query has no local descriptors: the global search alone, and the answer says so
        body = {"embedding": vector[0].tolist(), "fingerprint": deployable.gallery.space.fingerprint, "k": 5}
        assert client.post("/search", json=body).json()["reranked"] is False
    assert moved > 0  # the re-ranking changed some top-5: the comparison above is not the global search twice
