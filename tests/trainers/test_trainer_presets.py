"""trainers.presets: Pythia's real architectures and the seed's recipe as defaults."""

from __future__ import annotations

import pytest
import torch

from trainers.presets import PADDED_VOCAB, PRESETS, TrainConfig
from trainers.train import build_parser, lr_at

# Total parameters of EleutherAI's released checkpoints (50,304-row untied embeddings included).
PUBLISHED_TOTAL = {
    "pythia-14m": 14_067_712,
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
    "pythia-410m": 405_334_016,
    "pythia-1.4b": 1_414_647_808,
}
# Pythia paper, table 1: non-embedding parameters.
PUBLISHED_NON_EMBEDDING = {
    "pythia-70m": 18_915_328,
    "pythia-160m": 85_056_000,
    "pythia-410m": 302_311_424,
    "pythia-1.4b": 1_208_602_624,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTAL))
def test_parameter_counts_match_pythia(name):
    total = PRESETS[name].num_params()  # built on the meta device: no memory used
    assert abs(total - PUBLISHED_TOTAL[name]) / PUBLISHED_TOTAL[name] < 0.02
    if name in PUBLISHED_NON_EMBEDDING:
        non_emb = PRESETS[name].num_params(non_embedding=True)
        assert abs(non_emb - PUBLISHED_NON_EMBEDDING[name]) / PUBLISHED_NON_EMBEDDING[name] < 0.02


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_pythia_architecture(name):
    config = PRESETS[name].model_config()
    assert config.vocab_size == PADDED_VOCAB == 50_304
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    assert config.rope_parameters["rope_theta"] == 10_000
    assert config.use_parallel_residual and not config.tie_word_embeddings
    assert config.intermediate_size == 4 * config.hidden_size
    assert config.max_position_embeddings == 2048 and config.layer_norm_eps == 1e-5
    assert config.eos_token_id == 0


def test_pythia_init():
    import math

    from trainers.train import build_model

    model = build_model(TrainConfig.from_preset("tiny"), checkpoint=None)
    d, n_layers = 64, 2
    small, wang = math.sqrt(2 / (5 * d)), 2 / (n_layers * math.sqrt(d))
    params = dict(model.named_parameters())
    assert params["gpt_neox.embed_in.weight"].std().item() == pytest.approx(small, rel=0.01)
    assert model.get_output_embeddings().weight.std().item() == pytest.approx(small, rel=0.01)
    assert params["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"].std().item() == pytest.approx(
        wang, rel=0.05)
    assert params["gpt_neox.layers.1.attention.dense.bias"].abs().sum() == 0
    again = build_model(TrainConfig.from_preset("tiny"), checkpoint=None)  # seeded
    assert all(torch.equal(p, dict(again.named_parameters())[n]) for n, p in params.items())


def test_tiny_is_tiny():
    assert PRESETS["tiny"].num_params() < 7_000_000
    assert PRESETS["tiny"].num_params(non_embedding=True) < 200_000


def test_defaults_are_the_seed_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps) == (6e-4, 6e-5, 10, 1024)
    assert (cfg.betas, cfg.eps, cfg.weight_decay) == ((0.9, 0.95), 1e-8, 0.01)
    assert (cfg.clip, cfg.seed) == (1.0, 42)
    assert (cfg.batch_size, cfg.seq_len, cfg.packing, cfg.eval_every) == (1024, 2048, False, 100)
    assert (cfg.dataset, cfg.split, cfg.val_split) == ("minipile", "train", "validation")
    big = TrainConfig.from_preset("pythia-1.4b")
    assert (big.lr, big.min_lr) == (2e-4, 2e-5)
    assert TrainConfig.from_preset("tiny", lr=1e-3).lr == 1e-3  # explicit beats preset
    with pytest.raises(KeyError):
        TrainConfig.from_preset("pythia-7b")


def test_db_default_follows_env(monkeypatch):
    monkeypatch.setenv("PILEHOUSE_DB", "/somewhere/else.duckdb")
    assert TrainConfig().db == "/somewhere/else.duckdb"
    monkeypatch.delenv("PILEHOUSE_DB")
    assert TrainConfig().db == "warehouse/pilehouse.duckdb"


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(recipe="pilehouse")  # cosine_to_min; the seed's is in test_optimizer.py
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(6e-5) and lrs[9] == pytest.approx(6e-4)  # 10 warm-up steps
    assert lrs[10] == pytest.approx(6e-4)
    assert lrs[-1] == pytest.approx(6e-5)  # cosine ends at min_lr on the last step
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_run_id_is_stable_and_config_sensitive(tmp_path):
    def run_id(**kw):
        return TrainConfig.from_preset("tiny", out_dir=str(tmp_path), **kw).default_run_id()

    assert run_id() == run_id() and run_id().startswith("tiny-minipile-")
    assert run_id() != run_id(seed=1)
    assert run_id() != TrainConfig.from_preset("tiny", out_dir="elsewhere").default_run_id()
    # Operational fields (how often to log, micro-batching) keep the id: such a rerun resumes.
    assert run_id() == run_id(micro_batch_size=4, eval_every=7)


def test_cli_has_a_flag_for_every_field():
    args = vars(build_parser().parse_args([
        "--preset", "tiny", "--dataset", "sql:select text from documents", "--packing",
        "--no-shuffle", "--betas", "0.9", "0.99", "--eval-batches", "none", "--steps", "3",
        "--init-from", "EleutherAI/pythia-160m-deduped", "--revision", "step0", "--lr", "1e-3",
    ]))
    assert args == {"preset": "tiny", "dataset": "sql:select text from documents", "packing": True,
                    "shuffle": False, "betas": [0.9, 0.99], "eval_batches": None, "steps": 3,
                    "init_from": "EleutherAI/pythia-160m-deduped", "revision": "step0", "lr": 1e-3}
    help_text = build_parser().format_help()
    for field in TrainConfig.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in help_text
