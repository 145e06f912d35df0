"""top_trigrams: the decoded prefixes plus one `p_<model>` column per model in the ngram_models var."""

from python_udfs.ngrams.probabilities import add_model_probabilities, parse_models
from python_udfs.settings import none_if_blank


def model(dbt, session):
    dbt.config(materialized="table")
    table = dbt.ref("int_top_trigrams_decoded").arrow().read_all()
    return add_model_probabilities(
        table, ["id0", "id1"], "id2", parse_models(dbt.config.get("ngram_models")),
        batch_size=int(dbt.config.get("ngram_model_batch_size")),
        device=none_if_blank(dbt.config.get("ngram_model_device")),
    )
