-- An encounter never ends before it starts.
select
    encounter_id,
    started_at,
    ended_at
from {{ ref('encounters') }}
where ended_at < started_at
