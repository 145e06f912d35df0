"""top_bigrams: bigram prefixes whose most common completion has over top_frac_max of the mass,
decoded as the catalog shows them, plus one `p_<model>` column per model in the ngram_models var.

The decoding happens here, in the mart, so that no intermediate model reads a mart.
"""

from python_udfs.ngrams.probabilities import add_model_probabilities, parse_models
from python_udfs.settings import none_if_blank


def model(dbt, session):
    min_frac = float(dbt.config.get("top_frac_max"))
    vocab = dbt.ref("neox_vocab")
    top = dbt.ref("bigram_prefixes").filter(f"frac_max > {min_frac!r}")
    for i in range(2):  # each id decoded alone (neox_vocab.token)
        top = top.join(vocab.select(f"id as id{i}, token as token{i}").set_alias(f"v{i}"), f"id{i}")
    table = top.select(
        "id0, id1, sum_count, max_count, frac_max, token0, token1, token0 || token1 as seq"
    ).order("sum_count desc, id0").arrow().read_all()
    return add_model_probabilities(
        table, ["id0"], "id1", parse_models(dbt.config.get("ngram_models")),
        batch_size=int(dbt.config.get("ngram_model_batch_size")),
        device=none_if_blank(dbt.config.get("ngram_model_device")),
    )
