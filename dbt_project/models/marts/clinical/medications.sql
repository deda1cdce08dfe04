with

medication_requests as (
    select * from {{ ref('stg_fhir__medication_requests') }}
),

final as (
    select
        medication_request_id,
        patient_key,
        encounter_id,
        status,
        intent,
        rxnorm_code,
        medication_display,
        authored_at,
        reason_condition_id
    from medication_requests
)

select * from final
