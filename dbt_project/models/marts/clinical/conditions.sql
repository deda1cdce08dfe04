with

conditions as (
    select * from {{ ref('stg_fhir__conditions') }}
),

final as (
    select
        condition_id,
        patient_key,
        encounter_id,
        snomed_code,
        code_display,
        clinical_status,
        verification_status,
        onset_type,
        onset_at,
        onset_precision,
        onset_age_value,
        onset_age_unit,
        abated_at,
        abated_at_precision,
        recorded_date,
        coalesce(clinical_status in ('active', 'recurrence', 'relapse'), false) as is_active
    from conditions
)

select * from final
