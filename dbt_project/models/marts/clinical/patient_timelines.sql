-- The longitudinal record: every dated event of every patient, numbered in time order.
with

events as (
    select * from {{ ref('int_patient_events_unioned') }}
),

final as (
    select
        patient_key,
        event_at,
        event_type,
        event_source_id,
        code_system,
        code,
        display,
        event_type || ':' || event_source_id as event_id,
        cast(row_number() over (
            partition by patient_key order by event_at, event_type, event_source_id
        ) as integer) as event_sequence
    from events
)

select * from final
