with

procedures as (
    select * from {{ ref('stg_fhir__procedures') }}
),

final as (
    select
        procedure_id,
        patient_key,
        encounter_id,
        status,
        snomed_code,
        code_display,
        performed_started_at,
        performed_ended_at
    from procedures
)

select * from final
