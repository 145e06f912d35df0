-- A document is sampled at most once per variant (grain variant, doc_id).
select variant, doc_id, count(*) as n
from {{ ref('minipile_variant_documents') }}
group by variant, doc_id
having count(*) > 1
