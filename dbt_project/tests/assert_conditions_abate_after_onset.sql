-- A condition never abates before its onset, when both are known to the day or better.
select
    condition_id,
    onset_at,
    abated_at
from {{ ref('conditions') }}
where
    abated_at < onset_at
    and onset_precision in ('day', 'time')
    and abated_at_precision in ('day', 'time')
