with

encounters as (
    select * from {{ ref('stg_fhir__encounters') }}
),

final as (
    select
        encounter_id,
        patient_key,
        status,
        class_code,
        type_snomed_code,
        type_display,
        reason_snomed_code,
        started_at,
        ended_at,
        cast(date_diff('minute', started_at, ended_at) as integer) as length_minutes,
        service_provider_organization_id,
        practitioner_id,
        location_id
    from encounters
)

select * from final
