"""Slow: distil_trainers.papers.feature_kd_pipeline (formerly recipes/feature_kd.py) end to end on a small real slice of Davidson, with a tiny 6-layer BERT (random weights,
MiniLM's tokenizer) standing in for MiniLM: the four methods, a born-again generation, the table, and reuse of
finished stages on a rerun."""

from __future__ import annotations

import json

from conftest import load_script, real_data_marks, tiny_minilm_base

from distil_trainers import AnnealingArguments

pytestmark = real_data_marks()


def test_feature_kd_recipe_compares_methods_and_born_again_generations(tmp_path, capsys):
    recipe = load_script("distil_trainers.papers.feature_kd_pipeline")
    base = tiny_minilm_base(tmp_path / "base", layers=6, max_position_embeddings=128, seed=0)
    recipe_args = recipe.RecipeArguments(
        dataset_name=["davidson"], teacher_base=base, teacher_epochs=1, teacher_learning_rate=1e-3,
        max_train_samples=96, max_eval_samples=48, born_again_generations=1, born_again_method="ffn_cls",
    )
    args = AnnealingArguments(
        output_dir=str(tmp_path / "run"), num_train_epochs=1, learning_rate=1e-3, per_device_train_batch_size=16,
        per_device_eval_batch_size=48, max_length=24, eval_strategy="no", save_strategy="epoch", save_total_limit=1,
        logging_steps=1, report_to="none", seed=0, disable_tqdm=True, use_cpu=True,
    )
    result = recipe.main(recipe_args, args)
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == {"teacher", "baseline", "annealing", "ffn", "ffn_cls", "born_again_g1"}
    assert all(0.0 <= row["f1_macro"] <= 1.0 and row["task"] == "davidson" for row in rows.values())
    assert rows["born_again_g1"]["params"] == rows["teacher"]["params"] > rows["ffn"]["params"]

    run = tmp_path / "run"
    saved = json.loads((run / "results.json").read_text())
    assert saved["born_again_generations"] == 1 and len(saved["rows"]) == 6
    table = (run / "results.md").read_text()
    assert "born-again g1 (ffn_cls from g0)" in table and "student, FFN + CLS distillation" in table

    # the ffn methods logged their feature terms; ffn_cls also the [CLS] ones; annealing none
    def logged(stage):
        history = json.loads((run / stage / "log_history.json").read_text())
        return set().union(*[h.keys() for h in history if "loss" in h])

    assert {"loss_mse", "loss_feature", "loss_feature/embeddings_kl", "loss_feature/hidden_kl_s3_t6",
            "loss_feature/hidden_similarity_kl_s3_t6"} <= logged("ffn")
    assert "loss_feature/cls_kl_s1_t2" in logged("ffn_cls") and "loss_feature/cls_kl_s1_t2" not in logged("ffn")
    assert "loss_feature/cls_kl_s6_t6" in logged("born_again/g1")  # same architecture: the identity layer map
    assert not any(k.startswith("loss_feature") for k in logged("annealing"))

    # a rerun reuses every finished stage
    capsys.readouterr()
    recipe.main(recipe_args, args)
    out = capsys.readouterr().out
    for stage in ("baseline", "annealing", "ffn", "ffn_cls", "g1"):
        assert f"[{stage}] reusing the finished model" in out
